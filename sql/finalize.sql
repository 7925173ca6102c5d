-- Runs last in the install script: documentation comments on every
-- function, privileges, and pg_dump registration of the data tables.

-- ------------------------------------------------------------- comments --
COMMENT ON FUNCTION register_customer(text, text, text) IS
'Register a customer with an argon2id-hashed password; returns the customer id. Email is trimmed and lower-cased. Errors: 22023 malformed email, empty password or name; 23505 email already registered.';
COMMENT ON FUNCTION authenticate(text, text) IS
'The customer id for a correct email and password, else NULL. Always performs one argon2id verification, so timing does not reveal whether the email exists.';
COMMENT ON FUNCTION upsert_product(text, text, bigint, character, text, jsonb) IS
'Create or update a sellable SKU and its product (found or created by name within the category path, e.g. ''Apparel/Men/Shirts''); returns the SKU id. Errors: 22023 on a bad code, name, price, currency or attributes.';
COMMENT ON FUNCTION set_sellable(text, boolean) IS
'Take a SKU off sale (false) or put it back (true); unsellable SKUs cannot be ordered. Errors: 23503 unknown SKU.';
COMMENT ON FUNCTION category_for_path(text) IS
'Internal: find or create the category for a path such as ''Apparel/Men/Shirts''; NULL for a NULL or empty path.';
COMMENT ON FUNCTION add_location(text, text) IS
'Add a stock location (code: lower-case letters, digits, _ or -); returns its id. Errors: 22023 bad code or name, 23505 code taken.';
COMMENT ON FUNCTION max_restock_qty() IS
'The largest quantity one restock() call may add.';
COMMENT ON FUNCTION restock(text, integer, text) IS
'Add qty units of a SKU at a location (default ''main'') and record the movement; returns the new on_hand. Errors: 22023 qty out of range, 23503 unknown SKU or location, 55P03 lock wait over 5s.';
COMMENT ON FUNCTION stock(text) IS
'Inventory of a SKU per location as a user sees it: on_hand, reserved and available = on_hand - reserved. Errors: 23503 unknown SKU.';
COMMENT ON FUNCTION seed_u(bigint, integer) IS
'Deterministic uniform number in [0, 1) from a key and a salt (used by seed_demo_data).';
COMMENT ON FUNCTION seed_demo_data(integer, date) IS
'Load realistic, deterministic demo data: scale 1 = 100k customers, 10k SKUs in a 3-level category tree, ~400k orders with ~1.05M lines over the 365 days before anchor. Reports progress with NOTICEs; returns row counts. Errors: 22023 scale outside 1..100, 55000 demo data already loaded.';
COMMENT ON FUNCTION invariant_detail(text[]) IS
'Internal: summarise invariant violations for check_invariants().';
COMMENT ON FUNCTION check_invariants() IS
'Check every store invariant over the live data: stock bounds and ledger, live holds, order totals and lines, payments, idempotency keys, status history and outbox. One row per invariant with ok and a detail naming up to five violations.';
COMMENT ON FUNCTION order_status_can_move(text, text) IS
'Whether an order may move from status from (NULL: a new order) to status to, per the order status machine.';

COMMENT ON FUNCTION place_order(bigint, jsonb, text, interval) IS
'Place an order in one transaction: validate the items ([{"sku": ..., "qty": n}, ...]; repeats merged), reserve every line or none (rows locked in SKU order), snapshot prices, write order, lines, reservations, status history and outbox, NOTIFY storefront_order_events. Same idempotency key and request: the original receipt (replayed = true). Errors: 23514 short stock (DETAIL names each SKU), 23503 unknown customer or SKU, 23505 key reused for another request, 22023 bad qty / line count / hold, 22P02 malformed items, 55P03 lock wait over 2s.';
COMMENT ON FUNCTION record_payment(bigint, bigint, boolean, text) IS
'Record a payment attempt; returns the order status after it. Success sells the held stock (or re-reserves it after expiry or a failed attempt: 23514 if gone) and marks the order paid; failure releases the stock (payment_failed). Idempotent per provider_ref. Errors: P0002 unknown order, 22023 amount differs from the total, 55000 order cancelled or already paid, 23505 provider_ref used for another payment.';
COMMENT ON FUNCTION cancel_order(bigint, text) IS
'Cancel a pending, failed or expired order, releasing any stock it holds; returns ''cancelled''. Errors: P0002 unknown order, 55000 order paid, shipped, delivered or already cancelled.';
COMMENT ON FUNCTION ship_order(bigint) IS
'Mark a paid order shipped; returns ''shipped''. Errors: P0002 unknown order, 55000 order not paid.';
COMMENT ON FUNCTION deliver_order(bigint) IS
'Mark a shipped order delivered; returns ''delivered''. Errors: P0002 unknown order, 55000 order not shipped.';
COMMENT ON FUNCTION expire_reservations(timestamp with time zone, integer) IS
'Release holds that expired by as_of (at most batch per call; pending orders move to expired); returns the number of reservations released. Orders locked by other sessions are skipped (SKIP LOCKED), so concurrent sweepers never wait on each other. Schedule it with pg_cron.';
COMMENT ON FUNCTION order_timeline(bigint) IS
'Every status change of an order, oldest first: time, status and detail. Errors: P0002 unknown order.';
COMMENT ON FUNCTION set_hot_stock(text, integer) IS
'Turn hot-stock mode on for a SKU with n slots per location (1..64), or off with 0: its stock is split over slot rows that concurrent buyers claim with SKIP LOCKED. Live holds move with their units. Errors: 22023 slots out of range, 23503 unknown SKU.';

-- Row-lock waits are bounded: a caller gets 55P03 instead of queueing.
-- The statements inside are kept prepared plans whose parameters (arrays of
-- ids) do not change the best plan, so plan them once (generic plans), as
-- custom planning on every call costs more than the statements themselves.
ALTER FUNCTION place_order(bigint, jsonb, text, interval) SET lock_timeout = '2s' SET plan_cache_mode = 'force_generic_plan';
ALTER FUNCTION record_payment(bigint, bigint, boolean, text) SET lock_timeout = '2s' SET plan_cache_mode = 'force_generic_plan';
ALTER FUNCTION cancel_order(bigint, text) SET lock_timeout = '2s' SET plan_cache_mode = 'force_generic_plan';
ALTER FUNCTION ship_order(bigint) SET lock_timeout = '2s' SET plan_cache_mode = 'force_generic_plan';
ALTER FUNCTION deliver_order(bigint) SET lock_timeout = '2s' SET plan_cache_mode = 'force_generic_plan';
ALTER FUNCTION expire_reservations(timestamp with time zone, integer) SET lock_timeout = '2s' SET plan_cache_mode = 'force_generic_plan';

-- ----------------------------------------------------------- privileges --
-- Nothing that reads or writes store data is callable by PUBLIC; grant
-- what an application needs with storefront.grant_app_role().
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA @extschema@ FROM PUBLIC;
-- pure helpers stay public
GRANT EXECUTE ON FUNCTION order_status_can_move(text, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION seed_u(bigint, integer) TO PUBLIC;
GRANT EXECUTE ON FUNCTION invariant_detail(text[]) TO PUBLIC;
GRANT EXECUTE ON FUNCTION max_restock_qty() TO PUBLIC;

-- --------------------------------------------------------------- pg_dump --
-- Extension tables are skipped by pg_dump unless registered: register every
-- data table and identity sequence so a dump restores the store. The 'main'
-- location is created by CREATE EXTENSION itself, so it is not dumped.
DO $$
DECLARE
    t text;
    s text;
BEGIN
    FOREACH t IN ARRAY ARRAY['category', 'product', 'sku', 'customer', 'inventory', 'inventory_slot', 'stock_movement',
                             'orders', 'order_line', 'reservation', 'payment',
                             'order_status_history', 'outbox'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(format('@extschema@.%I', t)::regclass, '');
    END LOOP;
    PERFORM pg_catalog.pg_extension_config_dump('@extschema@.location'::regclass, $f$WHERE code <> 'main'$f$);
    FOR s IN
        SELECT pg_catalog.pg_get_serial_sequence(format('@extschema@.%I', c.relname), a.attname)
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
        WHERE c.relnamespace = '@extschema@'::regnamespace AND c.relkind = 'r' AND a.attidentity <> ''
    LOOP
        PERFORM pg_catalog.pg_extension_config_dump(s::regclass, '');
    END LOOP;
END
$$;
