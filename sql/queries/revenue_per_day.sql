-- Revenue per day: the last 14 days with sales, per currency, with orders,
-- units and average order value.
SELECT r.date, r.currency, r.orders, r.units,
       round(r.revenue_cents / 100.0, 2) AS revenue,
       round(r.revenue_cents / 100.0 / r.orders, 2) AS avg_order
FROM storefront_dw.daily_revenue r
WHERE r.date > (SELECT max(date) FROM storefront_dw.daily_revenue) - 14
ORDER BY r.date, r.currency;
