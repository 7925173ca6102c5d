-- title: A payment provider's webhook: find the payment by its reference
-- why: The provider calls back with its own reference only. payment's unique key is (customer_id, provider_ref), led by customer_id (the table is distributed by customer), so a lookup by the reference alone reads the whole table.
-- query
SELECT customer_id, order_id, succeeded, outcome
FROM storefront.payment
WHERE provider_ref = 'seed-200000';
-- fix
CREATE INDEX payment_provider_ref_idx ON storefront.payment (provider_ref);
