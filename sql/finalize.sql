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
    FOREACH t IN ARRAY ARRAY['category', 'product', 'sku', 'customer', 'inventory', 'stock_movement',
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
