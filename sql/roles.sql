-- Roles: privileges for the two kinds of database users a store has.
--
-- CREATE EXTENSION revokes everything that reads or writes store data from
-- PUBLIC (finalize.sql). These functions grant what each kind of role
-- needs, so nobody has to keep a list of signatures in sync by hand:
--
-- * an application role calls the API functions (SECURITY DEFINER, pinned
--   search_path) and touches no table directly;
-- * an analyst role reads: SELECT on the store's tables (the customer table
--   without password_hash) and EXECUTE on the read-only reporting functions.
--
-- The signature lists are text cast at call time, so they are resolved
-- against the installed functions when used, not when this file runs.
--
-- Both are SECURITY INVOKER: the caller must own the extension's objects
-- (the extension owner or a superuser); nobody else can execute them. Both
-- are idempotent and return what they granted.

CREATE FUNCTION app_role_functions()
RETURNS regprocedure[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY[
        '@extschema@.register_customer(text, text, text)',
        '@extschema@.authenticate(text, text)',
        '@extschema@.upsert_product(text, text, bigint, character, text, jsonb)',
        '@extschema@.set_sellable(text, boolean)',
        '@extschema@.restock(text, integer, text)',
        '@extschema@.stock(text)',
        '@extschema@.place_order(bigint, jsonb, text, interval)',
        '@extschema@.record_payment(bigint, bigint, boolean, text)',
        '@extschema@.cancel_order(bigint, text)',
        '@extschema@.ship_order(bigint)',
        '@extschema@.deliver_order(bigint)',
        '@extschema@.expire_reservations(timestamp with time zone, integer)',
        '@extschema@.order_timeline(bigint)',
        '@extschema@.track_event(text, timestamp with time zone, bigint, jsonb)',
        '@extschema@.track_events(text[], timestamp with time zone[], bigint[], jsonb[])'
    ]::text[]::regprocedure[]
$$;

CREATE FUNCTION analyst_role_functions()
RETURNS regprocedure[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY[
        '@extschema@.stock(text)',
        '@extschema@.order_timeline(bigint)',
        '@extschema@.check_invariants()',
        '@extschema@.rollup_watermark(text)',
        '@extschema@.dashboard_page_views(timestamp with time zone, timestamp with time zone, interval)',
        '@extschema@.dashboard_orders(timestamp with time zone, timestamp with time zone, interval)',
        '@extschema@.dashboard_revenue(timestamp with time zone, timestamp with time zone, interval)',
        '@extschema@.dashboard_funnel(timestamp with time zone, timestamp with time zone)'
    ]::text[]::regprocedure[]
$$;

-- USAGE on the schema and EXECUTE on each of `functions`, as one list of
-- what was granted; the two role functions below start with it.
CREATE FUNCTION grant_functions(role_name regrole, functions regprocedure[])
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
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %s', '@extschema@', role_name);
    privilege := 'USAGE'; object := format('schema %I', '@extschema@');
    RETURN NEXT;
    FOREACH f IN ARRAY coalesce(functions, '{}') LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', f, role_name);
        privilege := 'EXECUTE'; object := format('function %s', f);
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
    FROM @extschema@.grant_functions(role_name, @extschema@.app_role_functions()) g
$$;

CREATE FUNCTION grant_analyst_role(role_name regrole)
RETURNS TABLE (privilege text, object text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t regclass;
    cols text;
BEGIN
    RETURN QUERY SELECT g.privilege, g.object
                 FROM @extschema@.grant_functions(role_name, @extschema@.analyst_role_functions()) g;
    -- every table the extension owns (partitions are read through their
    -- parent), except the customer table, which is granted column by
    -- column without password_hash
    FOR t IN
        SELECT c.oid::regclass
        FROM pg_class c
        JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
        JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'storefront'
        WHERE c.relkind IN ('r', 'p', 'v') AND NOT c.relispartition
          AND c.oid <> '@extschema@.customer'::regclass
        ORDER BY c.relname
    LOOP
        EXECUTE format('GRANT SELECT ON TABLE %s TO %s', t, role_name);
        privilege := 'SELECT'; object := format('table %s', t);
        RETURN NEXT;
    END LOOP;
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
    FROM pg_attribute a
    WHERE a.attrelid = '@extschema@.customer'::regclass AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attname <> 'password_hash';
    EXECUTE format('GRANT SELECT (%s) ON TABLE @extschema@.customer TO %s', cols, role_name);
    privilege := 'SELECT'; object := format('table @extschema@.customer (%s)', cols);
    RETURN NEXT;
END
$$;
