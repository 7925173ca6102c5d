-- title: Operations: pending orders older than ten minutes
-- why: A support view polls the orders still pending after their hold should have been paid. Pending orders are a sliver of the table (the last hour's), but nothing indexes status, so every poll reads all orders.
-- query
SELECT customer_id, order_id, placed_at, total_cents
FROM storefront.orders
WHERE status = 'pending' AND placed_at < '2026-11-01 00:00+00'::timestamptz - interval '10 minutes'
ORDER BY placed_at
LIMIT 50;
-- fix
CREATE INDEX orders_pending_placed_idx ON storefront.orders (placed_at) WHERE status = 'pending';
