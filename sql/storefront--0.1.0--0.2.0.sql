-- storefront 0.1.0 -> 0.2.0
--
-- Run by ALTER EXTENSION storefront UPDATE TO '0.2.0', after the 0.2.0
-- library is installed (and the server restarted, so no backend keeps the
-- 0.1.0 library). Every change below says why; tests/tests/upgrade.rs
-- checks that the result equals a fresh 0.2.0 install.
--
-- CREATE OR REPLACE FUNCTION below replaces functions that are already
-- members of this extension: PostgreSQL refuses it for a function that is
-- not a member (so an object someone else created cannot be taken over),
-- and it keeps what depends on the function.

\echo Use "ALTER EXTENSION storefront UPDATE TO '0.2.0'" to load this file. \quit

-- The schema named in the control file: CREATE EXTENSION creates it, or
-- takes one that already exists as it finds it. Every name in this script,
-- and in the functions it creates with search_path = @extschema@, pg_temp,
-- is looked up there, so refuse a schema that a role other than a superuser
-- owns or may create objects in, or that holds a function, operator, type
-- or relation of such a role: it could put objects there that the
-- extension's SECURITY DEFINER functions would use with their owner's
-- rights. Everything here is qualified, as the schema is not trusted yet.
DO $guard$
BEGIN
    IF EXISTS (
        SELECT FROM pg_catalog.pg_namespace n
        JOIN pg_catalog.pg_roles o ON o.oid OPERATOR(pg_catalog.=) n.nspowner
        WHERE n.nspname OPERATOR(pg_catalog.=) '@extschema@'
          AND (NOT o.rolsuper
               OR EXISTS (SELECT FROM pg_catalog.aclexplode(n.nspacl) a
                          WHERE a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
                            AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner)
               OR EXISTS (SELECT FROM pg_catalog.pg_proc p
                          JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) p.proowner
                          WHERE p.pronamespace OPERATOR(pg_catalog.=) n.oid AND NOT r.rolsuper)
               OR EXISTS (SELECT FROM pg_catalog.pg_operator p
                          JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) p.oprowner
                          WHERE p.oprnamespace OPERATOR(pg_catalog.=) n.oid AND NOT r.rolsuper)
               OR EXISTS (SELECT FROM pg_catalog.pg_type t
                          JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) t.typowner
                          WHERE t.typnamespace OPERATOR(pg_catalog.=) n.oid AND NOT r.rolsuper)
               OR EXISTS (SELECT FROM pg_catalog.pg_class c
                          JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) c.relowner
                          WHERE c.relnamespace OPERATOR(pg_catalog.=) n.oid AND NOT r.rolsuper)))
    THEN
        RAISE EXCEPTION 'schema "@extschema@" is not safe for extension storefront'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The schema and every function, operator, type and relation in it must belong to a superuser, and no other role may create objects in it; otherwise that role could place objects there that the extension''s functions would use with their owner''s rights.',
                  HINT = 'Drop what other roles own in the schema, revoke CREATE on it from them and make a superuser its owner (or drop the schema), then run the command again.';
    END IF;
END
$guard$;

-- ------------------------------------------------------------ money --
-- Prices are bounded (at most 10^12 minor units), so no order total can
-- overflow; upsert_product() refuses higher prices with 22003. An upgrade
-- with a price above the bound fails here (check constraint), naming it.
ALTER TABLE @extschema@.sku DROP CONSTRAINT sku_price_cents_check,
    ADD CONSTRAINT sku_price_cents_check CHECK (price_cents >= 0 AND price_cents <= 1000000000000);

CREATE FUNCTION max_price_cents() RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 1000000000000;

CREATE OR REPLACE FUNCTION upsert_product(
    sku         text,
    name        text,
    price_cents bigint,
    currency    char(3) DEFAULT 'USD',
    category    text    DEFAULT NULL,
    attributes  jsonb   DEFAULT '{}'
)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
SET lock_timeout = '5s'
AS $$
#variable_conflict use_column
DECLARE
    v_code     text  := btrim(upsert_product.sku);
    v_name     text  := btrim(upsert_product.name);
    v_currency text  := upper(btrim(upsert_product.currency));
    v_attrs    jsonb := coalesce(upsert_product.attributes, '{}');
    v_category bigint;
    v_product  bigint;
    v_sku      bigint;
BEGIN
    IF v_code IS NULL OR v_code !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' THEN
        RAISE EXCEPTION 'invalid SKU code "%"', coalesce(upsert_product.sku, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A SKU code has 1 to 64 letters, digits, ".", "_" or "-", and starts with a letter or digit.';
    END IF;
    IF v_name IS NULL OR v_name = '' THEN
        RAISE EXCEPTION 'product name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF upsert_product.price_cents IS NULL OR upsert_product.price_cents < 0 THEN
        RAISE EXCEPTION 'price must be zero or more minor units'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The price given was %s.', coalesce(upsert_product.price_cents::text, 'NULL'));
    END IF;
    IF upsert_product.price_cents > max_price_cents() THEN
        RAISE EXCEPTION 'price is out of range'
            USING ERRCODE = 'numeric_value_out_of_range',
                  DETAIL = format('The price given was %s minor units; a price is at most %s.',
                                  upsert_product.price_cents, max_price_cents());
    END IF;
    IF v_currency IS NULL OR v_currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'invalid currency code "%"', coalesce(upsert_product.currency::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A currency is a three-letter ISO 4217 code such as "USD".';
    END IF;
    IF jsonb_typeof(v_attrs) <> 'object' THEN
        RAISE EXCEPTION 'attributes must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The attributes given are a JSON %s.', jsonb_typeof(v_attrs));
    END IF;

    v_category := category_for_path(upsert_product.category);

    INSERT INTO product AS p (category_id, name)
    VALUES (v_category, v_name)
    ON CONFLICT ON CONSTRAINT product_category_name_key DO NOTHING
    RETURNING p.product_id INTO v_product;
    IF v_product IS NULL THEN
        SELECT p.product_id INTO v_product
        FROM product p
        WHERE p.category_id IS NOT DISTINCT FROM v_category AND p.name = v_name;
    END IF;

    INSERT INTO sku AS s (product_id, code, price_cents, currency, attributes)
    VALUES (v_product, v_code, upsert_product.price_cents, v_currency, v_attrs)
    ON CONFLICT (code) DO UPDATE
        SET product_id  = excluded.product_id,
            price_cents = excluded.price_cents,
            currency    = excluded.currency,
            attributes  = excluded.attributes,
            sellable    = true,
            updated_at  = now()
    RETURNING s.sku_id INTO v_sku;

    -- every SKU has a stock level at the main location from the start
    INSERT INTO inventory (sku_id, location_id)
    SELECT v_sku, l.location_id FROM location l WHERE l.code = 'main'
    ON CONFLICT DO NOTHING;

    RETURN v_sku;
END
$$;

-- ------------------------------------------------------------ stock --
-- Every stock UPDATE checks that it hit the rows it was computed for
-- (40001 otherwise), and every path that reads a SKU's stock mode holds
-- FOR KEY SHARE on the SKU row, which set_hot_stock() locks FOR UPDATE.

CREATE FUNCTION expect_row_count(what text, expected bigint, got bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF expected IS DISTINCT FROM got THEN
        RAISE EXCEPTION 'could not serialize access due to a concurrent change of stock'
            USING ERRCODE = 'serialization_failure',
                  DETAIL = format('The %s should have changed %s row(s) but changed %s.', what, expected, got),
                  HINT = 'Retry the call in a new transaction.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION restock(sku text, qty integer, location text DEFAULT 'main')
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
SET lock_timeout = '5s'
AS $$
#variable_conflict use_column
DECLARE
    v_sku      bigint;
    v_location integer;
    v_on_hand  integer;
    v_hot      integer;
    v_done     bigint;
BEGIN
    IF restock.qty IS NULL OR restock.qty <= 0 OR restock.qty > max_restock_qty() THEN
        RAISE EXCEPTION 'restock quantity must be between 1 and %', max_restock_qty()
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The quantity given was %s.', coalesce(restock.qty::text, 'NULL'));
    END IF;
    -- FOR KEY SHARE: the SKU's mode (normal or hot) cannot change until we
    -- commit (set_hot_stock locks the row FOR UPDATE), so the units land
    -- where orders look for them
    SELECT s.sku_id, s.hot_slots INTO v_sku, v_hot FROM sku s WHERE s.code = btrim(restock.sku) FOR KEY SHARE;
    IF v_sku IS NULL THEN
        PERFORM raise_unknown_sku(restock.sku);
    END IF;
    SELECT l.location_id INTO v_location FROM location l WHERE l.code = restock.location;
    IF v_location IS NULL THEN
        RAISE EXCEPTION 'location "%" does not exist', coalesce(restock.location, 'NULL')
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Create it with storefront.add_location().';
    END IF;

    IF v_hot = 0 THEN
        INSERT INTO inventory AS i (sku_id, location_id, on_hand)
        VALUES (v_sku, v_location, restock.qty)
        ON CONFLICT (sku_id, location_id) DO UPDATE
            SET on_hand = i.on_hand + excluded.on_hand, updated_at = now()
        RETURNING i.on_hand INTO v_on_hand;
    ELSE
        -- hot-stock SKU: lock the stock row, then its slots in order, and
        -- spread the units evenly over the slots
        INSERT INTO inventory (sku_id, location_id) VALUES (v_sku, v_location)
        ON CONFLICT DO NOTHING;
        PERFORM 1 FROM inventory i WHERE i.sku_id = v_sku AND i.location_id = v_location FOR NO KEY UPDATE;
        INSERT INTO inventory_slot (sku_id, location_id, slot)
        SELECT v_sku, v_location, n FROM generate_series(0, v_hot - 1) AS n
        ON CONFLICT DO NOTHING;
        PERFORM 1 FROM inventory_slot s WHERE s.sku_id = v_sku AND s.location_id = v_location
        ORDER BY s.slot FOR NO KEY UPDATE;
        UPDATE inventory_slot s
        SET on_hand = s.on_hand + restock.qty / v_hot + CASE WHEN s.slot < restock.qty % v_hot THEN 1 ELSE 0 END
        WHERE s.sku_id = v_sku AND s.location_id = v_location AND s.slot < v_hot;
        GET DIAGNOSTICS v_done = ROW_COUNT;
        PERFORM expect_row_count('restock of hot-stock slots', v_hot, v_done);
        UPDATE inventory i SET updated_at = now() WHERE i.sku_id = v_sku AND i.location_id = v_location;
        GET DIAGNOSTICS v_done = ROW_COUNT;
        PERFORM expect_row_count('restock of a stock row', 1, v_done);
        SELECT i.on_hand + coalesce((SELECT sum(s.on_hand) FROM inventory_slot s
                                     WHERE s.sku_id = v_sku AND s.location_id = v_location), 0)
        INTO v_on_hand
        FROM inventory i WHERE i.sku_id = v_sku AND i.location_id = v_location;
    END IF;

    INSERT INTO stock_movement (sku_id, location_id, qty, reason)
    VALUES (v_sku, v_location, restock.qty, 'restock');

    RETURN v_on_hand;
END
$$;

CREATE OR REPLACE FUNCTION set_hot_stock(sku text, slots integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
SET lock_timeout = '5s'
AS $$
#variable_conflict use_column
DECLARE
    v_sku  bigint;
    v_rows bigint;
    v_done bigint;
BEGIN
    IF slots IS NULL OR slots < 0 OR slots > 64 THEN
        RAISE EXCEPTION 'slots must be between 0 and 64'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The slots given were %s; 0 turns hot-stock mode off.', coalesce(slots::text, 'NULL'));
    END IF;
    SELECT s.sku_id INTO v_sku FROM sku s WHERE s.code = btrim(set_hot_stock.sku) FOR UPDATE;
    IF v_sku IS NULL THEN
        PERFORM raise_unknown_sku(set_hot_stock.sku);
    END IF;

    PERFORM 1 FROM inventory i WHERE i.sku_id = v_sku ORDER BY i.location_id FOR NO KEY UPDATE;
    PERFORM 1 FROM inventory_slot s WHERE s.sku_id = v_sku ORDER BY s.location_id, s.slot FOR NO KEY UPDATE;

    -- fold any slots back into the stock rows
    SELECT count(DISTINCT s.location_id) INTO v_rows FROM inventory_slot s WHERE s.sku_id = v_sku;
    UPDATE inventory i
    SET on_hand = i.on_hand + f.on_hand, reserved = i.reserved + f.reserved, updated_at = now()
    FROM (SELECT s.location_id, sum(s.on_hand)::integer AS on_hand, sum(s.reserved)::integer AS reserved
          FROM inventory_slot s WHERE s.sku_id = v_sku GROUP BY s.location_id) f
    WHERE i.sku_id = v_sku AND i.location_id = f.location_id;
    GET DIAGNOSTICS v_done = ROW_COUNT;
    PERFORM expect_row_count('stock rows folded back from slots', v_rows, v_done);
    DELETE FROM inventory_slot s WHERE s.sku_id = v_sku;
    UPDATE reservation r SET slot = NULL
    FROM order_line l
    WHERE l.customer_id = r.customer_id AND l.order_id = r.order_id AND l.line_no = r.line_no
      AND l.sku_id = v_sku AND r.state = 'held' AND r.slot IS NOT NULL;

    IF slots > 0 THEN
        -- live holds spread round-robin over the slots, each slot carrying
        -- the units its holds reserve plus an even share of the rest
        UPDATE reservation r SET slot = h.slot
        FROM (SELECT r2.customer_id, r2.reservation_id,
                     ((row_number() OVER (PARTITION BY r2.location_id ORDER BY r2.reservation_id) - 1) % slots) AS slot
              FROM reservation r2
              JOIN order_line l ON l.customer_id = r2.customer_id AND l.order_id = r2.order_id AND l.line_no = r2.line_no
              WHERE l.sku_id = v_sku AND r2.state = 'held') h
        WHERE r.customer_id = h.customer_id AND r.reservation_id = h.reservation_id;
        INSERT INTO inventory_slot (sku_id, location_id, slot, on_hand, reserved)
        SELECT v_sku, i.location_id, n.n,
               (i.on_hand - i.reserved) / slots
                 + CASE WHEN n.n < (i.on_hand - i.reserved) % slots THEN 1 ELSE 0 END
                 + coalesce(h.qty, 0),
               coalesce(h.qty, 0)
        FROM inventory i
        CROSS JOIN generate_series(0, slots - 1) AS n(n)
        LEFT JOIN (SELECT r.location_id, r.slot, sum(r.qty)::integer AS qty
                   FROM reservation r
                   JOIN order_line l ON l.customer_id = r.customer_id AND l.order_id = r.order_id AND l.line_no = r.line_no
                   WHERE l.sku_id = v_sku AND r.state = 'held'
                   GROUP BY r.location_id, r.slot) h ON h.location_id = i.location_id AND h.slot = n.n
        WHERE i.sku_id = v_sku;
        UPDATE inventory i SET on_hand = 0, reserved = 0, updated_at = now() WHERE i.sku_id = v_sku;
    END IF;

    UPDATE sku s SET hot_slots = slots, updated_at = now() WHERE s.sku_id = v_sku;
    GET DIAGNOSTICS v_done = ROW_COUNT;
    PERFORM expect_row_count('SKU mode switch', 1, v_done);
    RETURN slots;
END
$$;

-- ----------------------------------------------------------- events --
-- One NOTIFY payload too long (8000 bytes or more) went out as an error
-- and stopped every later relay batch: the relay and notify mode send a
-- stub for it instead.

CREATE FUNCTION notify_payload(payload text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN octet_length(payload) < 8000 THEN payload
            ELSE json_build_object(
                     'order_id', (regexp_match(payload, '"order_id": (\d{1,30})'))[1]::numeric,
                     'customer_id', (regexp_match(payload, '"customer_id": (\d{1,30})'))[1]::numeric,
                     'seq', (regexp_match(payload, '"seq": (\d{1,30})'))[1]::numeric,
                     'status', (regexp_match(payload, '"status": "([a-z_]{1,32})"'))[1],
                     'truncated', true,
                     'bytes', octet_length(payload))::text
       END;

CREATE OR REPLACE FUNCTION relay_order_events(max_events integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
DECLARE
    v_sent integer;
BEGIN
    IF max_events IS NULL OR max_events < 1 THEN
        RAISE EXCEPTION 'max_events must be at least 1'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The max_events given was %s.', coalesce(max_events::text, 'NULL'));
    END IF;
    -- key: the bytes of 'sfrelay' (one relay per database)
    IF NOT pg_try_advisory_xact_lock(32482263835631993) THEN
        RETURN 0;
    END IF;
    WITH batch AS (
        DELETE FROM order_event_queue q
        WHERE q.id IN (SELECT id FROM order_event_queue ORDER BY id LIMIT max_events)
        RETURNING q.id, q.payload
    )
    SELECT count(pg_notify('storefront_order_events', notify_payload(b.payload))) INTO v_sent
    FROM (SELECT id, payload FROM batch ORDER BY id) b;
    RETURN v_sent;
END
$$;

-- Event times are real times (1970 up to 3000, UTC): track_event() and
-- track_events() refuse others with 22008, and the table says so too. One
-- -infinity event used to stop run_maintenance() for good; events outside
-- the range could never be partitioned or rolled up, and are removed
-- here (the NOTICE says how many).
DO $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM @extschema@.event e
    WHERE NOT (e.at >= '1970-01-01 00:00:00+00' AND e.at < '3000-01-01 00:00:00+00');
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        RAISE NOTICE 'removed % event(s) timed before 1970 or from 3000 on', n;
    END IF;
END
$$;
ALTER TABLE @extschema@.event
    ADD CONSTRAINT event_at_range CHECK (at >= '1970-01-01 00:00:00+00' AND at < '3000-01-01 00:00:00+00');

CREATE OR REPLACE FUNCTION track_event(kind text, at timestamptz DEFAULT now(), customer_id bigint DEFAULT NULL,
                            props jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    IF kind IS NULL OR kind !~ '^[a-z][a-z0-9_.]{0,63}$' THEN
        RAISE EXCEPTION 'invalid event kind "%"', coalesce(kind, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'An event kind has 1 to 64 lower-case letters, digits, "_" or ".", starting with a letter.';
    END IF;
    IF props IS NOT NULL AND jsonb_typeof(props) <> 'object' THEN
        RAISE EXCEPTION 'event props must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF at IS NOT NULL AND NOT (at >= '1970-01-01 00:00:00+00' AND at < '3000-01-01 00:00:00+00') THEN
        RAISE EXCEPTION 'event time is out of range'
            USING ERRCODE = 'datetime_field_overflow',
                  DETAIL = format('The time given was %s; an event time is from 1970-01-01 up to, but not including, 3000-01-01 (UTC).', at);
    END IF;
    INSERT INTO event (at, kind, customer_id, props)
    VALUES (coalesce(at, now()), kind, customer_id, coalesce(props, '{}'));
END
$$;

-- Concurrent partition runs (pg_cron and a manual call) took turns only
-- after looking for the partition, so the second failed with 42P07.
CREATE OR REPLACE FUNCTION ensure_event_partitions(ahead interval DEFAULT '7 days', behind interval DEFAULT '1 day',
                                        from_time timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
DECLARE
    d       timestamptz;
    part    text;
    created integer := 0;
BEGIN
    IF ahead IS NULL OR behind IS NULL OR from_time IS NULL
       OR ahead < interval '0' OR behind < interval '0' OR ahead + behind > interval '3660 days' THEN
        RAISE EXCEPTION 'partition window must be between 0 and 3660 days'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (from_time - behind >= '1970-01-01 00:00:00+00' AND from_time + ahead < '3000-01-01 00:00:00+00') THEN
        RAISE EXCEPTION 'partition window is out of range'
            USING ERRCODE = 'datetime_field_overflow',
                  DETAIL = format('The window is %s - %s to %s + %s; events are timed from 1970-01-01 up to, but not including, 3000-01-01 (UTC).',
                                  from_time, behind, from_time, ahead);
    END IF;
    -- one run at a time (key: the bytes of 'sfparts'); held to commit
    PERFORM pg_advisory_xact_lock(32482255178986611);
    FOR d IN
        SELECT generate_series(date_trunc('day', from_time - behind, 'UTC'),
                               date_trunc('day', from_time + ahead, 'UTC'), interval '1 day')
    LOOP
        part := 'event_p' || to_char(d AT TIME ZONE 'UTC', 'YYYYMMDD');
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_class c
                              WHERE c.relname = part AND c.relnamespace = '@extschema@'::regnamespace);
        LOCK TABLE event_default IN ACCESS EXCLUSIVE MODE;
        IF EXISTS (SELECT 1 FROM event_default e WHERE e.at >= d AND e.at < d + interval '1 day') THEN
            -- rows of that day arrived before its partition: move them
            IF to_regclass('pg_temp._event_moving') IS NULL THEN
                CREATE TEMP TABLE _event_moving (LIKE event) ON COMMIT DROP;
            END IF;
            WITH moved AS (DELETE FROM event_default e WHERE e.at >= d AND e.at < d + interval '1 day' RETURNING e.*)
            INSERT INTO _event_moving SELECT * FROM moved;
            EXECUTE format('CREATE TABLE @extschema@.%I PARTITION OF @extschema@.event FOR VALUES FROM (%L) TO (%L)',
                           part, d, d + interval '1 day');
            EXECUTE format('CREATE INDEX %I ON @extschema@.%I USING brin (at) WITH (pages_per_range = 4, autosummarize = on)',
                           part || '_at_brin', part);
            -- rollups of events capture writes straight into the partition too
            PERFORM @extschema@.rollup_arm(format('@extschema@.%I', part)::regclass);
            INSERT INTO event SELECT * FROM _event_moving;
            TRUNCATE _event_moving;
        ELSE
            EXECUTE format('CREATE TABLE @extschema@.%I PARTITION OF @extschema@.event FOR VALUES FROM (%L) TO (%L)',
                           part, d, d + interval '1 day');
            EXECUTE format('CREATE INDEX %I ON @extschema@.%I USING brin (at) WITH (pages_per_range = 4, autosummarize = on)',
                           part || '_at_brin', part);
            PERFORM @extschema@.rollup_arm(format('@extschema@.%I', part)::regclass);
        END IF;
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

-- ---------------------------------------------------------- rollups --
-- A rollup's bucket function is total over every storable time, so no
-- source row can stop a refresh; retention keeps at most 1000 years, so
-- no stored policy can stop maintenance.

CREATE FUNCTION rollup_bucket(bucket_width interval, ts timestamptz) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'storefront_rollup_bucket' LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE;

CREATE OR REPLACE FUNCTION set_retention(relation text, keep interval)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    owner oid;
BEGIN
    IF set_retention.relation IS NULL
       OR (set_retention.relation <> 'event' AND NOT EXISTS (SELECT 1 FROM @extschema@.rollup r WHERE r.name = set_retention.relation)) THEN
        RAISE EXCEPTION 'retention applies to "event" or a rollup, not "%"', left(coalesce(set_retention.relation, 'NULL'), 64)
            USING ERRCODE = 'undefined_object';
    END IF;
    IF set_retention.relation <> 'event' THEN
        SELECT c.relowner INTO owner
        FROM @extschema@.rollup r
        JOIN pg_catalog.pg_namespace n ON n.nspname = r.target_schema
        JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = r.name || '_buckets'
        WHERE r.name = set_retention.relation;
        IF owner IS NOT NULL AND NOT pg_catalog.pg_has_role(@extschema@.calling_role(), owner, 'USAGE') THEN
            RAISE EXCEPTION 'must be owner of rollup "%"', set_retention.relation
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    IF set_retention.keep IS NULL THEN
        DELETE FROM @extschema@.retention_policy p WHERE p.relation = set_retention.relation;
        RETURN;
    END IF;
    IF set_retention.keep <= interval '0' OR set_retention.keep > interval '1000 years' THEN
        RAISE EXCEPTION 'retention must keep more than zero time and at most 1000 years'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The interval given was %s.', set_retention.keep);
    END IF;
    INSERT INTO @extschema@.retention_policy AS p (relation, keep) VALUES (set_retention.relation, set_retention.keep)
    ON CONFLICT (relation) DO UPDATE SET keep = excluded.keep;
END
$$;

-- ------------------------------------------------------------ roles --
-- A role OID that names no role (0::regrole) was a syntax error.
CREATE OR REPLACE FUNCTION grant_functions(role_name regrole, functions regprocedure[])
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

-- -------------------------------------------------- comments, grants --
COMMENT ON FUNCTION upsert_product(text, text, bigint, character, text, jsonb) IS
'Create or update a sellable SKU and its product (found or created by name within the category path, e.g. ''Apparel/Men/Shirts''); returns the SKU id. Errors: 22023 on a bad code, name, price, currency or attributes; 22003 price above max_price_cents().';
COMMENT ON FUNCTION max_price_cents() IS
'The highest price of one unit, in minor units (10^12): with at most 1,000 units a line and 100 lines an order, no order total can overflow.';
COMMENT ON FUNCTION expect_row_count(text, bigint, bigint) IS
'Internal: raise 40001 when an UPDATE that must hit expected rows hit got (the rows changed under the caller; retry).';
COMMENT ON FUNCTION restock(text, integer, text) IS
'Add qty units of a SKU at a location (default ''main'') and record the movement; returns the new on_hand. A hot-stock SKU''s units are spread over its slots. Errors: 22023 qty out of range, 23503 unknown SKU or location, 55P03 lock wait over 5s, 40001 stock changed under the call (retry).';
COMMENT ON FUNCTION place_order(bigint, jsonb, text, interval) IS
'Place an order in one transaction: validate the items ([{"sku": ..., "qty": n}, ...]; repeats merged), reserve every line or none (rows locked in SKU order), snapshot prices, write order, lines, reservations, status history and outbox, NOTIFY storefront_order_events. Same idempotency key and request: the original receipt (replayed = true). Errors: 23514 short stock (DETAIL names each SKU), 23503 unknown customer or SKU, 23505 key reused for another request, 22023 bad qty / line count / hold / SKU code, 22P02 malformed items (wrong shape, nested over 128 levels), 55P03 lock wait over 2s, 40001 stock changed under the call (retry).';
COMMENT ON FUNCTION cancel_order(bigint, text) IS
'Cancel a pending, failed or expired order, releasing any stock it holds; returns ''cancelled''. The reason (at most 500 characters) goes into the order''s event. Errors: P0002 unknown order, 55000 order paid, shipped, delivered or already cancelled, 22023 reason too long.';
COMMENT ON FUNCTION set_hot_stock(text, integer) IS
'Turn hot-stock mode on for a SKU with n slots per location (1..64), or off with 0: its stock is split over slot rows that concurrent buyers claim with SKIP LOCKED. Live holds move with their units. Waits for every transaction using the SKU''s stock to finish (the SKU row FOR UPDATE). Errors: 22023 slots out of range, 23503 unknown SKU, 55P03 lock wait over 5s.';
COMMENT ON FUNCTION time_bucket(interval, timestamp with time zone, text, timestamp with time zone, interval) IS
'time_bucket in a time zone (TimescaleDB 2.28 semantics): the offset is applied in absolute time, then buckets align to local midnight and month starts in timezone, so a day bucket spanning a DST change lasts 23 or 25 hours; at a fall-back change a bucket always starts at or before its time. A NULL origin or offset means not given. Errors: 22023 unknown time zone or bad width.';
COMMENT ON FUNCTION time_bucket(interval, date, interval) IS
'time_bucket for dates with an offset: time_bucket(width, ts - offset) + offset. Like TimescaleDB, the offset must be zero or more whole days. Errors: 22023 sub-day, negative or month offset, width not whole days or months.';
COMMENT ON FUNCTION ensure_event_partitions(interval, interval, timestamp with time zone) IS
'Create the daily partitions of storefront.event from from_time - behind to from_time + ahead (moving matching rows out of the default partition); returns how many it created. Concurrent calls take turns. Errors: 22023 window negative or over 3660 days, 22008 window outside 1970 up to 3000.';
COMMENT ON FUNCTION track_event(text, timestamp with time zone, bigint, jsonb) IS
'Record one event (kind such as ''page_view'', time from 1970 up to 3000 (UTC), customer or NULL, props object). Errors: 22023 bad kind or props, 22008 time out of range or infinite.';
COMMENT ON FUNCTION track_events(text[], timestamp with time zone[], bigint[], jsonb[]) IS
'Record many events in one call (arrays of equal length) through PostgreSQL''s COPY machinery; NULL times mean now(); props go in exactly as given. Returns how many. Errors: 22023 arrays of different length, a bad kind, props that are not objects; 22008 a time out of range (1970 up to 3000, UTC) or infinite.';
COMMENT ON FUNCTION set_retention(text, interval) IS
'Keep this much of ''event'' (whole daily partitions) or of a rollup (its buckets); NULL removes the policy. Errors: 42704 unknown relation, 22023 keep not in (0, 1000 years].';
COMMENT ON FUNCTION rollup_bucket(interval, timestamp with time zone) IS
'The bucket function of rollups: time_bucket(bucket_width, ts), but -infinity for a time whose bucket would start before the timestamp range, so no stored row can make a refresh fail.';
COMMENT ON FUNCTION notify_payload(text) IS
'Internal: the text NOTIFY sends for an order event: the event when it is under 8000 bytes, else a stub with order_id, customer_id, seq, status and "truncated": true (the outbox keeps the whole event).';

-- new functions are not PUBLIC's (as in a fresh install); the pure
-- helpers are
REVOKE ALL ON FUNCTION @extschema@.expect_row_count(text, bigint, bigint), @extschema@.notify_payload(text),
    @extschema@.max_price_cents(), @extschema@.rollup_bucket(interval, timestamp with time zone) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.max_price_cents(), @extschema@.rollup_bucket(interval, timestamp with time zone) TO PUBLIC;

-- ------------------------------------------------------------ roles --
-- Four kinds of role instead of one: app (acts for one customer at a
-- time), catalog, operations, analyst, each set up by its grant function,
-- which also records the role's kind. The app role no longer gets the
-- catalog or operations functions (upsert_product, set_sellable, restock,
-- ship_order, deliver_order, expire_reservations): an application could
-- reprice, restock and expire every pending order. The acting customer is
-- set per transaction (storefront.customer_id); row-level security on the
-- customer-facing tables shows an app role that customer's rows only.

-- The acting customer and the calling role, from the library.
CREATE  FUNCTION "acting_customer"() RETURNS bigint /* Result < Option < i64 > , ErrorReport > */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'acting_customer_wrapper';
CREATE  FUNCTION "calling_role"() RETURNS oid /* pg_sys :: Oid */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'calling_role_wrapper';
CREATE  FUNCTION "check_acting_customer"(
	"customer_id" bigint /* Option < i64 > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'check_acting_customer_wrapper';

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

CREATE OR REPLACE FUNCTION app_role_functions()
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
        '@extschema@.dashboard_funnel(timestamp with time zone, timestamp with time zone)'
    ]::text[]::regprocedure[]
$$;

CREATE OR REPLACE FUNCTION analyst_role_functions()
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

-- grant_functions() takes the role kind to record: a new signature
DROP FUNCTION grant_functions(regrole, regprocedure[]);
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

CREATE OR REPLACE FUNCTION grant_app_role(role_name regrole)
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

CREATE OR REPLACE FUNCTION grant_analyst_role(role_name regrole)
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
END
$$;

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

-- Roles granted by 0.1.0's functions are recorded with the kind those
-- functions gave them: an analyst keeps reading every row under row-level
-- security; an app role keeps acting without naming its customer until
-- enable_row_security(). Privileges are left as they are: a NOTICE names
-- each app role that still holds catalog or operations functions (run
-- grant_catalog_role or grant_operations_role for roles meant to have
-- them, REVOKE for the others).
DO $$
DECLARE
    app record;
BEGIN
    -- granted directly (not through predefined roles such as pg_read_all_data)
    INSERT INTO @extschema@.role_kind (role_name, kind)
    SELECT r.rolname, 'analyst'
    FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a, pg_catalog.pg_roles r
    WHERE c.oid = '@extschema@.orders'::regclass AND a.privilege_type = 'SELECT'
      AND r.oid = a.grantee AND NOT r.rolsuper AND r.oid <> c.relowner
    ON CONFLICT DO NOTHING;
    INSERT INTO @extschema@.role_kind (role_name, kind)
    SELECT r.rolname, 'app'
    FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a, pg_catalog.pg_roles r
    WHERE p.oid = '@extschema@.place_order(bigint, jsonb, text, interval)'::regprocedure
      AND a.privilege_type = 'EXECUTE' AND r.oid = a.grantee AND NOT r.rolsuper AND r.oid <> p.proowner
      AND NOT EXISTS (SELECT 1 FROM @extschema@.role_kind k WHERE k.role_name = r.rolname)
    ON CONFLICT DO NOTHING;
    FOR app IN
        SELECT k.role_name FROM @extschema@.role_kind k
        WHERE k.kind = 'app'
          AND pg_catalog.has_function_privilege(k.role_name::regrole::oid,
                                                '@extschema@.upsert_product(text, text, bigint, character, text, jsonb)', 'EXECUTE')
    LOOP
        RAISE NOTICE 'role % can still reprice, restock, ship and expire orders (granted by 0.1.0''s grant_app_role)', app.role_name
            USING HINT = 'Grant it the catalog or operations role it needs, and REVOKE the rest.';
    END LOOP;
END
$$;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.role_kind', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.config', '');

-- ---------------------------------------------------------- reading --
-- Reads for a shop's front end: the catalog with keyset pagination, one
-- product, an order with its lines, its events by seq, whose order it is,
-- and the pipeline at a glance. The readers of an order act for its
-- customer, and so does order_timeline() now.
CREATE OR REPLACE FUNCTION raise_unknown_sku(sku text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'product SKU "%" does not exist',
        coalesce(CASE WHEN length(sku) > 64 THEN left(sku, 64) || '...' ELSE sku END, 'NULL')
        USING ERRCODE = 'foreign_key_violation',
              HINT = 'Create it with storefront.upsert_product().';
END
$$;

CREATE FUNCTION products(search text DEFAULT NULL, after_sku text DEFAULT NULL, page_size integer DEFAULT 50)
RETURNS TABLE (sku text, product text, price_cents bigint, currency text, category text, attributes jsonb,
               available bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_pattern text;
BEGIN
    IF page_size IS NULL OR page_size < 1 OR page_size > 200 THEN
        RAISE EXCEPTION 'page size must be between 1 and 200'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The page size given was %s.', coalesce(page_size::text, 'NULL'));
    END IF;
    IF length(search) > 200 OR length(after_sku) > 64 THEN
        RAISE EXCEPTION 'search term or page key is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A search term has at most 200 characters, a page key (a SKU code) at most 64.';
    END IF;
    -- the term matches literally: escape LIKE's wildcards
    v_pattern := '%' || replace(replace(replace(btrim(search), '\', '\\'), '%', '\%'), '_', '\_') || '%';
    RETURN QUERY
        SELECT s.code, p.name, s.price_cents, s.currency::text, c.slug, s.attributes,
               coalesce((SELECT sum(i.on_hand - i.reserved) FROM inventory i WHERE i.sku_id = s.sku_id), 0)
               + coalesce((SELECT sum(x.on_hand - x.reserved) FROM inventory_slot x WHERE x.sku_id = s.sku_id), 0)
        FROM sku s
        JOIN product p ON p.product_id = s.product_id
        LEFT JOIN category c ON c.category_id = p.category_id
        WHERE s.sellable
          AND (after_sku IS NULL OR s.code > after_sku)
          AND (search IS NULL OR btrim(search) = ''
               OR s.code ILIKE v_pattern OR p.name ILIKE v_pattern OR c.slug ILIKE v_pattern)
        ORDER BY s.code
        LIMIT page_size;
END
$$;

CREATE FUNCTION product(sku text)
RETURNS TABLE (sku text, product text, price_cents bigint, currency text, category text, attributes jsonb,
               available bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
    -- SQL, not PL/pgSQL: PL/pgSQL refuses a parameter named like an output
    -- column (sku) at its first call
    SELECT raise_unknown_sku($1) WHERE NOT EXISTS (SELECT 1 FROM sku s WHERE s.code = btrim($1));
    SELECT s.code, p.name, s.price_cents, s.currency::text, c.slug, s.attributes,
           coalesce((SELECT sum(i.on_hand - i.reserved) FROM inventory i WHERE i.sku_id = s.sku_id), 0)
           + coalesce((SELECT sum(x.on_hand - x.reserved) FROM inventory_slot x WHERE x.sku_id = s.sku_id), 0)
    FROM sku s
    JOIN product p ON p.product_id = s.product_id
    LEFT JOIN category c ON c.category_id = p.category_id
    WHERE s.code = btrim($1);
$$;

CREATE FUNCTION order_customer(order_id bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_customer bigint;
BEGIN
    SELECT o.customer_id INTO v_customer FROM orders o WHERE o.order_id = order_customer.order_id;
    IF v_customer IS NULL THEN
        RAISE EXCEPTION 'order % does not exist', coalesce(order_customer.order_id::text, 'NULL')
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN v_customer;
END
$$;

CREATE OR REPLACE FUNCTION order_timeline(order_id bigint)
RETURNS TABLE (at timestamptz, status text, detail jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_customer bigint;
BEGIN
    v_customer := order_customer(order_timeline.order_id);
    PERFORM check_acting_customer(v_customer);
    RETURN QUERY
        SELECT h.at, h.status, h.detail
        FROM order_status_history h
        WHERE h.customer_id = v_customer AND h.order_id = order_timeline.order_id
        ORDER BY h.seq;
END
$$;

CREATE FUNCTION order_details(order_id bigint)
RETURNS TABLE (order_id bigint, customer_id bigint, status text, total_cents bigint, currency text,
               placed_at timestamptz, updated_at timestamptz, expires_at timestamptz, lines jsonb)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
    -- P0002 for an unknown order, 42501 for another customer's
    SELECT check_acting_customer(order_customer($1));
    SELECT o.order_id, o.customer_id, o.status, o.total_cents, o.currency::text, o.placed_at, o.updated_at,
           (SELECT max(r.expires_at) FROM reservation r
            WHERE r.customer_id = o.customer_id AND r.order_id = o.order_id AND r.state = 'held'),
           (SELECT jsonb_agg(jsonb_build_object('line_no', l.line_no, 'sku', s.code, 'qty', l.qty,
                                                'unit_price_cents', l.unit_price_cents) ORDER BY l.line_no)
            FROM order_line l JOIN sku s ON s.sku_id = l.sku_id
            WHERE l.customer_id = o.customer_id AND l.order_id = o.order_id)
    FROM orders o
    WHERE o.order_id = $1 AND o.customer_id = order_customer($1);
$$;

CREATE FUNCTION order_events(order_id bigint, after_seq integer DEFAULT 0)
RETURNS TABLE (seq integer, at timestamptz, status text, detail jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_customer bigint;
BEGIN
    IF after_seq IS NULL OR after_seq < 0 THEN
        RAISE EXCEPTION 'after_seq must be zero or more'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The after_seq given was %s.', coalesce(after_seq::text, 'NULL'));
    END IF;
    v_customer := order_customer(order_events.order_id);
    PERFORM check_acting_customer(v_customer);
    RETURN QUERY
        SELECT h.seq, h.at, h.status, h.detail
        FROM order_status_history h
        WHERE h.customer_id = v_customer AND h.order_id = order_events.order_id AND h.seq > after_seq
        ORDER BY h.seq;
END
$$;

CREATE FUNCTION pipeline_status()
RETURNS TABLE (pending_holds bigint, relay_queue bigint, oldest_queued_at timestamptz, rollup_lag interval)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
BEGIN ATOMIC
    SELECT (SELECT count(*) FROM reservation r WHERE r.state = 'held'),
           (SELECT count(*) FROM order_event_queue),
           (SELECT min(q.queued_at) FROM order_event_queue q),
           (SELECT max(now() - r.watermark) FILTER (WHERE r.watermark > '-infinity') FROM rollup r);
END;

COMMENT ON FUNCTION grant_app_role(regrole) IS
'Grant an application role what it needs to act for customers: USAGE on the schema, EXECUTE on the functions listed by app_role_functions() (orders, payments, cancellation, reading orders and the catalog, accounts, events) and SELECT on the customer-facing tables (customer without password_hash), whose rows row-level security limits to the acting customer. Records the role as an app role. Idempotent; returns the privileges granted. Errors: 22004 NULL role, 42704 unknown role.';
COMMENT ON FUNCTION grant_catalog_role(regrole) IS
'Grant a catalog role USAGE on the schema and EXECUTE on the functions listed by catalog_role_functions(): products, prices, sellability, locations, stock and hot-stock mode. Records the role as a catalog role. Idempotent; returns the privileges granted.';
COMMENT ON FUNCTION grant_operations_role(regrole) IS
'Grant an operations role USAGE on the schema and EXECUTE on the functions listed by operations_role_functions(): ship, deliver, cancel, expire, read any order, the event relay, maintenance, invariants and dashboards. Records the role as an operations role (it acts for every customer). Idempotent; returns the privileges granted.';
COMMENT ON FUNCTION grant_analyst_role(regrole) IS
'Grant a read-only analyst role USAGE on the schema, SELECT on the store''s tables (customer without password_hash) and EXECUTE on the reporting functions listed by analyst_role_functions(). Records the role as an analyst (row-level security shows it every row). Idempotent; returns the privileges granted. Errors: 22004 NULL role, 42704 unknown role.';
COMMENT ON FUNCTION grant_functions(regrole, regprocedure[], text) IS
'Grant a role USAGE on the schema and EXECUTE on the routines given, and record its kind (app, catalog, operations, analyst; NULL records nothing); returns the privileges granted. The building block of the grant_*_role() functions. Errors: 22004 NULL role, 42704 unknown role, 22023 unknown kind.';
COMMENT ON FUNCTION grant_table_reads(regrole, regclass[]) IS
'Internal: grant SELECT on the tables given (the customer table without password_hash); returns the privileges granted.';
COMMENT ON FUNCTION app_role_functions() IS
'The functions grant_app_role() grants EXECUTE on.';
COMMENT ON FUNCTION catalog_role_functions() IS
'The functions grant_catalog_role() grants EXECUTE on.';
COMMENT ON FUNCTION operations_role_functions() IS
'The functions grant_operations_role() grants EXECUTE on.';
COMMENT ON FUNCTION enable_row_security() IS
'Make every application session name its customer: a role granted with grant_app_role() (and no catalog or operations role) then gets 42501 from functions acting for a customer unless storefront.customer_id is set in the transaction. Returns ''on''.';
COMMENT ON FUNCTION disable_row_security() IS
'Turn enable_row_security() off: application sessions may again act without naming a customer (direct reads stay limited by row-level security). Returns ''off''.';
COMMENT ON FUNCTION sees_every_customer() IS
'Whether the calling role is a staff role (catalog, operations or analyst), whose row-level security policies show every customer''s rows.';
COMMENT ON FUNCTION acting_customer() IS
'The customer this transaction acts for (the storefront.customer_id setting), or NULL. Errors: 22023 a setting that is not a customer id.';
COMMENT ON FUNCTION check_acting_customer(bigint) IS
'Internal: raise 42501 unless the caller may act for this customer (the acting customer, or no acting customer where the session need not name one).';
COMMENT ON FUNCTION calling_role() IS
'The calling role as SET ROLE (or the login) left it, which SECURITY DEFINER functions do not change.';
COMMENT ON FUNCTION products(text, text, integer) IS
'Sellable SKUs with product, category path and units available, in SKU order: page_size rows (1..200) after after_sku (keyset pagination), matching search (SKU code, product name or category path, case-insensitive) when given. Errors: 22023 page size out of range, search over 200 or page key over 64 characters.';
COMMENT ON FUNCTION product(text) IS
'One SKU as products() shows it. Errors: 23503 unknown SKU.';
COMMENT ON FUNCTION order_details(bigint) IS
'An order as its customer sees it: status, total, currency, times, the hold''s end while pending, and its lines as JSON [{line_no, sku, qty, unit_price_cents}]. Errors: P0002 unknown order, 42501 another customer''s order.';
COMMENT ON FUNCTION order_events(bigint, integer) IS
'The order''s status changes after seq after_seq (default all), with their seq numbers, oldest first; a listener that reconnects reads what it missed from here. Errors: P0002 unknown order, 42501 another customer''s order, 22023 after_seq < 0.';
COMMENT ON FUNCTION order_customer(bigint) IS
'The customer an order belongs to. Errors: P0002 unknown order.';
COMMENT ON FUNCTION order_timeline(bigint) IS
'Every status change of an order, oldest first: time, status and detail. Errors: P0002 unknown order, 42501 another customer''s order.';
COMMENT ON FUNCTION pipeline_status() IS
'The order pipeline at a glance: live holds, events waiting for the relay and the oldest one''s time, and how far the most lagging rollup''s watermark is behind now.';
REVOKE ALL ON FUNCTION acting_customer(), calling_role(), check_acting_customer(bigint), sees_every_customer(),
    catalog_role_functions(), operations_role_functions(), grant_functions(regrole, regprocedure[], text),
    grant_table_reads(regrole, regclass[]), grant_catalog_role(regrole), grant_operations_role(regrole),
    enable_row_security(), disable_row_security(), products(text, text, integer), product(text),
    order_details(bigint), order_events(bigint, integer), order_customer(bigint), pipeline_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION acting_customer(), calling_role(), sees_every_customer() TO PUBLIC;
REVOKE ALL ON TABLE role_kind, config FROM PUBLIC;

-- -------------------------------------------------- rollups, maintenance --
-- Rollups are refreshed by what changed, not by the span it covers:
-- * late inserts are aggregated per bucket at write time into
--   <name>_deltas and merged at refresh; late updates, deletes and
--   truncates queue exactly the buckets they touched (rollup_pending), which
--   the refresh re-aggregates. rollup_invalidation (one [min, max] range per
--   statement) goes; its ranges are queued as dirty buckets below.
-- * the capture triggers are one statement trigger per operation on the
--   source and on every partition (writes straight into a partition were
--   missed), plus TRUNCATE (was missed); the source is kept by OID (a
--   rename broke the rollup).
-- * refreshes and capture run every statement on user tables as the
--   bucket table's owner in a security-restricted operation; create_rollup
--   refuses a schema owned by another role; the default schema
--   storefront_rollups belongs to the extension.
-- * run_maintenance becomes a procedure that commits after each step and
--   logs each step's outcome (maintenance_log); a failing step no longer
--   stops the others. pg_cron jobs must now run
--   CALL storefront.run_maintenance() (a NOTICE below names the jobs).

-- the default rollup schema: adopted when 0.1.0's create_rollup made it
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'storefront_rollups') THEN
        ALTER SCHEMA storefront_rollups OWNER TO CURRENT_USER;
        ALTER EXTENSION storefront ADD SCHEMA storefront_rollups;
    ELSE
        CREATE SCHEMA storefront_rollups;
    END IF;
END
$$;
COMMENT ON SCHEMA storefront_rollups IS 'Rollups'' bucket tables and views (create_rollup''s default schema).';
GRANT USAGE ON SCHEMA storefront_rollups TO PUBLIC;

-- sources by OID; a rollup whose source is gone cannot be kept
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT x.name, x.source FROM @extschema@.rollup x WHERE pg_catalog.to_regclass(x.source) IS NULL LOOP
        RAISE EXCEPTION 'the source % of rollup "%" does not exist', r.source, r.name
            USING ERRCODE = 'undefined_table',
                  HINT = 'Drop the rollup with 0.1.0''s drop_rollup(), then update.';
    END LOOP;
END
$$;
ALTER TABLE @extschema@.rollup ALTER COLUMN source TYPE regclass USING pg_catalog.to_regclass(source);

CREATE TABLE rollup_pending (
    rollup_name text        NOT NULL REFERENCES rollup (name) ON DELETE CASCADE,
    bucket      timestamptz NOT NULL,
    dirty       boolean     NOT NULL,
    PRIMARY KEY (rollup_name, bucket)
);

CREATE SEQUENCE maintenance_run_seq;
CREATE TABLE maintenance_log (
    run_id      bigint      NOT NULL,
    step        text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    ok          boolean     NOT NULL,
    rows        bigint,
    sqlstate    text,
    message     text,
    PRIMARY KEY (run_id, step)
);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.rollup_pending', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.maintenance_log', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.maintenance_run_seq', '');

-- rollup_watermark() is called by every reader of a real-time view
-- create_rollup, refresh_rollup and drop_rollup run as the extension's owner now
CREATE OR REPLACE FUNCTION "create_rollup"(
	"name" TEXT,
	"source" regclass,
	"time_column" TEXT,
	"bucket_width" interval,
	"group_columns" TEXT[] DEFAULT '{}',
	"aggregates" TEXT[] DEFAULT '{count}',
	"schema" TEXT DEFAULT 'storefront_rollups'
) RETURNS TEXT
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'create_rollup_wrapper';
CREATE OR REPLACE FUNCTION "refresh_rollup"(
	"name" TEXT,
	"upto" timestamp with time zone DEFAULT now()
) RETURNS bigint
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'refresh_rollup_wrapper';
CREATE OR REPLACE FUNCTION "drop_rollup"(
	"name" TEXT
) RETURNS bool
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'drop_rollup_wrapper';
CREATE FUNCTION "invalidate_rollup"(
	"name" TEXT,
	"from_time" timestamp with time zone DEFAULT '-infinity',
	"to_time" timestamp with time zone DEFAULT 'infinity'
) RETURNS bigint
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'invalidate_rollup_wrapper';
CREATE FUNCTION "rollup_advance"(
	"name" TEXT,
	"upto" timestamp with time zone DEFAULT now()
) RETURNS bigint
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'rollup_advance_wrapper';
CREATE FUNCTION "rollup_pending_step"(
	"name" TEXT,
	"batch" INT DEFAULT 1000
) RETURNS bigint
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'rollup_pending_step_wrapper';
CREATE FUNCTION "rollup_drop_buckets"(
	"name" TEXT,
	"cutoff" timestamp with time zone
) RETURNS bigint
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'rollup_drop_buckets_wrapper';
CREATE FUNCTION "rollup_repair"(
	"name" TEXT
) RETURNS bool
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'rollup_repair_wrapper';
CREATE FUNCTION "rollup_arm"(
	"relation" regclass
) RETURNS bool
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'rollup_arm_wrapper';
CREATE FUNCTION "maintenance_begin"() RETURNS bigint
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'maintenance_begin_wrapper';
CREATE FUNCTION rollup_capture()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'rollup_capture_wrapper';
ALTER FUNCTION rollup_capture() SECURITY DEFINER SET search_path = @extschema@, pg_temp;

-- retention: one relation per call (a maintenance step); rollup buckets deleted as the rollup's owner
CREATE FUNCTION apply_retention_to(relation text, as_of timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p       record;
    part    record;
    cutoff  timestamptz;
    n       bigint := 0;
BEGIN
    IF as_of IS NULL OR NOT pg_catalog.isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be a finite time' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO p FROM @extschema@.retention_policy rp WHERE rp.relation = apply_retention_to.relation FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    cutoff := as_of - p.keep;
    IF p.relation = 'event' THEN
        FOR part IN
            SELECT c.oid::regclass AS rel,
                   (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS upper
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = '@extschema@.event'::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
            ORDER BY 2
        LOOP
            CONTINUE WHEN part.upper IS NULL OR part.upper > cutoff;
            EXECUTE format('DROP TABLE %s', part.rel);
            n := n + 1;
        END LOOP;
        DELETE FROM @extschema@.event_default e WHERE e.at < cutoff;
    ELSE
        n := @extschema@.rollup_drop_buckets(p.relation, cutoff);
    END IF;
    UPDATE @extschema@.retention_policy rp SET horizon = greatest(rp.horizon, cutoff) WHERE rp.relation = p.relation;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION apply_retention(as_of timestamptz DEFAULT now())
RETURNS TABLE (relation text, dropped bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p record;
BEGIN
    FOR p IN SELECT rp.relation FROM @extschema@.retention_policy rp ORDER BY 1 LOOP
        relation := p.relation;
        dropped := @extschema@.apply_retention_to(p.relation, as_of);
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE FUNCTION maintenance_rollups()
RETURNS TABLE (name text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
    WITH RECURSIVE d AS (
        SELECT x.name, 0 AS depth FROM @extschema@.rollup x WHERE x.source_rollup IS NULL
        UNION ALL
        SELECT x.name, d.depth + 1 FROM @extschema@.rollup x JOIN d ON x.source_rollup = d.name
    )
    SELECT d.name FROM d GROUP BY d.name ORDER BY max(d.depth), d.name
$$;

CREATE FUNCTION maintenance_retention_relations()
RETURNS TABLE (relation text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$ SELECT p.relation FROM @extschema@.retention_policy p ORDER BY 1 $$;

-- Record one maintenance step (and say it: NOTICE, or WARNING when it
-- failed). Log rows older than 30 days go at the start of each run.
CREATE FUNCTION maintenance_note(run_id bigint, step text, started_at timestamptz, ok boolean, rows bigint,
                                 sqlstate text DEFAULT NULL, message text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
DECLARE
    ms numeric := round(extract(epoch FROM clock_timestamp() - started_at) * 1000, 1);
BEGIN
    INSERT INTO @extschema@.maintenance_log AS l (run_id, step, started_at, finished_at, ok, rows, sqlstate, message)
    VALUES (run_id, left(step, 200), started_at, clock_timestamp(), ok, rows, sqlstate, left(message, 2000))
    ON CONFLICT ON CONSTRAINT maintenance_log_pkey DO UPDATE
        SET finished_at = excluded.finished_at, ok = l.ok AND excluded.ok,
            rows = excluded.rows, sqlstate = excluded.sqlstate, message = excluded.message;
    IF ok THEN
        RAISE NOTICE 'maintenance %: % done (% rows, % ms)', run_id, step, coalesce(rows, 0), ms;
    ELSE
        RAISE WARNING 'maintenance %: % failed: % (SQLSTATE %)', run_id, step, message, sqlstate;
    END IF;
END
$$;

CREATE FUNCTION maintenance_report(runs integer DEFAULT 1)
RETURNS TABLE (run_id bigint, step text, started_at timestamptz, duration interval, ok boolean, rows bigint,
               sqlstate text, message text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
    SELECT l.run_id, l.step, l.started_at, l.finished_at - l.started_at, l.ok, l.rows, l.sqlstate, l.message
    FROM @extschema@.maintenance_log l
    WHERE l.run_id IN (SELECT DISTINCT x.run_id FROM @extschema@.maintenance_log x
                       ORDER BY x.run_id DESC LIMIT greatest(coalesce(runs, 1), 0))
    ORDER BY l.run_id DESC, l.started_at, l.step
$$;

DROP FUNCTION run_maintenance(timestamp with time zone);
-- Everything periodic: create event partitions ahead, bring every rollup
-- up to date (finer before coarser: advance the watermark, then queued
-- buckets in batches), apply each retention policy. Each step commits on
-- its own and waits at most lock_wait for a lock; a step that fails is
-- logged (maintenance_log, a WARNING) and the others still run. Schedule
-- it with pg_cron: CALL storefront.run_maintenance().
--
-- A procedure that commits cannot have a SET clause, so this one pins its
-- search_path with set_config() at the start of every transaction and
-- qualifies every name.
CREATE PROCEDURE run_maintenance(as_of timestamptz DEFAULT NULL, lock_wait interval DEFAULT '10 seconds',
                                 batch integer DEFAULT 1000)
LANGUAGE plpgsql
AS $$
DECLARE
    run     pg_catalog.int8;
    t       pg_catalog.timestamptz;
    wait_ms pg_catalog.text;
    r       record;
    n       pg_catalog.int8;
    total   pg_catalog.int8;
    rounds  pg_catalog.int4;
    started pg_catalog.timestamptz;
    state   pg_catalog.text;
    msg     pg_catalog.text;
    failed  pg_catalog.bool;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    run := storefront.maintenance_begin();
    IF lock_wait IS NULL OR lock_wait OPERATOR(pg_catalog.<) interval '0' OR lock_wait OPERATOR(pg_catalog.>) interval '1 hour' THEN
        RAISE EXCEPTION 'lock_wait must be between 0 and 1 hour' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF batch IS NULL OR batch OPERATOR(pg_catalog.<) 1 OR batch OPERATOR(pg_catalog.>) 100000 THEN
        RAISE EXCEPTION 'batch must be between 1 and 100000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF as_of IS NOT NULL AND NOT pg_catalog.isfinite(as_of) THEN
        RAISE EXCEPTION 'as_of must be a finite time' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t := coalesce(as_of, pg_catalog.now());
    -- lock_timeout takes milliseconds; 0 waits forever, as lock_timeout does
    wait_ms := pg_catalog.ceil(pg_catalog.date_part('epoch', lock_wait) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8::pg_catalog.text;
    COMMIT;

    -- 1. event partitions ahead
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM pg_catalog.set_config('lock_timeout', wait_ms, true);
    started := pg_catalog.clock_timestamp();
    BEGIN
        n := storefront.ensure_event_partitions(from_time => t);
        PERFORM storefront.maintenance_note(run, 'partitions', started, true, n);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
        PERFORM storefront.maintenance_note(run, 'partitions', started, false, NULL, state, msg);
    END;
    COMMIT;

    -- 2. each rollup: advance, then queued buckets in batches
    FOR r IN SELECT m.name FROM storefront.maintenance_rollups() m LOOP
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        PERFORM pg_catalog.set_config('lock_timeout', wait_ms, true);
        started := pg_catalog.clock_timestamp();
        failed := false;
        state := NULL;
        msg := NULL;
        BEGIN
            total := storefront.rollup_advance(r.name, t);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            failed := true;
            total := NULL;
        END;
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        rounds := 0;
        WHILE NOT failed LOOP
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            PERFORM pg_catalog.set_config('lock_timeout', wait_ms, true);
            BEGIN
                n := storefront.rollup_pending_step(r.name, batch);
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
                failed := true;
                n := 0;
            END;
            COMMIT;
            -- COMMIT ended the transaction the search_path was set for:
            -- set it again, and name each operator's schema all the same
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            total := total OPERATOR(pg_catalog.+) n;
            rounds := rounds OPERATOR(pg_catalog.+) 1;
            -- late data arriving faster than it is merged waits for the next run
            EXIT WHEN n OPERATOR(pg_catalog.<) batch OR rounds OPERATOR(pg_catalog.>=) 1000;
        END LOOP;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        PERFORM storefront.maintenance_note(run, 'rollup ' OPERATOR(pg_catalog.||) r.name, started, NOT failed, total, state, msg);
        COMMIT;
    END LOOP;

    -- 3. retention, one policy per transaction
    FOR r IN SELECT p.relation FROM storefront.maintenance_retention_relations() p LOOP
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        PERFORM pg_catalog.set_config('lock_timeout', wait_ms, true);
        started := pg_catalog.clock_timestamp();
        BEGIN
            n := storefront.apply_retention_to(r.relation, t);
            PERFORM storefront.maintenance_note(run, 'retention ' OPERATOR(pg_catalog.||) r.relation, started, true, n);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            PERFORM storefront.maintenance_note(run, 'retention ' OPERATOR(pg_catalog.||) r.relation, started, false, NULL, state, msg);
        END;
        COMMIT;
    END LOOP;
END
$$;

-- 0.1.0's rollups: delta tables, keys that treat NULL groups as equal,
-- Grafana-shaped views, the new capture triggers; then 0.1.0's logged
-- ranges become queued dirty buckets
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT m.name, x.target_schema FROM @extschema@.maintenance_rollups() m
             JOIN @extschema@.rollup x ON x.name = m.name LOOP
        PERFORM @extschema@.rollup_repair(r.name);
        -- what the repair made here became a member of the extension; as in
        -- a fresh install (create_rollup makes them), it is the rollup's
        IF EXISTS (SELECT FROM pg_catalog.pg_depend d
                   WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype = 'e'
                     AND d.objid = pg_catalog.to_regclass(pg_catalog.format('%I.%I', r.target_schema, r.name || '_deltas'))) THEN
            EXECUTE pg_catalog.format('ALTER EXTENSION storefront DROP TABLE %I.%I', r.target_schema, r.name || '_deltas');
        END IF;
        IF EXISTS (SELECT FROM pg_catalog.pg_depend d
                   WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype = 'e'
                     AND d.objid = pg_catalog.to_regclass(pg_catalog.format('%I.%I', r.target_schema, r.name || '_series'))) THEN
            EXECUTE pg_catalog.format('ALTER EXTENSION storefront DROP VIEW %I.%I', r.target_schema, r.name || '_series');
        END IF;
        IF EXISTS (SELECT FROM pg_catalog.pg_depend d
                   WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype = 'e'
                     AND d.objid = pg_catalog.to_regclass(pg_catalog.format('%I.%I', r.target_schema, r.name || '_buckets_key'))) THEN
            EXECUTE pg_catalog.format('ALTER EXTENSION storefront DROP INDEX %I.%I', r.target_schema, r.name || '_buckets_key');
        END IF;
    END LOOP;
    FOR r IN SELECT i.rollup_name, i.lo, i.hi FROM @extschema@.rollup_invalidation i ORDER BY i.invalidation_id LOOP
        PERFORM @extschema@.invalidate_rollup(r.rollup_name, r.lo, r.hi + interval '1 microsecond');
    END LOOP;
END
$$;
-- out of the extension's configuration (pg_dump's list) first, then gone
ALTER EXTENSION storefront DROP TABLE @extschema@.rollup_invalidation;
ALTER EXTENSION storefront DROP SEQUENCE @extschema@.rollup_invalidation_invalidation_id_seq;
DROP TABLE @extschema@.rollup_invalidation;
DROP FUNCTION @extschema@.rollup_invalidate();

-- pg_cron jobs that SELECT the old function fail from now on: say which
DO $$
DECLARE
    j record;
BEGIN
    IF pg_catalog.to_regclass('cron.job') IS NOT NULL THEN
        FOR j IN EXECUTE $q$SELECT jobid, jobname, command FROM cron.job WHERE command ~* 'run_maintenance'$q$ LOOP
            RAISE NOTICE 'pg_cron job % (%) runs "%": run_maintenance is a procedure now; change the command to CALL storefront.run_maintenance()',
                j.jobid, coalesce(j.jobname, 'unnamed'), j.command;
        END LOOP;
    END IF;
END
$$;

COMMENT ON FUNCTION set_retention(text, interval) IS
'Keep this much of ''event'' (whole daily partitions) or of a rollup (its buckets; the rollup''s owner only); NULL removes the policy. Errors: 42704 unknown relation, 22023 keep not in (0, 1000 years], 42501 not the rollup''s owner.';
COMMENT ON FUNCTION apply_retention(timestamp with time zone) IS
'Apply every retention policy as of as_of, in one transaction: event partitions whose range ended, rollup buckets before the cutoff. Returns what it dropped per relation.';
COMMENT ON FUNCTION apply_retention_to(text, timestamp with time zone) IS
'Apply one relation''s retention policy as of as_of (a step of run_maintenance). Returns the partitions or bucket rows dropped, NULL without a policy.';
COMMENT ON PROCEDURE run_maintenance(timestamp with time zone, interval, integer) IS
'Periodic maintenance for pg_cron (CALL it): event partitions ahead, every rollup brought up to date (finer first), retention; each step in its own transaction, waiting at most lock_wait for a lock; a failing step is logged and the rest run. Errors: 25001 inside a transaction block, 22023 bad arguments.';
COMMENT ON FUNCTION maintenance_begin() IS
'Internal (run_maintenance): refuse a transaction block, trim the log, return the run''s id.';
COMMENT ON FUNCTION maintenance_note(bigint, text, timestamp with time zone, boolean, bigint, text, text) IS
'Internal (run_maintenance): log one step and say it (NOTICE, or WARNING when it failed).';
COMMENT ON FUNCTION maintenance_rollups() IS
'Internal (run_maintenance): rollups in refresh order, finer before coarser.';
COMMENT ON FUNCTION maintenance_retention_relations() IS
'Internal (run_maintenance): the relations with a retention policy.';
COMMENT ON FUNCTION maintenance_report(integer) IS
'The steps of the last runs of run_maintenance: when, how long, rows, and the SQLSTATE and message of a failure.';
COMMENT ON FUNCTION create_rollup(text, regclass, text, interval, text[], text[], text) IS
'Define a rollup of a table (or of a finer rollup) in buckets of bucket_width, grouped by group_columns, keeping aggregates (count, sum(c), min(c), max(c), avg(c)). Creates schema.name_buckets, name_deltas, the real-time view schema.name and the Grafana view name_series, owned by the calling role. Errors: 22023 bad name, width, aggregate or source kind, 42P01 unknown source, 42703 unknown column, 23505 name taken, 42501 no SELECT or TRIGGER on the source, or a schema owned by another role.';
COMMENT ON FUNCTION refresh_rollup(text, timestamp with time zone) IS
'Materialize a rollup''s complete buckets up to upto, fold in late inserts and re-aggregate buckets that late updates and deletes touched, in the caller''s transaction; returns the bucket rows written. Errors: 42704 unknown rollup, 0A000 under REPEATABLE READ or SERIALIZABLE.';
COMMENT ON FUNCTION drop_rollup(text) IS
'Drop a rollup (views, tables, queued buckets, policy, and source triggers no other rollup needs). Errors: 42704 unknown rollup, 2BP01 a coarser rollup is built on it, 42501 not its owner.';
COMMENT ON FUNCTION invalidate_rollup(text, timestamp with time zone, timestamp with time zone) IS
'Queue every bucket of a rollup that source times in [from_time, to_time) touch for re-aggregation at the next refresh, after changes the capture triggers cannot see (ATTACH or DETACH PARTITION, triggers disabled). Returns the buckets queued. Errors: 42704 unknown rollup.';
COMMENT ON FUNCTION rollup_advance(text, timestamp with time zone) IS
'A step of run_maintenance: advance a rollup''s watermark to upto; returns the bucket rows written.';
COMMENT ON FUNCTION rollup_pending_step(text, integer) IS
'A step of run_maintenance: claim up to batch queued buckets of a rollup (skipping any another refresh holds) and bring them up to date; returns the buckets claimed.';
COMMENT ON FUNCTION rollup_drop_buckets(text, timestamp with time zone) IS
'Internal (retention): delete a rollup''s buckets before cutoff, as the rollup''s owner.';
COMMENT ON FUNCTION rollup_repair(text) IS
'Internal (upgrades): bring a rollup''s run-time objects up to this version; safe to repeat.';
COMMENT ON FUNCTION rollup_arm(regclass) IS
'Internal (ensure_event_partitions): put the capture triggers on a new partition of a rollup source.';
COMMENT ON FUNCTION rollup_capture() IS
'Internal: statement trigger on rollup sources and their partitions; late inserts become delta rows, late updates, deletes and truncates queue their buckets.';
COMMENT ON FUNCTION grant_operations_role(regrole) IS
'Grant an operations role USAGE on the schema and EXECUTE on the functions listed by operations_role_functions(): ship, deliver, cancel, expire, read any order, the event relay, maintenance and rollups, invariants and dashboards; and SELECT on storefront.event (a rollup reads its source as its owner). Records the role as an operations role (it acts for every customer). Idempotent; returns the privileges granted.';
COMMENT ON TABLE rollup_pending IS 'Rollup buckets changed behind the watermark, brought up to date by the next refresh.';
COMMENT ON TABLE maintenance_log IS 'Each step of each run_maintenance() run: rows affected, or the error that stopped it.';

-- as in a fresh install: nothing new is PUBLIC's but what the real-time
-- views call
REVOKE ALL ON FUNCTION invalidate_rollup(text, timestamp with time zone, timestamp with time zone),
    rollup_advance(text, timestamp with time zone), rollup_pending_step(text, integer),
    rollup_drop_buckets(text, timestamp with time zone), rollup_repair(text), rollup_arm(regclass),
    maintenance_begin(), rollup_capture(), apply_retention_to(text, timestamp with time zone),
    maintenance_rollups(), maintenance_retention_relations(),
    maintenance_note(bigint, text, timestamp with time zone, boolean, bigint, text, text),
    maintenance_report(integer) FROM PUBLIC;
REVOKE ALL ON PROCEDURE run_maintenance(timestamp with time zone, interval, integer) FROM PUBLIC;
REVOKE ALL ON TABLE rollup_pending, maintenance_log FROM PUBLIC;
REVOKE ALL ON SEQUENCE maintenance_run_seq FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rollup_watermark(text) TO PUBLIC;

-- -------------------------------------------------------- warehouse --
-- The warehouse (schema storefront_dw): a star schema fed by
-- load_warehouse(), SCD Type 2 dimensions merged by scd2_upsert(), report
-- views; and customer regions (customer.region, set_customer_region()),
-- which the customer dimension versions.
--
-- The dimensions' exclusion constraints need btree_gist, which 0.2.0's
-- control file now requires. ALTER EXTENSION ... UPDATE checks a new
-- version's requirements and records the dependency, but it has no
-- CASCADE: when btree_gist is not installed in the database, PostgreSQL
-- stops the update before this script runs ('required extension
-- "btree_gist" is not installed'), and nothing changes. Run
-- CREATE EXTENSION btree_gist; first (it ships with PostgreSQL's contrib).

-- customers have a region and a last-change time
ALTER TABLE @extschema@.customer
    ADD COLUMN region text CHECK (length(region) BETWEEN 1 AND 64),
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

CREATE FUNCTION set_customer_region(customer_id bigint, region text)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
SET lock_timeout = '2s'
AS $$
#variable_conflict use_column
DECLARE
    v_region text := nullif(btrim(set_customer_region.region), '');
BEGIN
    IF set_customer_region.customer_id IS NULL THEN
        RAISE EXCEPTION 'customer_id must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF length(v_region) > 64 THEN
        RAISE EXCEPTION 'region is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('A region has at most 64 characters; the one given has %s.', length(v_region));
    END IF;
    PERFORM check_acting_customer(set_customer_region.customer_id);
    UPDATE customer c SET region = v_region, updated_at = now()
    WHERE c.customer_id = set_customer_region.customer_id AND c.region IS DISTINCT FROM v_region;
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM customer c WHERE c.customer_id = set_customer_region.customer_id) THEN
        RAISE EXCEPTION 'customer % does not exist', set_customer_region.customer_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN v_region;
END
$$;

-- demo data gets regions
CREATE OR REPLACE FUNCTION seed_demo_data(scale integer DEFAULT 1, anchor date DEFAULT current_date)
RETURNS TABLE (entity text, rows bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    t0          timestamptz := clock_timestamp();
    n_customers integer;
    n_skus      integer;
    n_products  integer;
    n_orders    integer;
    v_end       timestamptz;
    v_start     timestamptz;
    v_main      integer;
    v_east      integer;
    v_cust_base bigint;
    v_prod_base bigint;
    v_sku_base  bigint;
    v_ord_base  bigint;
    top_names   text[] := ARRAY['Apparel', 'Electronics', 'Home & Kitchen', 'Sports & Outdoors',
                                'Books', 'Beauty', 'Toys & Games', 'Grocery'];
    mid_names   text[] := ARRAY['Essentials', 'Premium', 'Outdoor', 'Kids', 'Classic', 'Eco'];
    leaf_names  text[] := ARRAY['Basics', 'Deluxe', 'Compact', 'Pro', 'Travel'];
    nouns       text[] := ARRAY[
        'T-Shirt', 'Hoodie', 'Jacket', 'Sneakers', 'Scarf', 'Jeans',
        'Headphones', 'Charger', 'Speaker', 'Keyboard', 'Webcam', 'Monitor',
        'Kettle', 'Skillet', 'Blender', 'Lamp', 'Towel Set', 'Mug',
        'Yoga Mat', 'Tent', 'Water Bottle', 'Backpack', 'Bike Light', 'Dumbbell',
        'Novel', 'Cookbook', 'Atlas', 'Notebook', 'Comic', 'Guide',
        'Face Cream', 'Shampoo', 'Lip Balm', 'Perfume', 'Soap', 'Serum',
        'Puzzle', 'Board Game', 'Plush Bear', 'Kite', 'Blocks', 'Card Game',
        'Coffee Beans', 'Green Tea', 'Olive Oil', 'Granola', 'Honey', 'Chocolate'];
    adjectives  text[] := ARRAY['Aurora', 'Nordic', 'Urban', 'Coastal', 'Alpine', 'Velvet',
                                'Summit', 'Harbor', 'Cedar', 'Ember', 'Lunar', 'Meadow',
                                'Pioneer', 'Quartz', 'Solstice', 'Tidal'];
    first_names text[] := ARRAY['Ada', 'Ben', 'Chloe', 'Dev', 'Elena', 'Farid', 'Grace', 'Hiro',
                                'Ines', 'Jonas', 'Kemi', 'Liam', 'Maya', 'Noor', 'Omar', 'Priya',
                                'Quinn', 'Rosa', 'Sven', 'Tara', 'Uma', 'Viktor', 'Wen', 'Yusuf'];
    last_names  text[] := ARRAY['Andersen', 'Bauer', 'Costa', 'Dubois', 'Eze', 'Fischer', 'Garcia',
                                'Haddad', 'Ito', 'Jensen', 'Kowalski', 'Lopez', 'Moreau', 'Nakamura',
                                'Okafor', 'Petrov', 'Rossi', 'Silva', 'Tanaka', 'Varga', 'Wong', 'Zhang'];
BEGIN
    IF scale IS NULL OR scale < 1 OR scale > 100 THEN
        RAISE EXCEPTION 'scale must be between 1 and 100'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The scale given was %s.', coalesce(scale::text, 'NULL'));
    END IF;
    IF anchor IS NULL THEN
        RAISE EXCEPTION 'anchor must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- one seeding at a time, and nobody else writing the catalog meanwhile
    LOCK TABLE category, product, sku, customer, inventory, orders IN EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM sku WHERE code LIKE 'SF-%') THEN
        RAISE EXCEPTION 'demo data is already loaded'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'SKUs with codes starting "SF-" exist.',
                  HINT = 'Seed an empty database, or drop and re-create the extension first.';
    END IF;

    n_customers := 100000 * scale;
    n_skus      := 10000 * scale;
    n_products  := n_skus / 2;
    n_orders    := 400000 * scale;
    v_end       := anchor::timestamptz;
    v_start     := v_end - interval '365 days';

    -- ------------------------------------------------------------ catalog --
    INSERT INTO location (code, name) VALUES ('east', 'East coast warehouse')
    ON CONFLICT (code) DO NOTHING;
    SELECT location_id INTO v_main FROM location WHERE code = 'main';
    SELECT location_id INTO v_east FROM location WHERE code = 'east';

    CREATE TEMP TABLE _seed_leaf (leaf integer, category_id bigint, top integer) ON COMMIT DROP;
    INSERT INTO category (parent_id, name, slug)
    SELECT NULL, t.name, regexp_replace(lower(t.name), '[^a-z0-9]+', '-', 'g')
    FROM unnest(top_names) AS t(name)
    ON CONFLICT DO NOTHING;
    INSERT INTO category (parent_id, name, slug)
    SELECT p.category_id, m.name, p.slug || '/' || lower(m.name)
    FROM unnest(top_names) AS t(name)
    JOIN category p ON p.parent_id IS NULL AND p.name = t.name
    CROSS JOIN unnest(mid_names) AS m(name)
    ON CONFLICT DO NOTHING;
    INSERT INTO category (parent_id, name, slug)
    SELECT p.category_id, l.name, p.slug || '/' || lower(l.name)
    FROM category p
    JOIN category g ON g.category_id = p.parent_id AND g.parent_id IS NULL AND g.name = ANY (top_names)
    CROSS JOIN unnest(leaf_names) AS l(name)
    WHERE p.name = ANY (mid_names)
    ON CONFLICT DO NOTHING;
    INSERT INTO _seed_leaf
    SELECT (row_number() OVER (ORDER BY array_position(top_names, g.name), array_position(mid_names, p.name),
                                        array_position(leaf_names, c.name)) - 1)::integer,
           c.category_id, array_position(top_names, g.name) - 1
    FROM category c
    JOIN category p ON p.category_id = c.parent_id
    JOIN category g ON g.category_id = p.parent_id AND g.parent_id IS NULL
    WHERE g.name = ANY (top_names) AND p.name = ANY (mid_names) AND c.name = ANY (leaf_names);
    RAISE NOTICE 'seed_demo_data: % leaf categories (%)', (SELECT count(*) FROM _seed_leaf), clock_timestamp() - t0;

    v_prod_base := nextval(pg_get_serial_sequence('storefront.product', 'product_id')) - 1;
    INSERT INTO product (product_id, category_id, name, description, created_at)
    OVERRIDING SYSTEM VALUE
    SELECT v_prod_base + 1 + p, l.category_id,
           adjectives[1 + (p % array_length(adjectives, 1))] || ' ' || nouns[1 + l.top * 6 + (p / 240) % 6]
               || ' ' || (1000 + p),
           'Demo product ' || (p + 1) || '.',
           v_start - interval '30 days'
    FROM generate_series(0, n_products - 1) AS p
    JOIN _seed_leaf l ON l.leaf = p % 240;
    PERFORM setval(pg_get_serial_sequence('storefront.product', 'product_id'), v_prod_base + n_products);

    -- SKU i is variant i % 2 of product i / 2
    v_sku_base := nextval(pg_get_serial_sequence('storefront.sku', 'sku_id')) - 1;
    INSERT INTO sku (sku_id, product_id, code, price_cents, currency, attributes, created_at, updated_at)
    OVERRIDING SYSTEM VALUE
    SELECT v_sku_base + 1 + s, v_prod_base + 1 + s / 2,
           'SF-' || lpad((s + 1)::text, 7, '0'),
           -- $5 to $500, log-uniform, ending in .99 (shared by both variants)
           (floor(500.0 * power(100.0, seed_u(s / 2, 1)) / 100.0) * 100 + 99)::bigint,
           'USD',
           CASE WHEN s % 2 = 0 THEN '{"variant": "standard"}' ELSE '{"variant": "large"}' END::jsonb
               || jsonb_build_object('color', (ARRAY['black', 'white', 'blue', 'red', 'green'])[1 + (s / 2) % 5]),
           v_start - interval '30 days', v_start - interval '30 days'
    FROM generate_series(0, n_skus - 1) AS s;
    PERFORM setval(pg_get_serial_sequence('storefront.sku', 'sku_id'), v_sku_base + n_skus);
    RAISE NOTICE 'seed_demo_data: % products, % SKUs (%)', n_products, n_skus, clock_timestamp() - t0;

    -- ---------------------------------------------------------- customers --
    v_cust_base := nextval(pg_get_serial_sequence('storefront.customer', 'customer_id')) - 1;
    INSERT INTO customer (customer_id, email, password_hash, full_name, created_at, region, updated_at)
    OVERRIDING SYSTEM VALUE
    SELECT v_cust_base + 1 + c,
           'customer' || (c + 1) || '@demo.storefront.test',
           '!seed',
           first_names[1 + (hashint4(c) & 1023) % array_length(first_names, 1)] || ' '
               || last_names[1 + (hashint4(c + 7) & 1023) % array_length(last_names, 1)],
           v_start - interval '30 days' + seed_u(c, 2) * interval '30 days',
           -- regions of unequal size: Europe and North America the largest
           (ARRAY['Europe', 'Europe', 'Europe', 'North America', 'North America', 'Asia Pacific',
                  'Asia Pacific', 'Latin America', 'Africa', 'Middle East'])[1 + floor(seed_u(c, 3) * 10)::int],
           v_start - interval '30 days' + seed_u(c, 2) * interval '30 days'
    FROM generate_series(0, n_customers - 1) AS c;
    PERFORM setval(pg_get_serial_sequence('storefront.customer', 'customer_id'), v_cust_base + n_customers);
    PERFORM register_customer('demo@storefront.test', 'storefront-demo', 'Demo Customer');
    RAISE NOTICE 'seed_demo_data: % customers (%)', n_customers + 1, clock_timestamp() - t0;

    -- ------------------------------------------------------------- orders --
    -- Orders per day follow weekday and season; time of day follows
    -- t = u + 0.07 (sin(2 pi (u - 0.12)) + sin(2 pi 0.12)), which maps [0, 1)
    -- onto [0, 1) with the fewest orders around 05:00 and the most around 17:00.
    CREATE TEMP TABLE _seed_order ON COMMIT DROP AS
    WITH days AS (
        SELECT d,
               (ARRAY[1.0, 0.95, 0.95, 1.0, 1.1, 1.25, 1.3])[extract(isodow FROM v_start + d * interval '1 day')::int]
               * (1.0 + 0.35 * cos(2 * pi() * (extract(doy FROM v_start + d * interval '1 day') - 345) / 365.0))
               * CASE WHEN extract(month FROM v_start + d * interval '1 day') = 11
                           AND extract(day FROM v_start + d * interval '1 day') BETWEEN 24 AND 30
                      THEN 1.8 ELSE 1.0 END AS w
        FROM generate_series(0, 364) AS d
    ), per_day AS (
        SELECT d, round(n_orders * w / sum(w) OVER ())::integer AS n FROM days
    ), o AS (
        SELECT (row_number() OVER (ORDER BY d, k) - 1) AS o, d, k FROM per_day, generate_series(1, n) AS k
    )
    SELECT o.o,
           v_cust_base + 1 + floor(n_customers * power(seed_u(o.o, 10), 2))::bigint AS customer_id,
           v_start + o.d * interval '1 day'
               + (seed_u(o.o, 11) + 0.07 * (sin(2 * pi() * (seed_u(o.o, 11) - 0.12)) + sin(2 * pi() * 0.12)))
                 * interval '1 day'
               AS placed_at,
           seed_u(o.o, 12) AS fate_u,
           seed_u(o.o, 13) AS time_u,
           (1 + CASE WHEN seed_u(o.o, 14) < 0.30 THEN 0 WHEN seed_u(o.o, 14) < 0.55 THEN 1
                     WHEN seed_u(o.o, 14) < 0.73 THEN 2 WHEN seed_u(o.o, 14) < 0.85 THEN 3
                     WHEN seed_u(o.o, 14) < 0.93 THEN 4 ELSE 5 END) AS n_lines
    FROM o;

    -- Lines: each picks a SKU by popularity rank (rank = N u^3, scattered
    -- over the catalog by a multiplicative permutation); a SKU picked twice
    -- in one order becomes one line (place_order merges repeats the same way).
    CREATE TEMP TABLE _seed_line ON COMMIT DROP AS
    SELECT o, (row_number() OVER (PARTITION BY o ORDER BY first_j))::integer AS line_no, sku_idx, qty
    FROM (
        SELECT so.o, x.sku_idx, min(j) AS first_j,
               sum(CASE WHEN seed_u(so.o * 8 + j, 21) < 0.75 THEN 1
                        WHEN seed_u(so.o * 8 + j, 21) < 0.92 THEN 2
                        ELSE 3 + floor(seed_u(so.o * 8 + j, 22) * 3) END)::integer AS qty
        FROM _seed_order so
        CROSS JOIN generate_series(1, so.n_lines) AS j
        CROSS JOIN LATERAL (
            SELECT ((floor(n_skus * power(seed_u(so.o * 8 + j, 20), 3))::bigint * 7919) % n_skus)::integer AS sku_idx
        ) x
        GROUP BY so.o, x.sku_idx
    ) l;
    RAISE NOTICE 'seed_demo_data: planned % orders, % lines (%)',
        (SELECT count(*) FROM _seed_order), (SELECT count(*) FROM _seed_line), clock_timestamp() - t0;

    -- Fates and timestamps. Orders in the last hour are still pending.
    v_ord_base := nextval(pg_get_serial_sequence('storefront.orders', 'order_id')) - 1;
    CREATE TEMP TABLE _seed_fate ON COMMIT DROP AS
    SELECT so.o, v_ord_base + 1 + so.o AS order_id, so.customer_id, so.placed_at,
           t.total_cents, f.fate,
           so.placed_at + interval '15 minutes' AS expires_at,
           CASE f.fate
               WHEN 'cancelled'      THEN so.placed_at + (5 + so.time_u * 55) * interval '1 minute'
               WHEN 'payment_failed' THEN so.placed_at + (2 + so.time_u * 8) * interval '1 minute'
               WHEN 'expired'        THEN so.placed_at + (16 + so.time_u * 4) * interval '1 minute'
               WHEN 'ok'             THEN so.placed_at + (1 + so.time_u * 9) * interval '1 minute'
           END AS first_at
    FROM _seed_order so
    JOIN (SELECT l.o, sum(l.qty * s.price_cents)::bigint AS total_cents
          FROM _seed_line l JOIN sku s ON s.sku_id = v_sku_base + 1 + l.sku_idx
          GROUP BY l.o) t ON t.o = so.o
    CROSS JOIN LATERAL (
        SELECT CASE WHEN so.placed_at > v_end - interval '1 hour' THEN 'pending'
                    WHEN so.fate_u < 0.040 THEN 'cancelled'
                    WHEN so.fate_u < 0.070 THEN 'payment_failed'
                    WHEN so.fate_u < 0.085 THEN 'expired'
                    ELSE 'ok' END AS fate
    ) f;
    -- paid orders ship 1-3 days later and arrive 1-5 days after that, if
    -- that is before the anchor
    ALTER TABLE _seed_fate ADD COLUMN shipped_at timestamptz, ADD COLUMN delivered_at timestamptz;
    UPDATE _seed_fate
    SET shipped_at = first_at + (1 + 2 * seed_u(o, 30)) * interval '1 day'
    WHERE fate = 'ok';
    UPDATE _seed_fate
    SET delivered_at = shipped_at + (1 + 4 * seed_u(o, 31)) * interval '1 day'
    WHERE fate = 'ok';
    UPDATE _seed_fate SET delivered_at = NULL WHERE delivered_at > v_end;
    UPDATE _seed_fate SET shipped_at = NULL, delivered_at = NULL WHERE shipped_at > v_end;

    INSERT INTO orders (customer_id, order_id, status, currency, total_cents, placed_at, updated_at)
    OVERRIDING SYSTEM VALUE
    SELECT customer_id, order_id,
           CASE WHEN fate = 'ok' THEN
                    CASE WHEN delivered_at IS NOT NULL THEN 'delivered'
                         WHEN shipped_at IS NOT NULL THEN 'shipped' ELSE 'paid' END
                ELSE fate END,
           'USD', total_cents, placed_at,
           coalesce(delivered_at, shipped_at, first_at, placed_at)
    FROM _seed_fate
    ORDER BY order_id;
    PERFORM setval(pg_get_serial_sequence('storefront.orders', 'order_id'), (SELECT max(order_id) FROM _seed_fate));
    RAISE NOTICE 'seed_demo_data: orders written (%)', clock_timestamp() - t0;

    INSERT INTO order_line (customer_id, order_id, line_no, sku_id, qty, unit_price_cents)
    SELECT f.customer_id, f.order_id, l.line_no, s.sku_id, l.qty, s.price_cents
    FROM _seed_line l
    JOIN _seed_fate f ON f.o = l.o
    JOIN sku s ON s.sku_id = v_sku_base + 1 + l.sku_idx
    ORDER BY f.customer_id, f.order_id, l.line_no;
    RAISE NOTICE 'seed_demo_data: order lines written (%)', clock_timestamp() - t0;

    INSERT INTO reservation (customer_id, order_id, line_no, location_id, qty, state, expires_at, created_at, ended_at)
    SELECT f.customer_id, f.order_id, l.line_no, v_main, l.qty,
           CASE f.fate WHEN 'ok' THEN 'consumed' WHEN 'expired' THEN 'expired'
                       WHEN 'pending' THEN 'held' ELSE 'released' END,
           f.expires_at, f.placed_at,
           CASE WHEN f.fate = 'pending' THEN NULL ELSE f.first_at END
    FROM _seed_line l
    JOIN _seed_fate f ON f.o = l.o
    ORDER BY f.customer_id, f.order_id, l.line_no;
    RAISE NOTICE 'seed_demo_data: reservations written (%)', clock_timestamp() - t0;

    INSERT INTO payment (customer_id, order_id, provider_ref, amount_cents, succeeded, outcome, created_at)
    SELECT customer_id, order_id, 'seed-' || order_id, total_cents, fate = 'ok',
           CASE WHEN fate = 'ok' THEN 'paid' ELSE 'payment_failed' END, first_at
    FROM _seed_fate
    WHERE fate IN ('ok', 'payment_failed')
    ORDER BY customer_id, order_id;

    -- status history and the outbox rows announcing each change
    CREATE TEMP TABLE _seed_history ON COMMIT DROP AS
    SELECT customer_id, order_id, seq, status, at,
           lag(status) OVER (PARTITION BY order_id ORDER BY seq) AS previous
    FROM (
        SELECT customer_id, order_id, 1 AS seq, 'pending' AS status, placed_at AS at FROM _seed_fate
        UNION ALL
        SELECT customer_id, order_id, 2, CASE WHEN fate = 'ok' THEN 'paid' ELSE fate END, first_at
        FROM _seed_fate WHERE fate <> 'pending'
        UNION ALL
        SELECT customer_id, order_id, 3, 'shipped', shipped_at FROM _seed_fate WHERE shipped_at IS NOT NULL
        UNION ALL
        SELECT customer_id, order_id, 4, 'delivered', delivered_at FROM _seed_fate WHERE delivered_at IS NOT NULL
    ) h;
    INSERT INTO order_status_history (customer_id, order_id, seq, status, at, detail)
    SELECT customer_id, order_id, seq, status, at,
           CASE WHEN status = 'pending' THEN '{"source": "seed"}'::jsonb
                ELSE jsonb_build_object('source', 'seed', 'from', previous) END
    FROM _seed_history
    ORDER BY customer_id, order_id, seq;
    INSERT INTO outbox (customer_id, id, aggregatetype, aggregateid, type, payload, created_at)
    SELECT customer_id,
           -- deterministic ids for seeded events (version-4 shaped)
           (lpad(to_hex(hashint8extended(order_id, seq)), 16, '0')
            || lpad(to_hex(hashint8extended(order_id, seq + 1000)), 16, '0'))::uuid,
           'order', order_id::text, 'order.' || status,
           jsonb_build_object('order_id', order_id, 'customer_id', customer_id, 'seq', seq,
                              'status', status, 'previous', previous, 'at', at),
           at
    FROM _seed_history
    ORDER BY customer_id, order_id, seq;
    RAISE NOTICE 'seed_demo_data: payments, history and outbox written (%)', clock_timestamp() - t0;

    -- ---------------------------------------------------------- inventory --
    -- What was bought, sold and is held explains every level exactly:
    -- restocked = sold + held + left on the shelf (0 for 5% of SKUs).
    CREATE TEMP TABLE _seed_stock ON COMMIT DROP AS
    SELECT s.s, v_sku_base + 1 + s.s AS sku_id,
           coalesce(u.sold, 0) AS sold, coalesce(u.held, 0) AS held,
           CASE WHEN seed_u(s.s, 40) < 0.05 THEN 0 ELSE 5 + floor(seed_u(s.s, 41) * 300)::integer END AS shelf
    FROM generate_series(0, n_skus - 1) AS s(s)
    LEFT JOIN (
        SELECT l.sku_idx,
               sum(l.qty) FILTER (WHERE f.fate = 'ok')::integer AS sold,
               sum(l.qty) FILTER (WHERE f.fate = 'pending')::integer AS held
        FROM _seed_line l JOIN _seed_fate f ON f.o = l.o
        GROUP BY l.sku_idx
    ) u ON u.sku_idx = s.s;

    INSERT INTO inventory (sku_id, location_id, on_hand, reserved, updated_at)
    SELECT sku_id, v_main, held + shelf, held, v_end FROM _seed_stock
    UNION ALL
    SELECT sku_id, v_east, 20 + s % 50, 0, v_end FROM _seed_stock WHERE s % 5 = 0
    ORDER BY 1, 2;
    -- two deliveries per SKU at main: before the year and mid-year
    INSERT INTO stock_movement (sku_id, location_id, qty, reason, at)
    SELECT sku_id, v_main, q, 'restock', at
    FROM _seed_stock
    CROSS JOIN LATERAL (VALUES
        (sold + held + shelf - (sold + held + shelf) / 3, v_start - interval '10 days'),
        ((sold + held + shelf) / 3, v_start + interval '182 days')) AS d(q, at)
    WHERE q > 0
    UNION ALL
    SELECT sku_id, v_east, 20 + s % 50, 'restock', v_start - interval '10 days' FROM _seed_stock WHERE s % 5 = 0;
    RAISE NOTICE 'seed_demo_data: inventory written (%)', clock_timestamp() - t0;

    -- ------------------------------------------------------------- events --
    -- Sessions that led to an order: 3-10 page views in the half hour before
    -- it, 1-2 add_to_cart, one checkout_started; and as many sessions again
    -- that did not buy: 1-4 views, a cart 30% of the time.
    PERFORM ensure_event_partitions(interval '2 days', (v_end - v_start) + interval '2 days', v_end);
    INSERT INTO event (at, kind, customer_id, props)
    SELECT f.placed_at - seed_u(f.o * 16 + k, 50) * interval '30 minutes', 'page_view', f.customer_id,
           jsonb_build_object('path', '/product/' || (1 + floor(seed_u(f.o * 16 + k, 52) * n_products))::int)
    FROM _seed_fate f CROSS JOIN LATERAL generate_series(1, 3 + floor(seed_u(f.o, 51) * 8)::int) AS k
    UNION ALL
    SELECT f.placed_at - seed_u(f.o * 4 + k, 53) * interval '10 minutes', 'add_to_cart', f.customer_id, '{}'
    FROM _seed_fate f CROSS JOIN LATERAL generate_series(1, 1 + (seed_u(f.o, 54) < 0.5)::int) AS k
    UNION ALL
    SELECT f.placed_at - interval '1 minute', 'checkout_started', f.customer_id, '{}'
    FROM _seed_fate f
    UNION ALL
    SELECT so.placed_at + (seed_u(so.o, 55) - 0.5) * interval '6 hours', 'page_view', NULL,
           jsonb_build_object('path', '/product/' || (1 + floor(seed_u(so.o * 8 + k, 56) * n_products))::int)
    FROM _seed_order so CROSS JOIN LATERAL generate_series(1, 1 + floor(seed_u(so.o, 57) * 4)::int) AS k
    WHERE so.placed_at + (seed_u(so.o, 55) - 0.5) * interval '6 hours' < v_end
    UNION ALL
    SELECT so.placed_at + (seed_u(so.o, 55) - 0.5) * interval '6 hours' + interval '2 minutes', 'add_to_cart', NULL, '{}'
    FROM _seed_order so
    WHERE seed_u(so.o, 58) < 0.3 AND so.placed_at + (seed_u(so.o, 55) - 0.5) * interval '6 hours' < v_end;
    RAISE NOTICE 'seed_demo_data: events written (%)', clock_timestamp() - t0;

    RETURN QUERY
    SELECT x.entity, x.rows FROM (VALUES
        ('categories', (SELECT count(*) FROM category)),
        ('products', (SELECT count(*) FROM product)),
        ('skus', (SELECT count(*) FROM sku)),
        ('customers', (SELECT count(*) FROM customer)),
        ('orders', (SELECT count(*) FROM orders)),
        ('order lines', (SELECT count(*) FROM order_line)),
        ('reservations', (SELECT count(*) FROM reservation)),
        ('payments', (SELECT count(*) FROM payment)),
        ('status changes', (SELECT count(*) FROM order_status_history)),
        ('outbox events', (SELECT count(*) FROM outbox)),
        ('events', (SELECT count(*) FROM event))
    ) AS x(entity, rows);
    RAISE NOTICE 'seed_demo_data: done in %', clock_timestamp() - t0;
END
$$;

-- the merge and the loader's watermark, from the library
CREATE  FUNCTION "xact_age_limit"(
	"now_xid" bigint, /* Option < i64 > */
	"watermark" bigint /* Option < i64 > */
) RETURNS INT /* i32 */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'xact_age_limit_wrapper';
CREATE  FUNCTION "scd2_upsert"(
	"target" regclass, /* Option < RegClass > */
	"source" regclass, /* Option < RegClass > */
	"key_columns" TEXT[], /* :: std :: option :: Option < Vec < Option < String > > > */
	"tracked_columns" TEXT[], /* :: std :: option :: Option < Vec < Option < String > > > */
	"as_of" timestamp with time zone DEFAULT now(), /* Option < TimestampWithTimeZone > */
	"changed_at_column" TEXT DEFAULT NULL, /* Option < & str > */
	"deletes" TEXT DEFAULT 'ignore', /* Option < & str > */
	"late_changes" TEXT DEFAULT 'split' /* Option < & str > */
) RETURNS TABLE (
	"inserted" bigint,  /* i64 */
	"versioned" bigint,  /* i64 */
	"unchanged" bigint,  /* i64 */
	"closed" bigint  /* i64 */
)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'scd2_upsert_wrapper';

CREATE SCHEMA storefront_dw;
COMMENT ON SCHEMA storefront_dw IS 'The warehouse: star schema, SCD2 dimensions, load state and report views (see load_warehouse()).';

CREATE TABLE storefront_dw.dim_date (
    date_key   integer  PRIMARY KEY,          -- yyyymmdd
    date       date     NOT NULL UNIQUE,
    year       smallint NOT NULL,
    quarter    smallint NOT NULL,
    month      smallint NOT NULL,
    month_name text     NOT NULL,
    iso_week   smallint NOT NULL,
    day        smallint NOT NULL,
    iso_dow    smallint NOT NULL,
    day_name   text     NOT NULL,
    is_weekend boolean  NOT NULL
);
COMMENT ON TABLE storefront_dw.dim_date IS 'Calendar days (UTC) from the first order on; date_key is yyyymmdd.';

CREATE TABLE storefront_dw.dim_customer (
    customer_key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  bigint      NOT NULL,
    -- tracked: new (no paid order yet), one-time, repeat (2-4), loyal (5+)
    segment      text        NOT NULL,
    region       text,
    -- copied into new versions
    full_name    text        NOT NULL,
    signup_date  date        NOT NULL,
    valid_from   timestamptz NOT NULL,
    valid_to     timestamptz NOT NULL DEFAULT 'infinity',
    is_current   boolean     NOT NULL DEFAULT true,
    CONSTRAINT dim_customer_validity CHECK (valid_from < valid_to AND is_current = (valid_to = 'infinity')),
    CONSTRAINT dim_customer_version_key UNIQUE (customer_id, valid_from),
    CONSTRAINT dim_customer_no_overlap EXCLUDE USING gist (customer_id WITH =, tstzrange(valid_from, valid_to) WITH &&)
);
CREATE UNIQUE INDEX dim_customer_current_key ON storefront_dw.dim_customer (customer_id) WHERE is_current;
COMMENT ON TABLE storefront_dw.dim_customer IS 'Customers, SCD Type 2: a version per change of segment or region, valid [valid_from, valid_to).';

CREATE TABLE storefront_dw.dim_product (
    product_key   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku_id        bigint      NOT NULL,
    -- tracked
    price_cents   bigint      NOT NULL,
    currency      char(3)     NOT NULL,
    category_path text,
    -- copied into new versions
    sku_code      text        NOT NULL,
    product_id    bigint      NOT NULL,
    product_name  text        NOT NULL,
    top_category  text,
    valid_from    timestamptz NOT NULL,
    valid_to      timestamptz NOT NULL DEFAULT 'infinity',
    is_current    boolean     NOT NULL DEFAULT true,
    CONSTRAINT dim_product_validity CHECK (valid_from < valid_to AND is_current = (valid_to = 'infinity')),
    CONSTRAINT dim_product_version_key UNIQUE (sku_id, valid_from),
    CONSTRAINT dim_product_no_overlap EXCLUDE USING gist (sku_id WITH =, tstzrange(valid_from, valid_to) WITH &&)
);
CREATE UNIQUE INDEX dim_product_current_key ON storefront_dw.dim_product (sku_id) WHERE is_current;
COMMENT ON TABLE storefront_dw.dim_product IS 'SKUs with their product, SCD Type 2: a version per change of price, currency or category path.';

CREATE TABLE storefront_dw.dim_location (
    location_key integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    location_id  integer NOT NULL UNIQUE,
    code         text    NOT NULL,
    name         text    NOT NULL
);
COMMENT ON TABLE storefront_dw.dim_location IS 'Stock locations (Type 1: changes overwrite).';

CREATE TABLE storefront_dw.fact_order_line (
    customer_id      bigint  NOT NULL,
    order_id         bigint  NOT NULL,
    line_no          integer NOT NULL,
    date_key         integer NOT NULL REFERENCES storefront_dw.dim_date (date_key),
    customer_key     bigint  NOT NULL REFERENCES storefront_dw.dim_customer (customer_key),
    product_key      bigint  NOT NULL REFERENCES storefront_dw.dim_product (product_key),
    location_key     integer REFERENCES storefront_dw.dim_location (location_key),
    ordered_at       timestamptz NOT NULL,
    -- the order's status now: revenue counts paid, shipped and delivered
    order_status     text    NOT NULL,
    quantity         integer NOT NULL,
    unit_price_cents bigint  NOT NULL,
    amount_cents     bigint  NOT NULL,
    currency         char(3) NOT NULL,
    PRIMARY KEY (customer_id, order_id, line_no)
);
CREATE INDEX fact_order_line_date_idx ON storefront_dw.fact_order_line (date_key);
CREATE INDEX fact_order_line_customer_idx ON storefront_dw.fact_order_line (customer_key);
CREATE INDEX fact_order_line_product_idx ON storefront_dw.fact_order_line (product_key);
CREATE INDEX fact_order_line_location_idx ON storefront_dw.fact_order_line (location_key);
COMMENT ON TABLE storefront_dw.fact_order_line IS 'One row per order line: quantity, unit price and amount in the order''s currency, the order''s status, and the dimension versions valid when the order was placed.';

-- Where the last load got to: the oldest transaction still running when
-- it started (see extension/src/warehouse/load.rs), in the cluster it ran
-- in (a copy restored elsewhere loads everything again, to no effect).
CREATE TABLE storefront_dw.load_state (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    watermark     bigint,
    system_id     bigint,
    loaded_at     timestamptz,
    loads         bigint NOT NULL DEFAULT 0
);
INSERT INTO storefront_dw.load_state DEFAULT VALUES;
COMMENT ON TABLE storefront_dw.load_state IS 'Where load_warehouse() got to: the transaction id watermark of the last load.';

-- The customer segment after `paid_orders` paid orders.
CREATE FUNCTION storefront_dw.segment_of(paid_orders bigint)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN paid_orders IS NULL OR paid_orders < 1 THEN 'new'
            WHEN paid_orders = 1 THEN 'one-time'
            WHEN paid_orders < 5 THEN 'repeat'
            ELSE 'loyal' END;

-- ------------------------------------------------------------ reports --
-- What a dashboard polls, refreshed CONCURRENTLY by load_warehouse(), so
-- readers never wait for a refresh. Revenue is paid, shipped and
-- delivered orders.

CREATE MATERIALIZED VIEW storefront_dw.daily_revenue AS
SELECT d.date, f.currency,
       count(DISTINCT (f.customer_id, f.order_id)) AS orders,
       sum(f.quantity)::bigint AS units,
       sum(f.amount_cents)::bigint AS revenue_cents
FROM storefront_dw.fact_order_line f
JOIN storefront_dw.dim_date d ON d.date_key = f.date_key
WHERE f.order_status IN ('paid', 'shipped', 'delivered')
GROUP BY d.date, f.currency;
CREATE UNIQUE INDEX daily_revenue_key ON storefront_dw.daily_revenue (date, currency);
COMMENT ON MATERIALIZED VIEW storefront_dw.daily_revenue IS 'Revenue, orders and units per day (UTC) and currency.';

CREATE MATERIALIZED VIEW storefront_dw.monthly_product_sales AS
SELECT date_trunc('month', d.date)::date AS month, p.sku_id, f.currency,
       sum(f.quantity)::bigint AS units,
       sum(f.amount_cents)::bigint AS revenue_cents
FROM storefront_dw.fact_order_line f
JOIN storefront_dw.dim_date d ON d.date_key = f.date_key
JOIN storefront_dw.dim_product p ON p.product_key = f.product_key
WHERE f.order_status IN ('paid', 'shipped', 'delivered')
GROUP BY 1, 2, 3;
CREATE UNIQUE INDEX monthly_product_sales_key ON storefront_dw.monthly_product_sales (month, sku_id, currency);
COMMENT ON MATERIALIZED VIEW storefront_dw.monthly_product_sales IS 'Units and revenue per month, SKU and currency.';

CREATE MATERIALIZED VIEW storefront_dw.monthly_segment_revenue AS
SELECT date_trunc('month', d.date)::date AS month,
       coalesce(p.top_category, 'Uncategorised') AS top_category,
       c.segment, f.currency,
       count(DISTINCT (f.customer_id, f.order_id)) AS orders,
       sum(f.amount_cents)::bigint AS revenue_cents
FROM storefront_dw.fact_order_line f
JOIN storefront_dw.dim_date d ON d.date_key = f.date_key
JOIN storefront_dw.dim_product p ON p.product_key = f.product_key
JOIN storefront_dw.dim_customer c ON c.customer_key = f.customer_key
WHERE f.order_status IN ('paid', 'shipped', 'delivered')
GROUP BY 1, 2, 3, 4;
CREATE UNIQUE INDEX monthly_segment_revenue_key
    ON storefront_dw.monthly_segment_revenue (month, top_category, segment, currency);
COMMENT ON MATERIALIZED VIEW storefront_dw.monthly_segment_revenue IS 'Revenue per month, top-level category and customer segment as it was when each order was placed.';

-- ------------------------------------------------------------- loader --
-- Incremental: only OLTP rows written by transactions the last load did
-- not see (transaction-id watermark, see load.rs), merged idempotently, so
-- a row seen twice changes nothing and none is missed while orders keep
-- arriving. Steps, in lock order: the load state row (one load at a time),
-- dim_date, dim_location, dim_product and dim_customer (scd2_upsert, SHARE
-- ROW EXCLUSIVE each), fact_order_line, then the report views.
CREATE FUNCTION load_warehouse()
RETURNS TABLE (step text, rows bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '10s'
AS $$
#variable_conflict use_column
DECLARE
    v_now_xid  bigint;
    v_mark     bigint;
    v_system   bigint;
    v_state    record;
    v_age      integer;
    v_full     boolean;
    v_as_of    timestamptz;
    v_n        bigint;
    v_more     bigint;  -- the rows of a step's second statement
    v_changed  bigint := 0;
    v_min      date;
    v_max      date;
    r          record;
BEGIN
    SELECT * INTO v_state FROM storefront_dw.load_state WHERE id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO storefront_dw.load_state DEFAULT VALUES;
        SELECT * INTO v_state FROM storefront_dw.load_state WHERE id FOR UPDATE;
    END IF;
    -- this transaction's id first, so age() counts from it
    v_now_xid := pg_current_xact_id()::text::bigint;
    v_mark := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
    SELECT s.system_identifier INTO v_system FROM pg_control_system() s;
    -- no watermark of this cluster (the first load, or the first after a
    -- restore): everything is read, and the report views are refreshed
    -- even when nothing turns out to have changed, since a restored
    -- database's views are as CREATE EXTENSION made them (empty)
    v_full := v_state.system_id IS DISTINCT FROM v_system OR v_state.watermark IS NULL;
    v_age := storefront.xact_age_limit(v_now_xid, CASE WHEN NOT v_full THEN v_state.watermark END);

    -- ------------------------------------------------ what changed --
    -- (left over when an earlier load in this transaction failed and was
    -- caught)
    FOR r IN SELECT t FROM unnest(ARRAY['wh_order', 'wh_customer', 'wh_sku', 'wh_sold', 'wh_cust_event',
                                         'wh_product_src', 'wh_customer_src']) t
             WHERE to_regclass('pg_temp.' || t) IS NOT NULL LOOP
        EXECUTE format('DROP TABLE pg_temp.%I', r.t);
    END LOOP;
    CREATE TEMP TABLE wh_order ON COMMIT DROP AS
    SELECT o.customer_id, o.order_id, o.status, o.currency, o.placed_at
    FROM storefront.orders o WHERE age(o.xmin) <= v_age;
    CREATE TEMP TABLE wh_customer ON COMMIT DROP AS
    SELECT c.customer_id, c.updated_at FROM storefront.customer c WHERE age(c.xmin) <= v_age;
    CREATE TEMP TABLE wh_sku ON COMMIT DROP AS
    SELECT s.sku_id FROM storefront.sku s WHERE age(s.xmin) <= v_age;
    step := 'orders read'; rows := (SELECT count(*) FROM wh_order); RETURN NEXT;

    -- ----------------------------------------------------- dim_date --
    SELECT min((o.placed_at AT TIME ZONE 'UTC')::date), max((o.placed_at AT TIME ZONE 'UTC')::date)
    INTO v_min, v_max FROM wh_order o;
    IF v_min IS NOT NULL THEN
        v_min := least(v_min, (SELECT max(d.date) + 1 FROM storefront_dw.dim_date d));
        INSERT INTO storefront_dw.dim_date (date_key, date, year, quarter, month, month_name, iso_week, day,
                                            iso_dow, day_name, is_weekend)
        SELECT to_char(g, 'YYYYMMDD')::integer, g::date, extract(year FROM g), extract(quarter FROM g),
               extract(month FROM g), to_char(g, 'FMMonth'), extract(week FROM g), extract(day FROM g),
               extract(isodow FROM g), to_char(g, 'FMDay'), extract(isodow FROM g) >= 6
        FROM generate_series(v_min, v_max, interval '1 day') AS g
        ON CONFLICT (date_key) DO NOTHING;
        GET DIAGNOSTICS v_n = ROW_COUNT;
    ELSE
        v_n := 0;
    END IF;
    step := 'dim_date'; rows := v_n; RETURN NEXT;

    -- ------------------------------------------------- dim_location --
    -- renamed ones updated, new ones inserted: an INSERT .. ON CONFLICT of
    -- every location would take a key from the identity for each one at
    -- every load, conflict or not
    UPDATE storefront_dw.dim_location d SET code = l.code, name = l.name
    FROM storefront.location l
    WHERE l.location_id = d.location_id AND (d.code, d.name) IS DISTINCT FROM (l.code, l.name);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    INSERT INTO storefront_dw.dim_location (location_id, code, name)
    SELECT l.location_id, l.code, l.name FROM storefront.location l
    WHERE NOT EXISTS (SELECT FROM storefront_dw.dim_location d WHERE d.location_id = l.location_id);
    GET DIAGNOSTICS v_more = ROW_COUNT;
    v_n := v_n + v_more;
    step := 'dim_location'; rows := v_n; RETURN NEXT;

    -- -------------------------------------------------- dim_product --
    -- a SKU new to the warehouse is versioned from its creation, a
    -- changed one from its last update
    CREATE TEMP TABLE wh_product_src ON COMMIT DROP AS
    WITH RECURSIVE path AS (
        SELECT c.category_id, c.name AS path, c.name AS top
        FROM storefront.category c WHERE c.parent_id IS NULL
        UNION ALL
        SELECT c.category_id, p.path || '/' || c.name, p.top
        FROM storefront.category c JOIN path p ON c.parent_id = p.category_id
    )
    SELECT s.sku_id, s.price_cents, s.currency, pa.path AS category_path, s.code AS sku_code,
           p.product_id, p.name AS product_name, pa.top AS top_category,
           CASE WHEN EXISTS (SELECT 1 FROM storefront_dw.dim_product d WHERE d.sku_id = s.sku_id)
                THEN s.updated_at ELSE s.created_at END AS changed_at
    FROM wh_sku w
    JOIN storefront.sku s ON s.sku_id = w.sku_id
    JOIN storefront.product p ON p.product_id = s.product_id
    LEFT JOIN path pa ON pa.category_id = p.category_id;

    -- ------------------------------------------------- dim_customer --
    -- orders that became sold since the last load: each one may move its
    -- customer to the next segment, from the time it was paid
    CREATE TEMP TABLE wh_sold ON COMMIT DROP AS
    SELECT o.customer_id, o.order_id,
           coalesce((SELECT min(p.created_at) FROM storefront.payment p
                     WHERE p.customer_id = o.customer_id AND p.order_id = o.order_id AND p.succeeded),
                    o.placed_at) AS paid_at
    FROM wh_order o
    WHERE o.status IN ('paid', 'shipped', 'delivered')
      AND NOT EXISTS (SELECT 1 FROM storefront_dw.fact_order_line f
                      WHERE f.customer_id = o.customer_id AND f.order_id = o.order_id
                        AND f.order_status IN ('paid', 'shipped', 'delivered'));
    -- the times at which an affected customer's state is stated: creation
    -- (new to the warehouse), the account's last change, each new payment,
    -- and every later version (restated, should a change arrive late)
    CREATE TEMP TABLE wh_cust_event ON COMMIT DROP AS
    WITH affected AS (
        SELECT customer_id FROM wh_customer UNION SELECT customer_id FROM wh_sold
    ), ev AS (
        SELECT c.customer_id,
               CASE WHEN EXISTS (SELECT 1 FROM storefront_dw.dim_customer d WHERE d.customer_id = c.customer_id)
                    THEN NULL ELSE c.created_at END AS at
        FROM affected a JOIN storefront.customer c ON c.customer_id = a.customer_id
        UNION ALL
        SELECT w.customer_id, w.updated_at FROM wh_customer w
        WHERE EXISTS (SELECT 1 FROM storefront_dw.dim_customer d WHERE d.customer_id = w.customer_id)
        UNION ALL
        SELECT s.customer_id, s.paid_at FROM wh_sold s
    ), firsts AS (
        SELECT customer_id, min(at) AS first_at FROM ev WHERE at IS NOT NULL GROUP BY customer_id
    )
    SELECT DISTINCT customer_id, at FROM ev WHERE at IS NOT NULL
    UNION
    SELECT d.customer_id, d.valid_from
    FROM firsts f JOIN storefront_dw.dim_customer d ON d.customer_id = f.customer_id AND d.valid_from > f.first_at;
    -- the state at each of those times: segment by paid orders so far,
    -- region as the account says (or, before its last change, as the
    -- warehouse has it)
    CREATE TEMP TABLE wh_customer_src ON COMMIT DROP AS
    WITH pay AS (
        SELECT o.customer_id,
               coalesce((SELECT min(p.created_at) FROM storefront.payment p
                         WHERE p.customer_id = o.customer_id AND p.order_id = o.order_id AND p.succeeded),
                        o.placed_at) AS at
        FROM (SELECT DISTINCT customer_id FROM wh_cust_event) a
        JOIN storefront.orders o ON o.customer_id = a.customer_id
        WHERE o.status IN ('paid', 'shipped', 'delivered')
    ), x AS (
        SELECT customer_id, at, 1 AS paid, 0 AS kind FROM pay
        UNION ALL
        SELECT customer_id, at, 0, 1 FROM wh_cust_event
    ), y AS (
        SELECT customer_id, at, kind,
               sum(paid) OVER (PARTITION BY customer_id ORDER BY at, kind ROWS UNBOUNDED PRECEDING) AS paid_orders
        FROM x
    )
    SELECT y.customer_id, storefront_dw.segment_of(y.paid_orders) AS segment,
           CASE WHEN y.at >= c.updated_at THEN c.region
                ELSE coalesce((SELECT d.region FROM storefront_dw.dim_customer d
                               WHERE d.customer_id = y.customer_id AND d.valid_from <= y.at AND d.valid_to > y.at),
                              c.region) END AS region,
           c.full_name, (c.created_at AT TIME ZONE 'UTC')::date AS signup_date, y.at AS changed_at
    FROM y JOIN storefront.customer c ON c.customer_id = y.customer_id
    WHERE y.kind = 1;

    -- every change time is in the past of as_of, even for demo data
    -- stamped ahead of the clock
    v_as_of := greatest(clock_timestamp(),
                        (SELECT max(changed_at) FROM wh_product_src),
                        (SELECT max(changed_at) FROM wh_customer_src));
    SELECT * INTO r FROM storefront.scd2_upsert('storefront_dw.dim_product', 'pg_temp.wh_product_src',
        '{sku_id}', '{price_cents,currency,category_path}', v_as_of, 'changed_at');
    v_changed := v_changed + r.inserted + r.versioned;
    step := 'dim_product'; rows := r.inserted + r.versioned; RETURN NEXT;
    SELECT * INTO r FROM storefront.scd2_upsert('storefront_dw.dim_customer', 'pg_temp.wh_customer_src',
        '{customer_id}', '{segment,region}', v_as_of, 'changed_at');
    v_changed := v_changed + r.inserted + r.versioned;
    step := 'dim_customer'; rows := r.inserted + r.versioned; RETURN NEXT;

    -- -------------------------------------------------------- facts --
    -- facts of customers and SKUs whose history changed point again at
    -- the version valid when their order was placed
    UPDATE storefront_dw.fact_order_line f SET customer_key = v.customer_key
    FROM (SELECT DISTINCT customer_id FROM wh_customer_src) a, storefront_dw.dim_customer v
    WHERE f.customer_id = a.customer_id AND v.customer_id = a.customer_id
      AND v.valid_from <= f.ordered_at AND f.ordered_at < v.valid_to AND f.customer_key <> v.customer_key;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_changed := v_changed + v_n;
    UPDATE storefront_dw.fact_order_line f SET product_key = v.product_key
    FROM (SELECT DISTINCT sku_id FROM wh_product_src) a, storefront_dw.dim_product old, storefront_dw.dim_product v
    WHERE old.sku_id = a.sku_id AND f.product_key = old.product_key AND v.sku_id = a.sku_id
      AND v.valid_from <= f.ordered_at AND f.ordered_at < v.valid_to AND f.product_key <> v.product_key;
    GET DIAGNOSTICS v_more = ROW_COUNT;
    v_n := v_n + v_more;
    v_changed := v_changed + v_more;
    step := 'facts repointed'; rows := v_n; RETURN NEXT;

    -- new lines, and the status of lines already loaded; each points at
    -- the version valid when the order was placed (or the first one, for
    -- an order older than everything the warehouse knows)
    INSERT INTO storefront_dw.fact_order_line AS f
        (customer_id, order_id, line_no, date_key, customer_key, product_key, location_key, ordered_at,
         order_status, quantity, unit_price_cents, amount_cents, currency)
    SELECT o.customer_id, o.order_id, l.line_no,
           to_char(o.placed_at AT TIME ZONE 'UTC', 'YYYYMMDD')::integer,
           (SELECT d.customer_key FROM storefront_dw.dim_customer d WHERE d.customer_id = o.customer_id
            ORDER BY d.valid_from <= o.placed_at DESC,
                     CASE WHEN d.valid_from <= o.placed_at THEN o.placed_at - d.valid_from ELSE d.valid_from - o.placed_at END
            LIMIT 1),
           (SELECT d.product_key FROM storefront_dw.dim_product d WHERE d.sku_id = l.sku_id
            ORDER BY d.valid_from <= o.placed_at DESC,
                     CASE WHEN d.valid_from <= o.placed_at THEN o.placed_at - d.valid_from ELSE d.valid_from - o.placed_at END
            LIMIT 1),
           (SELECT dl.location_key
            FROM storefront.reservation rs JOIN storefront_dw.dim_location dl ON dl.location_id = rs.location_id
            WHERE rs.customer_id = l.customer_id AND rs.order_id = l.order_id AND rs.line_no = l.line_no
            ORDER BY rs.state = 'consumed' DESC, rs.qty DESC, rs.reservation_id DESC LIMIT 1),
           o.placed_at, o.status, l.qty, l.unit_price_cents, l.qty * l.unit_price_cents, o.currency
    FROM wh_order o
    JOIN storefront.order_line l ON l.customer_id = o.customer_id AND l.order_id = o.order_id
    ON CONFLICT (customer_id, order_id, line_no) DO UPDATE SET order_status = excluded.order_status
    WHERE f.order_status IS DISTINCT FROM excluded.order_status;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_changed := v_changed + v_n;
    step := 'fact_order_line'; rows := v_n; RETURN NEXT;

    -- ------------------------------------------------------ reports --
    IF v_changed > 0 OR v_full THEN
        REFRESH MATERIALIZED VIEW CONCURRENTLY storefront_dw.daily_revenue;
        REFRESH MATERIALIZED VIEW CONCURRENTLY storefront_dw.monthly_product_sales;
        REFRESH MATERIALIZED VIEW CONCURRENTLY storefront_dw.monthly_segment_revenue;
        step := 'reports refreshed'; rows := 3; RETURN NEXT;
    ELSE
        step := 'reports refreshed'; rows := 0; RETURN NEXT;
    END IF;

    UPDATE storefront_dw.load_state
    SET watermark = v_mark, system_id = v_system, loaded_at = now(), loads = loads + 1
    WHERE id;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n <> 1 THEN
        RAISE EXCEPTION 'could not serialize access due to a concurrent change of the warehouse load state'
            USING ERRCODE = 'serialization_failure', HINT = 'Retry the call in a new transaction.';
    END IF;
    DROP TABLE pg_temp.wh_order, pg_temp.wh_customer, pg_temp.wh_sku, pg_temp.wh_sold,
        pg_temp.wh_cust_event, pg_temp.wh_product_src, pg_temp.wh_customer_src;
END
$$;

-- roles: applications set their customer's region, operations run the
-- loader, analysts read the warehouse
CREATE OR REPLACE FUNCTION app_role_functions()
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

CREATE OR REPLACE FUNCTION operations_role_functions()
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

CREATE OR REPLACE FUNCTION grant_analyst_role(role_name regrole)
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

COMMENT ON FUNCTION set_customer_region(bigint, text) IS
'Set the customer''s region (NULL or '''' clears it); returns it. The warehouse versions the customer from this change. Errors: 22004 NULL customer, 22023 region over 64 characters, 23503 unknown customer, 42501 another customer.';
COMMENT ON FUNCTION scd2_upsert(regclass, regclass, text[], text[], timestamp with time zone, text, text, text) IS
'Merge source into the SCD Type 2 table target (valid_from, valid_to = ''infinity'' while current, is_current): new keys get a version, keys whose tracked columns changed (typed, NULL-safe) get a new version and their current one is closed where it starts, untracked columns are copied into new versions. With changed_at_column a key may change several times in one batch (chained versions); a change older than the current version splits the version covering it (late_changes => ''split'') or is refused (''reject''). deletes: ''ignore'', ''close'' (close keys missing from the source at as_of) or ''version'' (also add a tombstone with is_deleted). Returns (inserted, versioned, unchanged, closed). Runs with the caller''s rights; one merge per target at a time. Errors: 21000 several source rows of a key at one time, 23502 NULL key or change time, 42P01 unknown relation, 42703 unknown column, 22023 target without validity columns or a type mismatch, 22008 infinite time, 55000 late change refused, 55P03 lock wait over 30s.';
COMMENT ON FUNCTION load_warehouse() IS
'Load the warehouse (schema storefront_dw) from the OLTP tables: only rows written since the last load (transaction-id watermark, nothing missed or doubled while orders arrive), dimensions merged with scd2_upsert, facts pointing at the versions valid when each order was placed, report views refreshed concurrently. Idempotent; one load at a time. Returns rows per step. Errors: 55P03 lock wait over 10s.';
COMMENT ON FUNCTION xact_age_limit(bigint, bigint) IS
'Internal: the largest age(xmin) of a row written at or after a transaction-id watermark, seen from transaction now_xid (every row when there is no usable watermark).';
COMMENT ON FUNCTION storefront_dw.segment_of(bigint) IS
'The customer segment after a number of paid orders: new (0), one-time (1), repeat (2-4), loyal (5 or more).';

ALTER FUNCTION scd2_upsert(regclass, regclass, text[], text[], timestamp with time zone, text, text, text) SET lock_timeout = '30s';
REVOKE ALL ON FUNCTION set_customer_region(bigint, text), load_warehouse(), xact_age_limit(bigint, bigint),
    scd2_upsert(regclass, regclass, text[], text[], timestamp with time zone, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION xact_age_limit(bigint, bigint) TO PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA storefront_dw FROM PUBLIC;
-- the warehouse's tables and identity sequences are dumped (one call per
-- statement: each updates the extension's catalog row)
SELECT pg_catalog.pg_extension_config_dump('storefront_dw.dim_date', '');
SELECT pg_catalog.pg_extension_config_dump('storefront_dw.dim_customer', '');
SELECT pg_catalog.pg_extension_config_dump('storefront_dw.dim_product', '');
SELECT pg_catalog.pg_extension_config_dump('storefront_dw.dim_location', '');
SELECT pg_catalog.pg_extension_config_dump('storefront_dw.fact_order_line', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('storefront_dw.dim_customer', 'customer_key')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('storefront_dw.dim_product', 'product_key')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('storefront_dw.dim_location', 'location_key')::regclass, '');

-- ------------------------------------------------------ relay launcher --
-- With the library in shared_preload_libraries, a launcher keeps an event
-- relay running in every database in relay mode, across restarts
-- (extension/src/relay/launcher.rs). stop_event_relay() then only pauses a
-- relay while relay mode is on, and says so.
CREATE OR REPLACE FUNCTION stop_event_relay()
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
DECLARE
    v_stopped boolean;
BEGIN
    SELECT coalesce(bool_or(pg_catalog.pg_terminate_backend(p, 5000)), false) INTO v_stopped
    FROM relay_worker_pids() p;
    IF v_stopped AND pg_catalog.current_setting('storefront.event_delivery', true) = 'relay'
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.backend_type = 'storefront relay scheduler') THEN
        RAISE NOTICE 'the relay launcher starts a new relay for this database within % seconds',
            (SELECT s.setting FROM pg_catalog.pg_settings s WHERE s.name = 'storefront.relay_launcher_naptime')
            USING HINT = 'To keep it stopped, turn relay mode off for the database first (ALTER DATABASE ... SET storefront.event_delivery = notify), or set storefront.relay_launcher_naptime to 0.';
    END IF;
    RETURN v_stopped;
END
$$;
COMMENT ON FUNCTION start_event_relay(integer) IS
'Start the background worker that runs relay_order_events() every interval_ms milliseconds (default 10) for the current database, or return the running one; returns its process id. A server restart ends it: with storefront in shared_preload_libraries the relay launcher starts it again in every database in relay mode, else call this again (pg_cron can, every minute). Errors: 22023 interval outside 1..60000, 53000 no free background worker slot (max_worker_processes).';
COMMENT ON FUNCTION stop_event_relay() IS
'Stop the current database''s event relay worker; true if one was running. Queued events stay queued. While the relay launcher runs (shared_preload_libraries) and relay mode is in effect for the database, it starts a new relay at its next round (a NOTICE says so): turn relay mode off first to keep it stopped.';
