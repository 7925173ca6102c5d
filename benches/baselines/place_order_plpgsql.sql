-- Baseline for the benchmarks: place_order written in PL/pgSQL, the way a
-- PL/pgSQL developer would write it — same validation, idempotency, lock
-- order (SKUs by id, locations by id), allocation, writes, history, outbox
-- and NOTIFY as storefront.place_order, but row by row. Hot-stock mode is
-- not implemented here (the benchmarks compare normal SKUs).
-- Loaded into schema bench by the load driver; not part of the extension.

CREATE SCHEMA IF NOT EXISTS bench;

CREATE OR REPLACE FUNCTION bench.place_order_plpgsql(
    p_customer_id bigint,
    p_items jsonb,
    p_key text DEFAULT NULL,
    p_hold interval DEFAULT '15 minutes'
) RETURNS storefront.order_receipt
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = storefront, pg_temp
SET lock_timeout = '2s'
SET plan_cache_mode = 'force_generic_plan'  -- as the extension's functions
AS $$
DECLARE
    v_item      jsonb;
    v_keys      int;
    v_sku       text;
    v_qty       numeric;
    v_merged    jsonb := '{}';
    v_codes     text[];
    v_canonical text;
    v_hash      bytea;
    v_existing  record;
    v_line      record;
    v_inv       record;
    v_need      int;
    v_take      int;
    v_avail     bigint;
    v_order_id  bigint;
    v_expires   timestamptz;
    v_total     bigint := 0;
    v_currency  text;
    v_line_no   int := 0;
    v_unknown   text[] := '{}';
    v_short     text[] := '{}';
    v_payload   jsonb;
BEGIN
    IF p_items IS NULL THEN
        RAISE EXCEPTION 'items must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF jsonb_typeof(p_items) <> 'array' THEN
        RAISE EXCEPTION 'invalid order items' USING ERRCODE = 'invalid_text_representation';
    END IF;
    IF jsonb_array_length(p_items) = 0 OR jsonb_array_length(p_items) > 100 THEN
        RAISE EXCEPTION 'an order has 1 to 100 items' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_item IN SELECT e FROM jsonb_array_elements(p_items) AS e LOOP
        IF jsonb_typeof(v_item) <> 'object' THEN
            RAISE EXCEPTION 'invalid order items' USING ERRCODE = 'invalid_text_representation';
        END IF;
        SELECT count(*) INTO v_keys FROM jsonb_object_keys(v_item);
        IF v_keys <> 2 OR NOT v_item ?& ARRAY['sku', 'qty']
           OR jsonb_typeof(v_item -> 'sku') <> 'string' OR jsonb_typeof(v_item -> 'qty') <> 'number' THEN
            RAISE EXCEPTION 'invalid order items' USING ERRCODE = 'invalid_text_representation';
        END IF;
        v_sku := btrim(v_item ->> 'sku');
        v_qty := (v_item ->> 'qty')::numeric;
        IF v_sku = '' OR v_qty <> trunc(v_qty) THEN
            RAISE EXCEPTION 'invalid order items' USING ERRCODE = 'invalid_text_representation';
        END IF;
        IF v_qty <= 0 OR v_qty > 1000 THEN
            RAISE EXCEPTION 'item quantity out of range' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_merged := jsonb_set(v_merged, ARRAY[v_sku], to_jsonb(coalesce((v_merged ->> v_sku)::int, 0) + v_qty::int));
        IF (v_merged ->> v_sku)::int > 1000 THEN
            RAISE EXCEPTION 'item quantity out of range' USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    IF p_hold IS NULL OR p_hold <= interval '0' OR p_hold > interval '7 days' THEN
        RAISE EXCEPTION 'hold must be more than zero and at most 7 days' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT string_agg(key || chr(31) || value || chr(30), '' ORDER BY key)
           || 'hold=' || (extract(epoch FROM p_hold) * 1000000)::bigint
    INTO v_canonical
    FROM jsonb_each_text(v_merged);
    v_hash := sha256(convert_to(v_canonical, 'UTF8'));

    IF p_key IS NOT NULL THEN
        SELECT o.order_id, o.request_hash, o.status, o.total_cents, o.currency,
               (SELECT max(r.expires_at) FROM reservation r
                 WHERE r.customer_id = o.customer_id AND r.order_id = o.order_id) AS expires_at
        INTO v_existing
        FROM orders o WHERE o.customer_id = p_customer_id AND o.idempotency_key = p_key;
        IF FOUND THEN
            IF v_existing.request_hash <> v_hash THEN
                RAISE EXCEPTION 'idempotency key was already used for a different request' USING ERRCODE = 'unique_violation';
            END IF;
            RETURN ROW(v_existing.order_id, v_existing.status, v_existing.total_cents, v_existing.currency,
                       v_existing.expires_at, true)::order_receipt;
        END IF;
    END IF;

    IF p_customer_id IS NULL OR NOT EXISTS (SELECT 1 FROM customer WHERE customer_id = p_customer_id) THEN
        RAISE EXCEPTION 'customer % does not exist', p_customer_id USING ERRCODE = 'foreign_key_violation';
    END IF;

    -- resolve SKUs, price the order; `code = ANY (v_codes)` makes even the
    -- generic plan probe the code index instead of hashing the whole catalog
    v_codes := ARRAY(SELECT jsonb_object_keys(v_merged));
    FOR v_line IN
        SELECT m.key AS code, m.value::int AS qty, s.sku_id, s.price_cents, s.currency, s.sellable
        FROM jsonb_each_text(v_merged) m
        LEFT JOIN (SELECT * FROM sku WHERE code = ANY (v_codes)) s ON s.code = m.key
    LOOP
        IF v_line.sku_id IS NULL OR NOT v_line.sellable THEN
            v_unknown := v_unknown || v_line.code;
            CONTINUE;
        END IF;
        IF v_currency IS NOT NULL AND v_currency <> v_line.currency THEN
            RAISE EXCEPTION 'order items must share one currency' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_currency := v_line.currency;
        v_total := v_total + v_line.price_cents * v_line.qty;
    END LOOP;
    IF cardinality(v_unknown) > 0 THEN
        RAISE EXCEPTION 'order names SKUs that cannot be sold' USING ERRCODE = 'foreign_key_violation',
            DETAIL = array_to_string(v_unknown, ', ');
    END IF;

    INSERT INTO orders (customer_id, status, currency, total_cents, idempotency_key, request_hash)
    VALUES (p_customer_id, 'pending', v_currency, v_total, p_key, CASE WHEN p_key IS NOT NULL THEN v_hash END)
    ON CONFLICT (customer_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING order_id, now() + p_hold INTO v_order_id, v_expires;
    IF v_order_id IS NULL THEN
        -- a concurrent twin won: replay it
        RETURN bench.place_order_plpgsql(p_customer_id, p_items, p_key, p_hold);
    END IF;

    -- lines in SKU id order: lock each SKU's rows by location, allocate
    FOR v_line IN
        SELECT s.sku_id, s.code, s.price_cents, m.value::int AS qty
        FROM jsonb_each_text(v_merged) m
        JOIN (SELECT * FROM sku WHERE code = ANY (v_codes)) s ON s.code = m.key
        ORDER BY s.sku_id
    LOOP
        v_line_no := v_line_no + 1;
        INSERT INTO order_line (customer_id, order_id, line_no, sku_id, qty, unit_price_cents)
        VALUES (p_customer_id, v_order_id, v_line_no, v_line.sku_id, v_line.qty, v_line.price_cents);
        v_need := v_line.qty;
        v_avail := 0;
        FOR v_inv IN
            SELECT location_id, on_hand - reserved AS available
            FROM inventory WHERE sku_id = v_line.sku_id
            ORDER BY location_id
            FOR NO KEY UPDATE
        LOOP
            v_avail := v_avail + greatest(v_inv.available, 0);
            v_take := least(greatest(v_inv.available, 0), v_need);
            IF v_take > 0 THEN
                UPDATE inventory SET reserved = reserved + v_take, updated_at = now()
                WHERE sku_id = v_line.sku_id AND location_id = v_inv.location_id;
                INSERT INTO reservation (customer_id, order_id, line_no, location_id, qty, expires_at)
                VALUES (p_customer_id, v_order_id, v_line_no, v_inv.location_id, v_take, v_expires);
                v_need := v_need - v_take;
            END IF;
            EXIT WHEN v_need = 0;
        END LOOP;
        IF v_need > 0 THEN
            v_short := v_short || format('SKU "%s": requested %s, available %s.', v_line.code, v_line.qty, v_avail);
        END IF;
    END LOOP;
    IF cardinality(v_short) > 0 THEN
        RAISE EXCEPTION 'insufficient stock for % items', cardinality(v_short) USING ERRCODE = 'check_violation',
            DETAIL = array_to_string(v_short, ' ');
    END IF;

    INSERT INTO order_status_history (customer_id, order_id, seq, status, at, detail)
    VALUES (p_customer_id, v_order_id, 1, 'pending', now(),
            jsonb_build_object('lines', v_line_no, 'expires_at', v_expires));
    v_payload := jsonb_build_object('order_id', v_order_id, 'customer_id', p_customer_id, 'seq', 1,
                                    'status', 'pending', 'previous', NULL, 'at', now(),
                                    'total_cents', v_total, 'currency', v_currency, 'expires_at', v_expires);
    INSERT INTO outbox (customer_id, aggregatetype, aggregateid, type, payload, created_at)
    VALUES (p_customer_id, 'order', v_order_id::text, 'order.pending', v_payload, now());
    -- the event, as storefront.event_delivery says (see sql/relay.sql)
    IF current_setting('storefront.event_delivery', true) = 'relay' THEN
        INSERT INTO order_event_queue (payload) VALUES (v_payload::text);
    ELSE
        PERFORM pg_notify('storefront_order_events', v_payload::text);
    END IF;

    RETURN ROW(v_order_id, 'pending', v_total, v_currency, v_expires, false)::order_receipt;
END
$$;
