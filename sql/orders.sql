-- Orders, the SQL side: reading an order (order_details, order_timeline,
-- order_events, order_customer) and the hot-stock switch (set_hot_stock).
-- Placement, payments and moves are in Rust (extension/src/orders/).
--
-- The readers act for the order's customer: with storefront.customer_id
-- set, only that customer's orders (42501 otherwise; see roles.sql).

CREATE FUNCTION order_timeline(order_id bigint)
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

-- Whose order it is; P0002 for an unknown order. (The payment webhook of
-- a gateway acts for this customer after it has checked the signature.)
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

-- An order as a customer sees it: status, total, the hold's end (while
-- pending) and its lines as JSON.
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

-- The order's status changes after seq after_seq, with their seq numbers
-- (which the NOTIFY payloads carry too): a listener that reconnects reads
-- what it missed from here.
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

-- Switch a SKU into hot-stock mode with `slots` slots per location (or
-- back to normal with 0). Live holds move with their units, so every
-- invariant holds across the switch.
--
-- Locks: the SKU row FOR UPDATE first. Every transaction that reads the
-- SKU's mode or moves its stock (placing, paying, cancelling, expiring,
-- restocking) holds FOR KEY SHARE on that row from before it reads until
-- it commits, so this waits for all of them to finish and none starts
-- until the switch commits: nothing sees the stock half moved, and no
-- order row needs locking here (which would invert the lock order of
-- payments: order row, then SKU). Then its stock rows and its slots, in
-- order. Every UPDATE must hit the rows it was computed for (40001).
CREATE FUNCTION set_hot_stock(sku text, slots integer)
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
