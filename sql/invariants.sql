-- check_invariants(): every invariant of DESIGN.md, checked over the live
-- data. One row per invariant: ok, and when not ok how many rows break it
-- with up to five examples. Safe to run at any time (reads only); on a
-- busy store run it in a REPEATABLE READ transaction for one snapshot.

-- Summarise violations: '' when none, else 'N violation(s), e.g. a; b; c'.
CREATE FUNCTION invariant_detail(violations text[])
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN coalesce(cardinality(violations), 0) = 0 THEN 'no violations'
            ELSE format('%s violation(s), e.g. %s', cardinality(violations),
                        array_to_string(violations[1:5], '; ')) END;

CREATE FUNCTION check_invariants()
RETURNS TABLE (invariant text, ok boolean, detail text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v text[];
BEGIN
    -- 1. per SKU and location: 0 <= reserved <= on_hand, on every stock
    --    row and every hot-stock slot (the CHECK constraints enforce it too)
    SELECT array_agg(w ORDER BY w) INTO v FROM (
        SELECT format('sku_id %s at location_id %s has on_hand %s, reserved %s',
                      i.sku_id, i.location_id, i.on_hand, i.reserved) AS w
        FROM inventory i WHERE NOT (i.reserved >= 0 AND i.reserved <= i.on_hand)
        UNION ALL
        SELECT format('sku_id %s at location_id %s slot %s has on_hand %s, reserved %s',
                      s.sku_id, s.location_id, s.slot, s.on_hand, s.reserved)
        FROM inventory_slot s WHERE NOT (s.reserved >= 0 AND s.reserved <= s.on_hand)
    ) x;
    invariant := 'inventory: 0 <= reserved <= on_hand'; ok := v IS NULL; detail := invariant_detail(v);
    RETURN NEXT;

    -- 2. on_hand (stock row plus its slots) = restocks and adjustments - sales
    SELECT array_agg(format('sku_id %s at location_id %s has on_hand %s, but movements %s - sold %s = %s',
                            k.sku_id, k.location_id, coalesce(i.on_hand, 0) + coalesce(hs.on_hand, 0),
                            coalesce(m.q, 0), coalesce(s.q, 0), coalesce(m.q, 0) - coalesce(s.q, 0))
                     ORDER BY k.sku_id, k.location_id)
    INTO v
    FROM (SELECT sku_id, location_id FROM inventory
          UNION SELECT sku_id, location_id FROM inventory_slot
          UNION SELECT sku_id, location_id FROM stock_movement
          UNION SELECT l.sku_id, r.location_id
                FROM reservation r JOIN order_line l USING (customer_id, order_id, line_no)
                WHERE r.state = 'consumed') k
    LEFT JOIN inventory i USING (sku_id, location_id)
    LEFT JOIN (SELECT sku_id, location_id, sum(on_hand) AS on_hand FROM inventory_slot GROUP BY 1, 2) hs
           USING (sku_id, location_id)
    LEFT JOIN (SELECT sku_id, location_id, sum(qty) AS q FROM stock_movement GROUP BY 1, 2) m
           USING (sku_id, location_id)
    LEFT JOIN (SELECT l.sku_id, r.location_id, sum(r.qty) AS q
               FROM reservation r JOIN order_line l USING (customer_id, order_id, line_no)
               WHERE r.state = 'consumed' GROUP BY 1, 2) s
           USING (sku_id, location_id)
    WHERE coalesce(i.on_hand, 0) + coalesce(hs.on_hand, 0) <> coalesce(m.q, 0) - coalesce(s.q, 0);
    invariant := 'inventory: on_hand = initial + restocks - sold'; ok := v IS NULL; detail := invariant_detail(v);
    RETURN NEXT;

    -- 3. reserved = live reservations, per stock row and per slot (slot -1:
    --    the stock row itself)
    SELECT array_agg(format('sku_id %s at location_id %s%s has reserved %s, but live holds total %s',
                            k.sku_id, k.location_id,
                            CASE WHEN k.slot >= 0 THEN ' slot ' || k.slot ELSE '' END,
                            coalesce(lv.reserved, 0), coalesce(h.q, 0))
                     ORDER BY k.sku_id, k.location_id, k.slot)
    INTO v
    FROM (SELECT sku_id, location_id, -1 AS slot, reserved FROM inventory
          UNION ALL
          SELECT sku_id, location_id, slot, reserved FROM inventory_slot) lv
    FULL JOIN (SELECT l.sku_id, r.location_id, coalesce(r.slot, -1) AS slot, sum(r.qty) AS q
               FROM reservation r JOIN order_line l USING (customer_id, order_id, line_no)
               WHERE r.state = 'held' GROUP BY 1, 2, 3) h
           USING (sku_id, location_id, slot)
    CROSS JOIN LATERAL (SELECT coalesce(lv.sku_id, h.sku_id) AS sku_id,
                               coalesce(lv.location_id, h.location_id) AS location_id,
                               coalesce(lv.slot, h.slot) AS slot) k
    WHERE coalesce(lv.reserved, 0) <> coalesce(h.q, 0);
    invariant := 'inventory: reserved = sum of live reservations'; ok := v IS NULL; detail := invariant_detail(v);
    RETURN NEXT;

    -- 4. each order's total = sum of its lines, and 5. each order has a line
    SELECT array_agg(format('order %s has total %s, but its lines sum to %s',
                            o.order_id, o.total_cents, coalesce(l.s, 0)) ORDER BY o.order_id)
    INTO v
    FROM orders o
    LEFT JOIN (SELECT customer_id, order_id, sum(qty * unit_price_cents) AS s
               FROM order_line GROUP BY 1, 2) l USING (customer_id, order_id)
    WHERE l.s IS DISTINCT FROM o.total_cents AND l.s IS NOT NULL;
    invariant := 'orders: total = sum of lines'; ok := v IS NULL; detail := invariant_detail(v);
    RETURN NEXT;

    SELECT array_agg(format('order %s has no lines', o.order_id) ORDER BY o.order_id)
    INTO v
    FROM orders o
    WHERE NOT EXISTS (SELECT 1 FROM order_line l
                      WHERE l.customer_id = o.customer_id AND l.order_id = o.order_id);
    invariant := 'orders: at least one line'; ok := v IS NULL; detail := invariant_detail(v);
    RETURN NEXT;

    -- 6. a paid order has exactly one succeeded payment, equal to its total;
    --    an unpaid order has none
    SELECT array_agg(format('order %s (%s, total %s) has %s succeeded payment(s) totalling %s',
                            o.order_id, o.status, o.total_cents, coalesce(p.n, 0), coalesce(p.s, 0))
                     ORDER BY o.order_id)
    INTO v
    FROM orders o
    LEFT JOIN (SELECT customer_id, order_id, count(*) AS n, sum(amount_cents) AS s
               FROM payment WHERE succeeded GROUP BY 1, 2) p USING (customer_id, order_id)
    WHERE CASE WHEN o.status IN ('paid', 'shipped', 'delivered')
               THEN coalesce(p.n, 0) <> 1 OR p.s <> o.total_cents
               ELSE coalesce(p.n, 0) <> 0 END;
    invariant := 'payments: a paid order has exactly one succeeded payment equal to its total';
    ok := v IS NULL; detail := invariant_detail(v);
    RETURN NEXT;

    -- 7. one order per (customer, idempotency key)
    SELECT array_agg(format('customer %s has %s orders under idempotency key %L', customer_id, n, idempotency_key))
    INTO v
    FROM (SELECT customer_id, idempotency_key, count(*) AS n FROM orders
          WHERE idempotency_key IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1) d;
    invariant := 'orders: one order per (customer, idempotency key)'; ok := v IS NULL; detail := invariant_detail(v);
    RETURN NEXT;

    -- 8. history: seq 1..n, each step legal, last step = current status
    SELECT array_agg(w ORDER BY w) INTO v FROM (
        SELECT format('order %s: history step %s (%s -> %s) is not a legal move',
                      order_id, seq, coalesce(prev, 'new'), status) AS w
        FROM (SELECT order_id, seq, status,
                     lag(status) OVER (PARTITION BY customer_id, order_id ORDER BY seq) AS prev,
                     row_number() OVER (PARTITION BY customer_id, order_id ORDER BY seq) AS rn
              FROM order_status_history) h
        WHERE NOT order_status_can_move(prev, status) OR seq <> rn
        UNION ALL
        SELECT format('order %s is %s, but its history ends with %s', o.order_id, o.status,
                      coalesce(h.status, 'nothing'))
        FROM orders o
        LEFT JOIN LATERAL (SELECT status FROM order_status_history x
                           WHERE x.customer_id = o.customer_id AND x.order_id = o.order_id
                           ORDER BY seq DESC LIMIT 1) h ON true
        WHERE h.status IS DISTINCT FROM o.status
    ) x;
    invariant := 'history: every order''s history follows the status machine to its status';
    ok := v IS NULL; detail := invariant_detail(v);
    RETURN NEXT;

    -- 9. every status change has its outbox row
    SELECT array_agg(format('order %s status change %s (%s) has no outbox row', h.order_id, h.seq, h.status)
                     ORDER BY h.order_id, h.seq)
    INTO v
    FROM order_status_history h
    WHERE NOT EXISTS (
        SELECT 1 FROM outbox b
        WHERE b.customer_id = h.customer_id AND b.aggregatetype = 'order'
          AND b.aggregateid = h.order_id::text AND b.type = 'order.' || h.status
          AND (b.payload ->> 'seq')::integer = h.seq);
    invariant := 'outbox: every status change has its outbox row'; ok := v IS NULL; detail := invariant_detail(v);
    RETURN NEXT;

    -- 10. reservations agree with the order's status: a pending order holds
    --     each line's qty, a paid one has sold it, any other holds nothing
    SELECT array_agg(format('order %s (%s) line %s: qty %s, held %s, sold %s',
                            l.order_id, o.status, l.line_no, l.qty, coalesce(r.held, 0), coalesce(r.sold, 0))
                     ORDER BY l.order_id, l.line_no)
    INTO v
    FROM order_line l
    JOIN orders o USING (customer_id, order_id)
    LEFT JOIN (SELECT customer_id, order_id, line_no,
                      sum(qty) FILTER (WHERE state = 'held') AS held,
                      sum(qty) FILTER (WHERE state = 'consumed') AS sold
               FROM reservation GROUP BY 1, 2, 3) r USING (customer_id, order_id, line_no)
    WHERE CASE o.status
              WHEN 'pending' THEN coalesce(r.held, 0) <> l.qty OR coalesce(r.sold, 0) <> 0
              WHEN 'paid' THEN coalesce(r.held, 0) <> 0 OR coalesce(r.sold, 0) <> l.qty
              WHEN 'shipped' THEN coalesce(r.held, 0) <> 0 OR coalesce(r.sold, 0) <> l.qty
              WHEN 'delivered' THEN coalesce(r.held, 0) <> 0 OR coalesce(r.sold, 0) <> l.qty
              ELSE coalesce(r.held, 0) <> 0 OR coalesce(r.sold, 0) <> 0 END;
    invariant := 'reservations: every line is held, sold or released as its order''s status says';
    ok := v IS NULL; detail := invariant_detail(v);
    RETURN NEXT;
END
$$;
