-- Inventory: stock locations, restocks and stock levels as a user sees them.
--
-- Stock for a SKU lives in one inventory row per location. on_hand changes
-- only through stock_movement (restock, adjustment) and sales (consumed
-- reservations); reserved only through reservations. Row locks on inventory
-- are always taken in (sku_id, location_id) order.

CREATE FUNCTION add_location(code text, name text)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_id integer;
BEGIN
    IF add_location.code IS NULL OR add_location.code !~ '^[a-z0-9][a-z0-9_-]{0,31}$' THEN
        RAISE EXCEPTION 'invalid location code "%"', coalesce(add_location.code, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A location code has 1 to 32 lower-case letters, digits, "_" or "-".';
    END IF;
    IF add_location.name IS NULL OR btrim(add_location.name) = '' THEN
        RAISE EXCEPTION 'location name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO location AS l (code, name) VALUES (add_location.code, btrim(add_location.name))
    ON CONFLICT (code) DO NOTHING
    RETURNING l.location_id INTO v_id;
    IF v_id IS NULL THEN
        RAISE EXCEPTION 'location "%" already exists', add_location.code
            USING ERRCODE = 'unique_violation',
                  DETAIL = format('Key (code)=(%s) already exists.', add_location.code);
    END IF;
    RETURN v_id;
END
$$;

-- Largest quantity one restock call may add.
CREATE FUNCTION max_restock_qty() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 1000000;

CREATE FUNCTION restock(sku text, qty integer, location text DEFAULT 'main')
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

CREATE FUNCTION stock(sku text)
RETURNS TABLE (location text, on_hand integer, reserved integer, available integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_sku bigint;
BEGIN
    SELECT s.sku_id INTO v_sku FROM sku s WHERE s.code = btrim(stock.sku);
    IF v_sku IS NULL THEN
        PERFORM raise_unknown_sku(stock.sku);
    END IF;
    -- a hot-stock SKU's units are in its slots: add them up
    RETURN QUERY
        SELECT l.code, (i.on_hand + coalesce(h.on_hand, 0))::integer,
               (i.reserved + coalesce(h.reserved, 0))::integer,
               (i.on_hand - i.reserved + coalesce(h.on_hand - h.reserved, 0))::integer
        FROM inventory i
        JOIN location l USING (location_id)
        LEFT JOIN (SELECT s.location_id, sum(s.on_hand) AS on_hand, sum(s.reserved) AS reserved
                   FROM inventory_slot s WHERE s.sku_id = v_sku GROUP BY s.location_id) h USING (location_id)
        WHERE i.sku_id = v_sku
        ORDER BY l.location_id;
END
$$;
