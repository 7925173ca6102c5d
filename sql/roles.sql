-- Roles: the kinds of database users a store has, what each may call, and
-- row-level security for customer-facing data.
--
-- CREATE EXTENSION revokes everything that reads or writes store data from
-- PUBLIC (finalize.sql). Roles are cluster-wide, so the extension never
-- creates one: the DBA creates them and hands each its privileges with one
-- of these functions, which also record what kind of role it is:
--
-- * app (grant_app_role): the application acting for customers. It places
--   orders, pays, cancels and reads its customers' data, through the API
--   functions (SECURITY DEFINER, pinned search_path), and reads the
--   customer-facing tables directly, limited by row-level security to the
--   acting customer's rows;
-- * catalog (grant_catalog_role): products, prices and stock;
-- * operations (grant_operations_role): shipping, delivery, expiry,
--   maintenance, the event relay, invariants and dashboards, for every
--   customer;
-- * analyst (grant_analyst_role): reads the store's tables (not password
--   hashes), the warehouse (schema storefront_dw) and the reports, writes
--   nothing.
--
-- The acting customer is set by the caller per transaction:
--   SELECT set_config('storefront.customer_id', '42', true);
-- Functions acting for a customer (place_order, record_payment,
-- cancel_order, order_details, order_timeline, order_events) then act only
-- for that one (42501 otherwise), and the row-level security policies show
-- an application role only that customer's rows. enable_row_security()
-- makes naming the customer mandatory for application sessions.
--
-- The signature lists are text cast at call time, so they are resolved
-- against the installed functions when used, not when this file runs.
-- The grant functions are SECURITY INVOKER: the caller must own the
-- extension's objects (the extension owner or a superuser); nobody else
-- can execute them. All are idempotent and return what they granted.

-- What kind each role granted by a function below is; read by the checks
-- (a role may be of several kinds). Role names, not OIDs, so a dump
-- restores onto the same names in another cluster; a renamed role is
-- granted again.
CREATE TABLE role_kind (
    role_name name NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('app', 'catalog', 'operations', 'analyst')),
    PRIMARY KEY (role_name, kind)
);
COMMENT ON TABLE role_kind IS 'The kind of each role set up with the grant_*_role() functions: app, catalog, operations or analyst.';

-- Store-wide switches set by provided functions (a missing row is off).
CREATE TABLE config (
    name  text PRIMARY KEY CHECK (name IN ('row_security')),
    value text NOT NULL CHECK (value IN ('on', 'off'))
);
COMMENT ON TABLE config IS 'Store-wide switches: row_security (see enable_row_security()).';

-- Does the calling role see every customer's rows (a staff role: catalog,
-- operations or analyst)? Used by the row-level security policies, once
-- per query. SECURITY DEFINER to read the registry; calling_role() is the
-- querying role even here.
CREATE FUNCTION sees_every_customer()
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1 FROM @extschema@.role_kind k JOIN pg_roles r ON r.rolname = k.role_name
        WHERE k.kind IN ('catalog', 'operations', 'analyst')
          AND pg_has_role(@extschema@.calling_role(), r.oid, 'MEMBER'))
$$;

-- Row-level security on the customer-facing tables. The extension's own
-- functions run as the extension's owner and are not limited by it; a role
-- that reads these tables directly (an app role, an analyst) sees the
-- acting customer's rows, or every row when it is a staff role.
ALTER TABLE customer ENABLE ROW LEVEL SECURITY;
ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE order_line ENABLE ROW LEVEL SECURITY;
ALTER TABLE reservation ENABLE ROW LEVEL SECURITY;
ALTER TABLE payment ENABLE ROW LEVEL SECURITY;
ALTER TABLE order_status_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY customer_rows ON customer FOR SELECT
    USING (customer_id = (SELECT @extschema@.acting_customer()) OR (SELECT @extschema@.sees_every_customer()));
CREATE POLICY customer_rows ON orders FOR SELECT
    USING (customer_id = (SELECT @extschema@.acting_customer()) OR (SELECT @extschema@.sees_every_customer()));
CREATE POLICY customer_rows ON order_line FOR SELECT
    USING (customer_id = (SELECT @extschema@.acting_customer()) OR (SELECT @extschema@.sees_every_customer()));
CREATE POLICY customer_rows ON reservation FOR SELECT
    USING (customer_id = (SELECT @extschema@.acting_customer()) OR (SELECT @extschema@.sees_every_customer()));
CREATE POLICY customer_rows ON payment FOR SELECT
    USING (customer_id = (SELECT @extschema@.acting_customer()) OR (SELECT @extschema@.sees_every_customer()));
CREATE POLICY customer_rows ON order_status_history FOR SELECT
    USING (customer_id = (SELECT @extschema@.acting_customer()) OR (SELECT @extschema@.sees_every_customer()));
CREATE POLICY customer_rows ON outbox FOR SELECT
    USING (customer_id = (SELECT @extschema@.acting_customer()) OR (SELECT @extschema@.sees_every_customer()));

CREATE FUNCTION app_role_functions()
RETURNS regprocedure[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY[
        '@extschema@.register_customer(text, text, text)',
        '@extschema@.authenticate(text, text)',
        '@extschema@.products(text, text, integer)',
        '@extschema@.product(text)',
        '@extschema@.stock(text)',
        '@extschema@.place_order(bigint, jsonb, text, interval)',
        '@extschema@.record_payment(bigint, bigint, boolean, text)',
        '@extschema@.cancel_order(bigint, text)',
        '@extschema@.order_details(bigint)',
        '@extschema@.order_timeline(bigint)',
        '@extschema@.order_events(bigint, integer)',
        '@extschema@.order_customer(bigint)',
        '@extschema@.set_customer_region(bigint, text)',
        '@extschema@.track_event(text, timestamp with time zone, bigint, jsonb)',
        '@extschema@.track_events(text[], timestamp with time zone[], bigint[], jsonb[])'
    ]::text[]::regprocedure[]
$$;

CREATE FUNCTION catalog_role_functions()
RETURNS regprocedure[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY[
        '@extschema@.upsert_product(text, text, bigint, character, text, jsonb)',
        '@extschema@.set_sellable(text, boolean)',
        '@extschema@.restock(text, integer, text)',
        '@extschema@.add_location(text, text)',
        '@extschema@.set_hot_stock(text, integer)',
        '@extschema@.stock(text)',
        '@extschema@.products(text, text, integer)',
        '@extschema@.product(text)'
    ]::text[]::regprocedure[]
$$;

CREATE FUNCTION operations_role_functions()
RETURNS regprocedure[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY[
        '@extschema@.ship_order(bigint)',
        '@extschema@.deliver_order(bigint)',
        '@extschema@.cancel_order(bigint, text)',
        '@extschema@.expire_reservations(timestamp with time zone, integer)',
        '@extschema@.order_details(bigint)',
        '@extschema@.order_timeline(bigint)',
        '@extschema@.order_events(bigint, integer)',
        '@extschema@.order_customer(bigint)',
        '@extschema@.stock(text)',
        '@extschema@.products(text, text, integer)',
        '@extschema@.product(text)',
        '@extschema@.check_invariants()',
        '@extschema@.relay_order_events(integer)',
        '@extschema@.start_event_relay(integer)',
        '@extschema@.stop_event_relay()',
        '@extschema@.event_relay_status()',
        '@extschema@.pipeline_status()',
        '@extschema@.run_maintenance(timestamp with time zone, interval, integer)',
        '@extschema@.maintenance_begin()',
        '@extschema@.maintenance_note(bigint, text, timestamp with time zone, boolean, bigint, text, text)',
        '@extschema@.maintenance_rollups()',
        '@extschema@.maintenance_retention_relations()',
        '@extschema@.maintenance_report(integer)',
        '@extschema@.ensure_event_partitions(interval, interval, timestamp with time zone)',
        '@extschema@.create_rollup(text, regclass, text, interval, text[], text[], text)',
        '@extschema@.drop_rollup(text)',
        '@extschema@.refresh_rollup(text, timestamp with time zone)',
        '@extschema@.invalidate_rollup(text, timestamp with time zone, timestamp with time zone)',
        '@extschema@.rollup_advance(text, timestamp with time zone)',
        '@extschema@.rollup_pending_step(text, integer)',
        '@extschema@.set_retention(text, interval)',
        '@extschema@.apply_retention(timestamp with time zone)',
        '@extschema@.apply_retention_to(text, timestamp with time zone)',
        '@extschema@.rollup_watermark(text)',
        '@extschema@.dashboard_page_views(timestamp with time zone, timestamp with time zone, interval)',
        '@extschema@.dashboard_orders(timestamp with time zone, timestamp with time zone, interval)',
        '@extschema@.dashboard_revenue(timestamp with time zone, timestamp with time zone, interval)',
        '@extschema@.dashboard_funnel(timestamp with time zone, timestamp with time zone)',
        '@extschema@.load_warehouse()'
    ]::text[]::regprocedure[]
$$;

CREATE FUNCTION analyst_role_functions()
RETURNS regprocedure[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY[
        '@extschema@.stock(text)',
        '@extschema@.products(text, text, integer)',
        '@extschema@.product(text)',
        '@extschema@.order_timeline(bigint)',
        '@extschema@.check_invariants()',
        '@extschema@.pipeline_status()',
        '@extschema@.rollup_watermark(text)',
        '@extschema@.dashboard_page_views(timestamp with time zone, timestamp with time zone, interval)',
        '@extschema@.dashboard_orders(timestamp with time zone, timestamp with time zone, interval)',
        '@extschema@.dashboard_revenue(timestamp with time zone, timestamp with time zone, interval)',
        '@extschema@.dashboard_funnel(timestamp with time zone, timestamp with time zone)'
    ]::text[]::regprocedure[]
$$;

-- USAGE on the schema and EXECUTE on each of `functions`, recording the
-- role's kind, as one list of what was granted; the role functions below
-- start with it.
CREATE FUNCTION grant_functions(role_name regrole, functions regprocedure[], kind text DEFAULT NULL)
RETURNS TABLE (privilege text, object text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f regprocedure;
BEGIN
    IF role_name IS NULL THEN
        RAISE EXCEPTION 'role_name must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = role_name) THEN
        RAISE EXCEPTION 'role with OID % does not exist', role_name::oid USING ERRCODE = 'undefined_object';
    END IF;
    IF kind IS NOT NULL THEN
        IF kind NOT IN ('app', 'catalog', 'operations', 'analyst') THEN
            RAISE EXCEPTION 'unknown role kind "%"', kind
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A role kind is app, catalog, operations or analyst.';
        END IF;
        INSERT INTO @extschema@.role_kind AS k (role_name, kind)
        SELECT r.rolname, grant_functions.kind FROM pg_roles r WHERE r.oid = role_name
        ON CONFLICT DO NOTHING;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %s', '@extschema@', role_name);
    privilege := 'USAGE'; object := format('schema %I', '@extschema@');
    RETURN NEXT;
    FOREACH f IN ARRAY coalesce(functions, '{}') LOOP
        IF f IS NULL THEN
            CONTINUE;
        END IF;
        EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO %s', f, role_name);
        privilege := 'EXECUTE'; object := format('function %s', f);
        RETURN NEXT;
    END LOOP;
END
$$;

-- SELECT on `tables` (the customer table: every column but password_hash)
-- for role_name, as rows of what was granted.
CREATE FUNCTION grant_table_reads(role_name regrole, tables regclass[])
RETURNS TABLE (privilege text, object text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t regclass;
    cols text;
BEGIN
    IF role_name IS NULL THEN
        RAISE EXCEPTION 'role_name must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = role_name) THEN
        RAISE EXCEPTION 'role with OID % does not exist', role_name::oid USING ERRCODE = 'undefined_object';
    END IF;
    FOREACH t IN ARRAY coalesce(tables, '{}') LOOP
        IF t IS NULL THEN
            CONTINUE;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t) THEN
            RAISE EXCEPTION 'relation with OID % does not exist', t::oid USING ERRCODE = 'undefined_table';
        END IF;
        IF t = '@extschema@.customer'::regclass THEN
            SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
            FROM pg_attribute a
            WHERE a.attrelid = t AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> 'password_hash';
            EXECUTE format('GRANT SELECT (%s) ON TABLE %s TO %s', cols, t, role_name);
            privilege := 'SELECT'; object := format('table %s (%s)', t, cols);
        ELSE
            EXECUTE format('GRANT SELECT ON TABLE %s TO %s', t, role_name);
            privilege := 'SELECT'; object := format('table %s', t);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE FUNCTION grant_app_role(role_name regrole)
RETURNS TABLE (privilege text, object text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT g.privilege, g.object
    FROM @extschema@.grant_functions(role_name, @extschema@.app_role_functions(), 'app') g
    UNION ALL
    SELECT g.privilege, g.object
    FROM @extschema@.grant_table_reads(role_name, ARRAY[
             '@extschema@.customer', '@extschema@.orders', '@extschema@.order_line',
             '@extschema@.payment', '@extschema@.order_status_history']::regclass[]) g
$$;

CREATE FUNCTION grant_catalog_role(role_name regrole)
RETURNS TABLE (privilege text, object text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT g.privilege, g.object
    FROM @extschema@.grant_functions(role_name, @extschema@.catalog_role_functions(), 'catalog') g
$$;

CREATE FUNCTION grant_operations_role(role_name regrole)
RETURNS TABLE (privilege text, object text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT g.privilege, g.object
    FROM @extschema@.grant_functions(role_name, @extschema@.operations_role_functions(), 'operations') g
    UNION ALL
    -- rollups read their source as their owner: operations may aggregate events
    SELECT g.privilege, g.object
    FROM @extschema@.grant_table_reads(role_name, ARRAY['@extschema@.event'::regclass]) g
$$;

CREATE FUNCTION grant_analyst_role(role_name regrole)
RETURNS TABLE (privilege text, object text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT g.privilege, g.object
                 FROM @extschema@.grant_functions(role_name, @extschema@.analyst_role_functions(), 'analyst') g;
    -- every table the extension owns (partitions are read through their
    -- parent); the customer table without password_hash
    RETURN QUERY SELECT g.privilege, g.object
                 FROM @extschema@.grant_table_reads(role_name, ARRAY(
                     SELECT c.oid::regclass
                     FROM pg_class c
                     JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
                     JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'storefront'
                     WHERE c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition
                       AND c.relnamespace = '@extschema@'::regnamespace
                       AND c.relname NOT IN ('role_kind', 'config')
                     ORDER BY c.relname)) g;
    -- the warehouse: its tables and report views, read-only
    EXECUTE format('GRANT USAGE ON SCHEMA storefront_dw TO %s', role_name);
    privilege := 'USAGE'; object := 'schema storefront_dw';
    RETURN NEXT;
    RETURN QUERY SELECT g.privilege, g.object
                 FROM @extschema@.grant_table_reads(role_name, ARRAY(
                     SELECT c.oid::regclass FROM pg_class c
                     WHERE c.relnamespace = 'storefront_dw'::regnamespace AND c.relkind IN ('r', 'm')
                     ORDER BY c.relname)) g;
END
$$;

-- Make every application session name its customer: from now on a role
-- granted with grant_app_role (and no catalog or operations role) gets
-- 42501 from a function acting for a customer unless it has set
-- storefront.customer_id in the transaction. Direct reads of the
-- customer-facing tables are limited by row-level security either way.
-- Returns the new setting. disable_row_security() turns it off.
CREATE FUNCTION enable_row_security()
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO @extschema@.config AS c (name, value) VALUES ('row_security', 'on')
    ON CONFLICT (name) DO UPDATE SET value = excluded.value
    RETURNING c.value
$$;

CREATE FUNCTION disable_row_security()
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO @extschema@.config AS c (name, value) VALUES ('row_security', 'off')
    ON CONFLICT (name) DO UPDATE SET value = excluded.value
    RETURNING c.value
$$;
