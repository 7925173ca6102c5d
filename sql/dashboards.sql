-- Saved dashboard queries in Grafana's time-series shape: a `time` column,
-- value columns, and an optional `metric` column naming the series. Every
-- bucket of the range is present (gaps are zeros), so charts do not draw
-- lines across missing buckets. In Grafana:
--   SELECT * FROM storefront.dashboard_page_views($__timeFrom(), $__timeTo())

CREATE FUNCTION dashboard_page_views(from_time timestamptz, to_time timestamptz,
                                     bucket_width interval DEFAULT '1 hour')
RETURNS TABLE ("time" timestamptz, page_views bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
BEGIN ATOMIC
    SELECT s.b, coalesce(v.n, 0)
    FROM time_bucket_series(bucket_width, from_time, to_time) AS s(b)
    LEFT JOIN (SELECT time_bucket(bucket_width, e.at) AS b, count(*) AS n
               FROM event e
               WHERE e.kind = 'page_view' AND e.at >= time_bucket(bucket_width, from_time) AND e.at < to_time
               GROUP BY 1) v ON v.b = s.b
    ORDER BY 1;
END;

CREATE FUNCTION dashboard_orders(from_time timestamptz, to_time timestamptz,
                                 bucket_width interval DEFAULT '1 minute')
RETURNS TABLE ("time" timestamptz, orders bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
BEGIN ATOMIC
    SELECT s.b, coalesce(o.n, 0)
    FROM time_bucket_series(bucket_width, from_time, to_time) AS s(b)
    LEFT JOIN (SELECT time_bucket(bucket_width, o.placed_at) AS b, count(*) AS n
               FROM orders o
               WHERE o.placed_at >= time_bucket(bucket_width, from_time) AND o.placed_at < to_time
               GROUP BY 1) o ON o.b = s.b
    ORDER BY 1;
END;

-- Revenue of paid (and later shipped, delivered) orders, per currency.
CREATE FUNCTION dashboard_revenue(from_time timestamptz, to_time timestamptz,
                                  bucket_width interval DEFAULT '1 hour')
RETURNS TABLE ("time" timestamptz, revenue numeric, metric text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
BEGIN ATOMIC
    SELECT s.b, round(coalesce(r.cents, 0) / 100.0, 2), c.currency::text
    FROM time_bucket_series(bucket_width, from_time, to_time) AS s(b)
    CROSS JOIN (SELECT DISTINCT o.currency FROM orders o
                WHERE o.placed_at >= from_time AND o.placed_at < to_time) c
    LEFT JOIN (SELECT time_bucket(bucket_width, o.placed_at) AS b, o.currency, sum(o.total_cents) AS cents
               FROM orders o
               WHERE o.status IN ('paid', 'shipped', 'delivered')
                 AND o.placed_at >= time_bucket(bucket_width, from_time) AND o.placed_at < to_time
               GROUP BY 1, 2) r ON r.b = s.b AND r.currency = c.currency
    ORDER BY 1, 3;
END;

-- The daily funnel: page views -> add to cart -> orders, and the step
-- conversion rates (percent). Days are UTC days.
CREATE FUNCTION dashboard_funnel(from_time timestamptz, to_time timestamptz)
RETURNS TABLE ("time" timestamptz, views bigint, carts bigint, orders bigint,
               view_to_cart_pct numeric, cart_to_order_pct numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
BEGIN ATOMIC
    SELECT s.b, coalesce(e.views, 0), coalesce(e.carts, 0), coalesce(o.n, 0),
           round(100.0 * coalesce(e.carts, 0) / nullif(e.views, 0), 1),
           round(100.0 * coalesce(o.n, 0) / nullif(e.carts, 0), 1)
    FROM time_bucket_series(interval '1 day', from_time, to_time) AS s(b)
    LEFT JOIN (SELECT time_bucket(interval '1 day', ev.at) AS b,
                      count(*) FILTER (WHERE ev.kind = 'page_view') AS views,
                      count(*) FILTER (WHERE ev.kind = 'add_to_cart') AS carts
               FROM event ev
               WHERE ev.at >= time_bucket(interval '1 day', from_time) AND ev.at < to_time
                 AND ev.kind IN ('page_view', 'add_to_cart')
               GROUP BY 1) e ON e.b = s.b
    LEFT JOIN (SELECT time_bucket(interval '1 day', o.placed_at) AS b, count(*) AS n
               FROM orders o
               WHERE o.placed_at >= time_bucket(interval '1 day', from_time) AND o.placed_at < to_time
               GROUP BY 1) o ON o.b = s.b
    ORDER BY 1;
END;

-- The order pipeline at a glance, for dashboards and monitoring: live
-- holds, events waiting for the relay (and since when), and how far the
-- most lagging rollup's watermark is behind now.
CREATE FUNCTION pipeline_status()
RETURNS TABLE (pending_holds bigint, relay_queue bigint, oldest_queued_at timestamptz, rollup_lag interval)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
BEGIN ATOMIC
    SELECT (SELECT count(*) FROM reservation r WHERE r.state = 'held'),
           (SELECT count(*) FROM order_event_queue),
           (SELECT min(q.queued_at) FROM order_event_queue q),
           (SELECT max(now() - r.watermark) FILTER (WHERE r.watermark > '-infinity') FROM rollup r);
END;
