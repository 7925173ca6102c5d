-- Demo data, generated inside the database: realistic and deterministic.
--
-- seed_demo_data(scale) writes, for scale 1:
--   * a 3-level category tree (8 x 6 x 5 = 240 leaf categories),
--   * 5,000 products with 2 variants each = 10,000 SKUs, prices $5-$500,
--   * 100,000 customers (accounts locked: no password, see below),
--   * ~400,000 orders with ~1,050,000 lines over the 365 days before
--     `anchor`, with skewed product popularity (rank ~ N * u^3: the top 1% of
--     SKUs take ~20% of lines), repeat customers, a weekly rhythm (weekends
--     busier), a seasonal one (peak in late November / December) and a daily
--     one (quiet around 05:00, busy around 17:00);
--   * order fates: ~4% cancelled, ~3% failed payment, ~1.5% expired holds, the
--     rest paid, and shipped / delivered when enough time has passed; orders
--     in the last hour before `anchor` are still pending with live holds;
--   * for every order: lines with price snapshots, reservations, payments,
--     status history and outbox rows exactly as the API would have written
--     them, and inventory whose levels and ledger agree (check_invariants()
--     passes on the result);
--   * ~4.7M events (page views, carts, checkouts) in daily partitions: the
--     sessions behind every order and as many that bought nothing.
-- Randomness comes from hashint8extended() of row numbers, so the same scale
-- and anchor give the same data. Scale n multiplies every count by n.
--
-- Seeded customers have a locked password ('!seed'); one demo account,
-- demo@storefront.test with password 'storefront-demo', can sign in.

-- A deterministic uniform number in [0, 1) for (key, salt).
CREATE FUNCTION seed_u(k bigint, salt integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
RETURN ((pg_catalog.hashint8extended(k, salt::bigint) >> 11) & 9007199254740991)::double precision
       / 9007199254740992.0::double precision;

CREATE FUNCTION seed_demo_data(scale integer DEFAULT 1, anchor date DEFAULT current_date)
RETURNS TABLE (entity text, rows bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    t0          timestamptz := clock_timestamp();
    n_customers integer;
    n_skus      integer;
    n_products  integer;
    n_orders    integer;
    v_end       timestamptz;
    v_start     timestamptz;
    v_main      integer;
    v_east      integer;
    v_cust_base bigint;
    v_prod_base bigint;
    v_sku_base  bigint;
    v_ord_base  bigint;
    top_names   text[] := ARRAY['Apparel', 'Electronics', 'Home & Kitchen', 'Sports & Outdoors',
                                'Books', 'Beauty', 'Toys & Games', 'Grocery'];
    mid_names   text[] := ARRAY['Essentials', 'Premium', 'Outdoor', 'Kids', 'Classic', 'Eco'];
    leaf_names  text[] := ARRAY['Basics', 'Deluxe', 'Compact', 'Pro', 'Travel'];
    nouns       text[] := ARRAY[
        'T-Shirt', 'Hoodie', 'Jacket', 'Sneakers', 'Scarf', 'Jeans',
        'Headphones', 'Charger', 'Speaker', 'Keyboard', 'Webcam', 'Monitor',
        'Kettle', 'Skillet', 'Blender', 'Lamp', 'Towel Set', 'Mug',
        'Yoga Mat', 'Tent', 'Water Bottle', 'Backpack', 'Bike Light', 'Dumbbell',
        'Novel', 'Cookbook', 'Atlas', 'Notebook', 'Comic', 'Guide',
        'Face Cream', 'Shampoo', 'Lip Balm', 'Perfume', 'Soap', 'Serum',
        'Puzzle', 'Board Game', 'Plush Bear', 'Kite', 'Blocks', 'Card Game',
        'Coffee Beans', 'Green Tea', 'Olive Oil', 'Granola', 'Honey', 'Chocolate'];
    adjectives  text[] := ARRAY['Aurora', 'Nordic', 'Urban', 'Coastal', 'Alpine', 'Velvet',
                                'Summit', 'Harbor', 'Cedar', 'Ember', 'Lunar', 'Meadow',
                                'Pioneer', 'Quartz', 'Solstice', 'Tidal'];
    first_names text[] := ARRAY['Ada', 'Ben', 'Chloe', 'Dev', 'Elena', 'Farid', 'Grace', 'Hiro',
                                'Ines', 'Jonas', 'Kemi', 'Liam', 'Maya', 'Noor', 'Omar', 'Priya',
                                'Quinn', 'Rosa', 'Sven', 'Tara', 'Uma', 'Viktor', 'Wen', 'Yusuf'];
    last_names  text[] := ARRAY['Andersen', 'Bauer', 'Costa', 'Dubois', 'Eze', 'Fischer', 'Garcia',
                                'Haddad', 'Ito', 'Jensen', 'Kowalski', 'Lopez', 'Moreau', 'Nakamura',
                                'Okafor', 'Petrov', 'Rossi', 'Silva', 'Tanaka', 'Varga', 'Wong', 'Zhang'];
BEGIN
    IF scale IS NULL OR scale < 1 OR scale > 100 THEN
        RAISE EXCEPTION 'scale must be between 1 and 100'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The scale given was %s.', coalesce(scale::text, 'NULL'));
    END IF;
    IF anchor IS NULL THEN
        RAISE EXCEPTION 'anchor must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- one seeding at a time, and nobody else writing the catalog meanwhile
    LOCK TABLE category, product, sku, customer, inventory, orders IN EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM sku WHERE code LIKE 'SF-%') THEN
        RAISE EXCEPTION 'demo data is already loaded'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'SKUs with codes starting "SF-" exist.',
                  HINT = 'Seed an empty database, or drop and re-create the extension first.';
    END IF;

    n_customers := 100000 * scale;
    n_skus      := 10000 * scale;
    n_products  := n_skus / 2;
    n_orders    := 400000 * scale;
    v_end       := anchor::timestamptz;
    v_start     := v_end - interval '365 days';

    -- ------------------------------------------------------------ catalog --
    INSERT INTO location (code, name) VALUES ('east', 'East coast warehouse')
    ON CONFLICT (code) DO NOTHING;
    SELECT location_id INTO v_main FROM location WHERE code = 'main';
    SELECT location_id INTO v_east FROM location WHERE code = 'east';

    CREATE TEMP TABLE _seed_leaf (leaf integer, category_id bigint, top integer) ON COMMIT DROP;
    INSERT INTO category (parent_id, name, slug)
    SELECT NULL, t.name, regexp_replace(lower(t.name), '[^a-z0-9]+', '-', 'g')
    FROM unnest(top_names) AS t(name)
    ON CONFLICT DO NOTHING;
    INSERT INTO category (parent_id, name, slug)
    SELECT p.category_id, m.name, p.slug || '/' || lower(m.name)
    FROM unnest(top_names) AS t(name)
    JOIN category p ON p.parent_id IS NULL AND p.name = t.name
    CROSS JOIN unnest(mid_names) AS m(name)
    ON CONFLICT DO NOTHING;
    INSERT INTO category (parent_id, name, slug)
    SELECT p.category_id, l.name, p.slug || '/' || lower(l.name)
    FROM category p
    JOIN category g ON g.category_id = p.parent_id AND g.parent_id IS NULL AND g.name = ANY (top_names)
    CROSS JOIN unnest(leaf_names) AS l(name)
    WHERE p.name = ANY (mid_names)
    ON CONFLICT DO NOTHING;
    INSERT INTO _seed_leaf
    SELECT (row_number() OVER (ORDER BY array_position(top_names, g.name), array_position(mid_names, p.name),
                                        array_position(leaf_names, c.name)) - 1)::integer,
           c.category_id, array_position(top_names, g.name) - 1
    FROM category c
    JOIN category p ON p.category_id = c.parent_id
    JOIN category g ON g.category_id = p.parent_id AND g.parent_id IS NULL
    WHERE g.name = ANY (top_names) AND p.name = ANY (mid_names) AND c.name = ANY (leaf_names);
    RAISE NOTICE 'seed_demo_data: % leaf categories (%)', (SELECT count(*) FROM _seed_leaf), clock_timestamp() - t0;

    v_prod_base := nextval(pg_get_serial_sequence('storefront.product', 'product_id')) - 1;
    INSERT INTO product (product_id, category_id, name, description, created_at)
    OVERRIDING SYSTEM VALUE
    SELECT v_prod_base + 1 + p, l.category_id,
           adjectives[1 + (p % array_length(adjectives, 1))] || ' ' || nouns[1 + l.top * 6 + (p / 240) % 6]
               || ' ' || (1000 + p),
           'Demo product ' || (p + 1) || '.',
           v_start - interval '30 days'
    FROM generate_series(0, n_products - 1) AS p
    JOIN _seed_leaf l ON l.leaf = p % 240;
    PERFORM setval(pg_get_serial_sequence('storefront.product', 'product_id'), v_prod_base + n_products);

    -- SKU i is variant i % 2 of product i / 2
    v_sku_base := nextval(pg_get_serial_sequence('storefront.sku', 'sku_id')) - 1;
    INSERT INTO sku (sku_id, product_id, code, price_cents, currency, attributes, created_at, updated_at)
    OVERRIDING SYSTEM VALUE
    SELECT v_sku_base + 1 + s, v_prod_base + 1 + s / 2,
           'SF-' || lpad((s + 1)::text, 7, '0'),
           -- $5 to $500, log-uniform, ending in .99 (shared by both variants)
           (floor(500.0 * power(100.0, seed_u(s / 2, 1)) / 100.0) * 100 + 99)::bigint,
           'USD',
           CASE WHEN s % 2 = 0 THEN '{"variant": "standard"}' ELSE '{"variant": "large"}' END::jsonb
               || jsonb_build_object('color', (ARRAY['black', 'white', 'blue', 'red', 'green'])[1 + (s / 2) % 5]),
           v_start - interval '30 days', v_start - interval '30 days'
    FROM generate_series(0, n_skus - 1) AS s;
    PERFORM setval(pg_get_serial_sequence('storefront.sku', 'sku_id'), v_sku_base + n_skus);
    RAISE NOTICE 'seed_demo_data: % products, % SKUs (%)', n_products, n_skus, clock_timestamp() - t0;

    -- ---------------------------------------------------------- customers --
    v_cust_base := nextval(pg_get_serial_sequence('storefront.customer', 'customer_id')) - 1;
    INSERT INTO customer (customer_id, email, password_hash, full_name, created_at, region, updated_at)
    OVERRIDING SYSTEM VALUE
    SELECT v_cust_base + 1 + c,
           'customer' || (c + 1) || '@demo.storefront.test',
           '!seed',
           first_names[1 + (hashint4(c) & 1023) % array_length(first_names, 1)] || ' '
               || last_names[1 + (hashint4(c + 7) & 1023) % array_length(last_names, 1)],
           v_start - interval '30 days' + seed_u(c, 2) * interval '30 days',
           -- regions of unequal size: Europe and North America the largest
           (ARRAY['Europe', 'Europe', 'Europe', 'North America', 'North America', 'Asia Pacific',
                  'Asia Pacific', 'Latin America', 'Africa', 'Middle East'])[1 + floor(seed_u(c, 3) * 10)::int],
           v_start - interval '30 days' + seed_u(c, 2) * interval '30 days'
    FROM generate_series(0, n_customers - 1) AS c;
    PERFORM setval(pg_get_serial_sequence('storefront.customer', 'customer_id'), v_cust_base + n_customers);
    PERFORM register_customer('demo@storefront.test', 'storefront-demo', 'Demo Customer');
    RAISE NOTICE 'seed_demo_data: % customers (%)', n_customers + 1, clock_timestamp() - t0;

    -- ------------------------------------------------------------- orders --
    -- Orders per day follow weekday and season; time of day follows
    -- t = u + 0.07 (sin(2 pi (u - 0.12)) + sin(2 pi 0.12)), which maps [0, 1)
    -- onto [0, 1) with the fewest orders around 05:00 and the most around 17:00.
    CREATE TEMP TABLE _seed_order ON COMMIT DROP AS
    WITH days AS (
        SELECT d,
               (ARRAY[1.0, 0.95, 0.95, 1.0, 1.1, 1.25, 1.3])[extract(isodow FROM v_start + d * interval '1 day')::int]
               * (1.0 + 0.35 * cos(2 * pi() * (extract(doy FROM v_start + d * interval '1 day') - 345) / 365.0))
               * CASE WHEN extract(month FROM v_start + d * interval '1 day') = 11
                           AND extract(day FROM v_start + d * interval '1 day') BETWEEN 24 AND 30
                      THEN 1.8 ELSE 1.0 END AS w
        FROM generate_series(0, 364) AS d
    ), per_day AS (
        SELECT d, round(n_orders * w / sum(w) OVER ())::integer AS n FROM days
    ), o AS (
        SELECT (row_number() OVER (ORDER BY d, k) - 1) AS o, d, k FROM per_day, generate_series(1, n) AS k
    )
    SELECT o.o,
           v_cust_base + 1 + floor(n_customers * power(seed_u(o.o, 10), 2))::bigint AS customer_id,
           v_start + o.d * interval '1 day'
               + (seed_u(o.o, 11) + 0.07 * (sin(2 * pi() * (seed_u(o.o, 11) - 0.12)) + sin(2 * pi() * 0.12)))
                 * interval '1 day'
               AS placed_at,
           seed_u(o.o, 12) AS fate_u,
           seed_u(o.o, 13) AS time_u,
           (1 + CASE WHEN seed_u(o.o, 14) < 0.30 THEN 0 WHEN seed_u(o.o, 14) < 0.55 THEN 1
                     WHEN seed_u(o.o, 14) < 0.73 THEN 2 WHEN seed_u(o.o, 14) < 0.85 THEN 3
                     WHEN seed_u(o.o, 14) < 0.93 THEN 4 ELSE 5 END) AS n_lines
    FROM o;

    -- Lines: each picks a SKU by popularity rank (rank = N u^3, scattered
    -- over the catalog by a multiplicative permutation); a SKU picked twice
    -- in one order becomes one line (place_order merges repeats the same way).
    CREATE TEMP TABLE _seed_line ON COMMIT DROP AS
    SELECT o, (row_number() OVER (PARTITION BY o ORDER BY first_j))::integer AS line_no, sku_idx, qty
    FROM (
        SELECT so.o, x.sku_idx, min(j) AS first_j,
               sum(CASE WHEN seed_u(so.o * 8 + j, 21) < 0.75 THEN 1
                        WHEN seed_u(so.o * 8 + j, 21) < 0.92 THEN 2
                        ELSE 3 + floor(seed_u(so.o * 8 + j, 22) * 3) END)::integer AS qty
        FROM _seed_order so
        CROSS JOIN generate_series(1, so.n_lines) AS j
        CROSS JOIN LATERAL (
            SELECT ((floor(n_skus * power(seed_u(so.o * 8 + j, 20), 3))::bigint * 7919) % n_skus)::integer AS sku_idx
        ) x
        GROUP BY so.o, x.sku_idx
    ) l;
    RAISE NOTICE 'seed_demo_data: planned % orders, % lines (%)',
        (SELECT count(*) FROM _seed_order), (SELECT count(*) FROM _seed_line), clock_timestamp() - t0;

    -- Fates and timestamps. Orders in the last hour are still pending.
    v_ord_base := nextval(pg_get_serial_sequence('storefront.orders', 'order_id')) - 1;
    CREATE TEMP TABLE _seed_fate ON COMMIT DROP AS
    SELECT so.o, v_ord_base + 1 + so.o AS order_id, so.customer_id, so.placed_at,
           t.total_cents, f.fate,
           so.placed_at + interval '15 minutes' AS expires_at,
           CASE f.fate
               WHEN 'cancelled'      THEN so.placed_at + (5 + so.time_u * 55) * interval '1 minute'
               WHEN 'payment_failed' THEN so.placed_at + (2 + so.time_u * 8) * interval '1 minute'
               WHEN 'expired'        THEN so.placed_at + (16 + so.time_u * 4) * interval '1 minute'
               WHEN 'ok'             THEN so.placed_at + (1 + so.time_u * 9) * interval '1 minute'
           END AS first_at
    FROM _seed_order so
    JOIN (SELECT l.o, sum(l.qty * s.price_cents)::bigint AS total_cents
          FROM _seed_line l JOIN sku s ON s.sku_id = v_sku_base + 1 + l.sku_idx
          GROUP BY l.o) t ON t.o = so.o
    CROSS JOIN LATERAL (
        SELECT CASE WHEN so.placed_at > v_end - interval '1 hour' THEN 'pending'
                    WHEN so.fate_u < 0.040 THEN 'cancelled'
                    WHEN so.fate_u < 0.070 THEN 'payment_failed'
                    WHEN so.fate_u < 0.085 THEN 'expired'
                    ELSE 'ok' END AS fate
    ) f;
    -- paid orders ship 1-3 days later and arrive 1-5 days after that, if
    -- that is before the anchor
    ALTER TABLE _seed_fate ADD COLUMN shipped_at timestamptz, ADD COLUMN delivered_at timestamptz;
    UPDATE _seed_fate
    SET shipped_at = first_at + (1 + 2 * seed_u(o, 30)) * interval '1 day'
    WHERE fate = 'ok';
    UPDATE _seed_fate
    SET delivered_at = shipped_at + (1 + 4 * seed_u(o, 31)) * interval '1 day'
    WHERE fate = 'ok';
    UPDATE _seed_fate SET delivered_at = NULL WHERE delivered_at > v_end;
    UPDATE _seed_fate SET shipped_at = NULL, delivered_at = NULL WHERE shipped_at > v_end;

    INSERT INTO orders (customer_id, order_id, status, currency, total_cents, placed_at, updated_at)
    OVERRIDING SYSTEM VALUE
    SELECT customer_id, order_id,
           CASE WHEN fate = 'ok' THEN
                    CASE WHEN delivered_at IS NOT NULL THEN 'delivered'
                         WHEN shipped_at IS NOT NULL THEN 'shipped' ELSE 'paid' END
                ELSE fate END,
           'USD', total_cents, placed_at,
           coalesce(delivered_at, shipped_at, first_at, placed_at)
    FROM _seed_fate
    ORDER BY order_id;
    PERFORM setval(pg_get_serial_sequence('storefront.orders', 'order_id'), (SELECT max(order_id) FROM _seed_fate));
    RAISE NOTICE 'seed_demo_data: orders written (%)', clock_timestamp() - t0;

    INSERT INTO order_line (customer_id, order_id, line_no, sku_id, qty, unit_price_cents)
    SELECT f.customer_id, f.order_id, l.line_no, s.sku_id, l.qty, s.price_cents
    FROM _seed_line l
    JOIN _seed_fate f ON f.o = l.o
    JOIN sku s ON s.sku_id = v_sku_base + 1 + l.sku_idx
    ORDER BY f.customer_id, f.order_id, l.line_no;
    RAISE NOTICE 'seed_demo_data: order lines written (%)', clock_timestamp() - t0;

    INSERT INTO reservation (customer_id, order_id, line_no, location_id, qty, state, expires_at, created_at, ended_at)
    SELECT f.customer_id, f.order_id, l.line_no, v_main, l.qty,
           CASE f.fate WHEN 'ok' THEN 'consumed' WHEN 'expired' THEN 'expired'
                       WHEN 'pending' THEN 'held' ELSE 'released' END,
           f.expires_at, f.placed_at,
           CASE WHEN f.fate = 'pending' THEN NULL ELSE f.first_at END
    FROM _seed_line l
    JOIN _seed_fate f ON f.o = l.o
    ORDER BY f.customer_id, f.order_id, l.line_no;
    RAISE NOTICE 'seed_demo_data: reservations written (%)', clock_timestamp() - t0;

    INSERT INTO payment (customer_id, order_id, provider_ref, amount_cents, succeeded, outcome, created_at)
    SELECT customer_id, order_id, 'seed-' || order_id, total_cents, fate = 'ok',
           CASE WHEN fate = 'ok' THEN 'paid' ELSE 'payment_failed' END, first_at
    FROM _seed_fate
    WHERE fate IN ('ok', 'payment_failed')
    ORDER BY customer_id, order_id;

    -- status history and the outbox rows announcing each change
    CREATE TEMP TABLE _seed_history ON COMMIT DROP AS
    SELECT customer_id, order_id, seq, status, at,
           lag(status) OVER (PARTITION BY order_id ORDER BY seq) AS previous
    FROM (
        SELECT customer_id, order_id, 1 AS seq, 'pending' AS status, placed_at AS at FROM _seed_fate
        UNION ALL
        SELECT customer_id, order_id, 2, CASE WHEN fate = 'ok' THEN 'paid' ELSE fate END, first_at
        FROM _seed_fate WHERE fate <> 'pending'
        UNION ALL
        SELECT customer_id, order_id, 3, 'shipped', shipped_at FROM _seed_fate WHERE shipped_at IS NOT NULL
        UNION ALL
        SELECT customer_id, order_id, 4, 'delivered', delivered_at FROM _seed_fate WHERE delivered_at IS NOT NULL
    ) h;
    INSERT INTO order_status_history (customer_id, order_id, seq, status, at, detail)
    SELECT customer_id, order_id, seq, status, at,
           CASE WHEN status = 'pending' THEN '{"source": "seed"}'::jsonb
                ELSE jsonb_build_object('source', 'seed', 'from', previous) END
    FROM _seed_history
    ORDER BY customer_id, order_id, seq;
    INSERT INTO outbox (customer_id, id, aggregatetype, aggregateid, type, payload, created_at)
    SELECT customer_id,
           -- deterministic ids for seeded events (version-4 shaped)
           (lpad(to_hex(hashint8extended(order_id, seq)), 16, '0')
            || lpad(to_hex(hashint8extended(order_id, seq + 1000)), 16, '0'))::uuid,
           'order', order_id::text, 'order.' || status,
           jsonb_build_object('order_id', order_id, 'customer_id', customer_id, 'seq', seq,
                              'status', status, 'previous', previous, 'at', at),
           at
    FROM _seed_history
    ORDER BY customer_id, order_id, seq;
    RAISE NOTICE 'seed_demo_data: payments, history and outbox written (%)', clock_timestamp() - t0;

    -- ---------------------------------------------------------- inventory --
    -- What was bought, sold and is held explains every level exactly:
    -- restocked = sold + held + left on the shelf (0 for 5% of SKUs).
    CREATE TEMP TABLE _seed_stock ON COMMIT DROP AS
    SELECT s.s, v_sku_base + 1 + s.s AS sku_id,
           coalesce(u.sold, 0) AS sold, coalesce(u.held, 0) AS held,
           CASE WHEN seed_u(s.s, 40) < 0.05 THEN 0 ELSE 5 + floor(seed_u(s.s, 41) * 300)::integer END AS shelf
    FROM generate_series(0, n_skus - 1) AS s(s)
    LEFT JOIN (
        SELECT l.sku_idx,
               sum(l.qty) FILTER (WHERE f.fate = 'ok')::integer AS sold,
               sum(l.qty) FILTER (WHERE f.fate = 'pending')::integer AS held
        FROM _seed_line l JOIN _seed_fate f ON f.o = l.o
        GROUP BY l.sku_idx
    ) u ON u.sku_idx = s.s;

    INSERT INTO inventory (sku_id, location_id, on_hand, reserved, updated_at)
    SELECT sku_id, v_main, held + shelf, held, v_end FROM _seed_stock
    UNION ALL
    SELECT sku_id, v_east, 20 + s % 50, 0, v_end FROM _seed_stock WHERE s % 5 = 0
    ORDER BY 1, 2;
    -- two deliveries per SKU at main: before the year and mid-year
    INSERT INTO stock_movement (sku_id, location_id, qty, reason, at)
    SELECT sku_id, v_main, q, 'restock', at
    FROM _seed_stock
    CROSS JOIN LATERAL (VALUES
        (sold + held + shelf - (sold + held + shelf) / 3, v_start - interval '10 days'),
        ((sold + held + shelf) / 3, v_start + interval '182 days')) AS d(q, at)
    WHERE q > 0
    UNION ALL
    SELECT sku_id, v_east, 20 + s % 50, 'restock', v_start - interval '10 days' FROM _seed_stock WHERE s % 5 = 0;
    RAISE NOTICE 'seed_demo_data: inventory written (%)', clock_timestamp() - t0;

    -- ------------------------------------------------------------- events --
    -- Sessions that led to an order: 3-10 page views in the half hour before
    -- it, 1-2 add_to_cart, one checkout_started; and as many sessions again
    -- that did not buy: 1-4 views, a cart 30% of the time.
    PERFORM ensure_event_partitions(interval '2 days', (v_end - v_start) + interval '2 days', v_end);
    INSERT INTO event (at, kind, customer_id, props)
    SELECT f.placed_at - seed_u(f.o * 16 + k, 50) * interval '30 minutes', 'page_view', f.customer_id,
           jsonb_build_object('path', '/product/' || (1 + floor(seed_u(f.o * 16 + k, 52) * n_products))::int)
    FROM _seed_fate f CROSS JOIN LATERAL generate_series(1, 3 + floor(seed_u(f.o, 51) * 8)::int) AS k
    UNION ALL
    SELECT f.placed_at - seed_u(f.o * 4 + k, 53) * interval '10 minutes', 'add_to_cart', f.customer_id, '{}'
    FROM _seed_fate f CROSS JOIN LATERAL generate_series(1, 1 + (seed_u(f.o, 54) < 0.5)::int) AS k
    UNION ALL
    SELECT f.placed_at - interval '1 minute', 'checkout_started', f.customer_id, '{}'
    FROM _seed_fate f
    UNION ALL
    SELECT so.placed_at + (seed_u(so.o, 55) - 0.5) * interval '6 hours', 'page_view', NULL,
           jsonb_build_object('path', '/product/' || (1 + floor(seed_u(so.o * 8 + k, 56) * n_products))::int)
    FROM _seed_order so CROSS JOIN LATERAL generate_series(1, 1 + floor(seed_u(so.o, 57) * 4)::int) AS k
    WHERE so.placed_at + (seed_u(so.o, 55) - 0.5) * interval '6 hours' < v_end
    UNION ALL
    SELECT so.placed_at + (seed_u(so.o, 55) - 0.5) * interval '6 hours' + interval '2 minutes', 'add_to_cart', NULL, '{}'
    FROM _seed_order so
    WHERE seed_u(so.o, 58) < 0.3 AND so.placed_at + (seed_u(so.o, 55) - 0.5) * interval '6 hours' < v_end;
    RAISE NOTICE 'seed_demo_data: events written (%)', clock_timestamp() - t0;

    RETURN QUERY
    SELECT x.entity, x.rows FROM (VALUES
        ('categories', (SELECT count(*) FROM category)),
        ('products', (SELECT count(*) FROM product)),
        ('skus', (SELECT count(*) FROM sku)),
        ('customers', (SELECT count(*) FROM customer)),
        ('orders', (SELECT count(*) FROM orders)),
        ('order lines', (SELECT count(*) FROM order_line)),
        ('reservations', (SELECT count(*) FROM reservation)),
        ('payments', (SELECT count(*) FROM payment)),
        ('status changes', (SELECT count(*) FROM order_status_history)),
        ('outbox events', (SELECT count(*) FROM outbox)),
        ('events', (SELECT count(*) FROM event))
    ) AS x(entity, rows);
    RAISE NOTICE 'seed_demo_data: done in %', clock_timestamp() - t0;
END
$$;
