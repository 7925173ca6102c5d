-- Top products: the ten SKUs with the most revenue over the last three
-- months with sales, named as the catalog names them now.
WITH last AS (SELECT max(month) AS m FROM storefront_dw.monthly_product_sales)
SELECT p.sku_code, p.product_name, p.top_category, s.currency,
       sum(s.units) AS units, round(sum(s.revenue_cents) / 100.0, 2) AS revenue
FROM storefront_dw.monthly_product_sales s
JOIN storefront_dw.dim_product p ON p.sku_id = s.sku_id AND p.is_current
WHERE s.month > (SELECT m FROM last) - interval '3 months'
GROUP BY p.sku_code, p.product_name, p.top_category, s.currency
ORDER BY sum(s.revenue_cents) DESC, p.sku_code
LIMIT 10;
