-- Monthly retention cohorts: customers by the month of their first paid
-- order, and the share of each cohort that ordered again 1, 2 and 3
-- months later (the last six cohorts that can be followed that far).
WITH orders AS (
    SELECT DISTINCT f.customer_id, date_trunc('month', f.ordered_at AT TIME ZONE 'UTC')::date AS month
    FROM storefront_dw.fact_order_line f
    WHERE f.order_status IN ('paid', 'shipped', 'delivered')
), firsts AS (
    SELECT customer_id, min(month) AS cohort FROM orders GROUP BY customer_id
), activity AS (
    SELECT f.cohort, (extract(year FROM age(o.month, f.cohort)) * 12 + extract(month FROM age(o.month, f.cohort)))::int AS k,
           count(*) AS customers
    FROM firsts f JOIN orders o ON o.customer_id = f.customer_id
    GROUP BY 1, 2
)
SELECT a0.cohort, a0.customers AS size,
       round(100.0 * coalesce(a1.customers, 0) / a0.customers, 1) AS "month 1 %",
       round(100.0 * coalesce(a2.customers, 0) / a0.customers, 1) AS "month 2 %",
       round(100.0 * coalesce(a3.customers, 0) / a0.customers, 1) AS "month 3 %"
FROM activity a0
LEFT JOIN activity a1 ON a1.cohort = a0.cohort AND a1.k = 1
LEFT JOIN activity a2 ON a2.cohort = a0.cohort AND a2.k = 2
LEFT JOIN activity a3 ON a3.cohort = a0.cohort AND a3.k = 3
WHERE a0.k = 0
  AND a0.cohort <= (SELECT max(month) FROM orders) - interval '3 months'
ORDER BY a0.cohort DESC
LIMIT 6;
