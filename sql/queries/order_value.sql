-- Average order value and repeat-purchase rate per month: of the customers
-- who bought that month, the share who had bought before.
WITH orders AS (
    SELECT f.customer_id, f.order_id, min(f.ordered_at) AS at, f.currency, sum(f.amount_cents) AS cents
    FROM storefront_dw.fact_order_line f
    WHERE f.order_status IN ('paid', 'shipped', 'delivered')
    GROUP BY f.customer_id, f.order_id, f.currency
), ranked AS (
    SELECT o.*, date_trunc('month', o.at AT TIME ZONE 'UTC')::date AS month,
           row_number() OVER (PARTITION BY o.customer_id ORDER BY o.at, o.order_id) AS nth
    FROM orders o
)
SELECT month, currency, count(*) AS orders,
       round(avg(cents) / 100.0, 2) AS avg_order_value,
       count(DISTINCT customer_id) AS customers,
       round(100.0 * count(DISTINCT customer_id) FILTER (WHERE nth > 1) / count(DISTINCT customer_id), 1)
           AS "repeat customers %"
FROM ranked
GROUP BY month, currency
ORDER BY month DESC, currency
LIMIT 6;
