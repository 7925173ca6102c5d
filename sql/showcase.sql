-- Showcase queries on the demo database (printed by scripts/demo.sh).
\pset footer off
\echo '--- the extension'
\dx storefront

\echo '--- its functions, with the COMMENT ON each carries (\\df+ storefront.* shows them too)'
SELECT p.oid::regprocedure AS function, left(obj_description(p.oid, 'pg_proc'), 90) AS description
FROM pg_proc p WHERE p.pronamespace = 'storefront'::regnamespace ORDER BY 1::text;

\echo '--- how much data the seed wrote'
SELECT (SELECT count(*) FROM storefront.customer) AS customers,
       (SELECT count(*) FROM storefront.sku) AS skus,
       (SELECT count(*) FROM storefront.orders) AS orders,
       (SELECT count(*) FROM storefront.order_line) AS order_lines;

\echo '--- revenue per month (paid, shipped and delivered orders)'
SELECT to_char(date_trunc('month', placed_at), 'YYYY-MM') AS month,
       count(*) AS orders,
       to_char(sum(total_cents) / 100.0, 'FM999,999,990.00') AS revenue_usd
FROM storefront.orders
WHERE status IN ('paid', 'shipped', 'delivered')
GROUP BY 1 ORDER BY 1;

\echo '--- best sellers of the last 30 days'
SELECT s.code, p.name, sum(l.qty) AS units, c.slug AS category
FROM storefront.order_line l
JOIN storefront.orders o USING (customer_id, order_id)
JOIN storefront.sku s ON s.sku_id = l.sku_id
JOIN storefront.product p ON p.product_id = s.product_id
JOIN storefront.category c ON c.category_id = p.category_id
WHERE o.placed_at >= (SELECT max(placed_at) FROM storefront.orders) - interval '30 days'
  AND o.status IN ('paid', 'shipped', 'delivered')
GROUP BY s.code, p.name, c.slug
ORDER BY units DESC LIMIT 10;

\echo '--- stock of the best seller, as a user sees it'
SELECT * FROM storefront.stock((SELECT s.code FROM storefront.order_line l JOIN storefront.sku s USING (sku_id)
                                GROUP BY s.code ORDER BY sum(l.qty) DESC LIMIT 1));

\echo '--- one order''s history'
SELECT h.seq, h.status, h.at FROM storefront.order_status_history h
WHERE h.order_id = (SELECT max(order_id) FROM storefront.orders WHERE status = 'delivered')
ORDER BY h.seq;

\echo '--- every invariant, checked over the live data'
\timing on
SELECT * FROM storefront.check_invariants();
