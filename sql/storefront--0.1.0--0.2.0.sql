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
LANGUAGE plpgsql VOLATILE
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
            EXECUTE format('CREATE INDEX %I ON @extschema@.%I USING brin (at)', part || '_at_brin', part);
            INSERT INTO event SELECT * FROM _event_moving;
            TRUNCATE _event_moving;
        ELSE
            EXECUTE format('CREATE TABLE @extschema@.%I PARTITION OF @extschema@.event FOR VALUES FROM (%L) TO (%L)',
                           part, d, d + interval '1 day');
            EXECUTE format('CREATE INDEX %I ON @extschema@.%I USING brin (at)', part || '_at_brin', part);
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
LANGUAGE plpgsql VOLATILE
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF set_retention.relation IS NULL
       OR (set_retention.relation <> 'event' AND NOT EXISTS (SELECT 1 FROM rollup r WHERE r.name = set_retention.relation)) THEN
        RAISE EXCEPTION 'retention applies to "event" or a rollup, not "%"', coalesce(set_retention.relation, 'NULL')
            USING ERRCODE = 'undefined_object';
    END IF;
    IF set_retention.keep IS NULL THEN
        DELETE FROM retention_policy p WHERE p.relation = set_retention.relation;
        RETURN;
    END IF;
    IF set_retention.keep <= interval '0' OR set_retention.keep > interval '1000 years' THEN
        RAISE EXCEPTION 'retention must keep more than zero time and at most 1000 years'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The interval given was %s.', set_retention.keep);
    END IF;
    INSERT INTO retention_policy AS p (relation, keep) VALUES (set_retention.relation, set_retention.keep)
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
