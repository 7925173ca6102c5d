-- title: Warehouse: one month's revenue by category
-- why: Filtering on dim_date's columns (year, month) hides the date range from the fact table: the planner joins every fact row to dim_date before it can drop the other months. Naming the range of date_key values instead lets the fact table's date_key index (or a bitmap scan of it) read only that month.
-- query
SELECT p.top_category, sum(f.amount_cents) AS revenue_cents
FROM storefront_dw.fact_order_line f
JOIN storefront_dw.dim_date d ON d.date_key = f.date_key
JOIN storefront_dw.dim_product p ON p.product_key = f.product_key
WHERE d.year = 2026 AND d.month = 10 AND f.order_status IN ('paid', 'shipped', 'delivered')
GROUP BY p.top_category ORDER BY 2 DESC;
-- rewrite
SELECT p.top_category, sum(f.amount_cents) AS revenue_cents
FROM storefront_dw.fact_order_line f
JOIN storefront_dw.dim_product p ON p.product_key = f.product_key
WHERE f.date_key BETWEEN 20261001 AND 20261031 AND f.order_status IN ('paid', 'shipped', 'delivered')
GROUP BY p.top_category ORDER BY 2 DESC;
