-- Catalog: categories, products and sellable SKUs.
--
-- upsert_product() is the one way in: it creates or updates a SKU, attaching
-- it to the product with the given name in the given category (creating the
-- category path and the product as needed), so variants of one product share
-- it by name.

-- The one "unknown SKU" error, raised by every function that takes a SKU
-- code: 23503 with a hint pointing at upsert_product().
CREATE FUNCTION raise_unknown_sku(sku text)
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

-- 40001 when an UPDATE that must hit `expected` rows hit `got`: the rows
-- changed under the caller, and a retry in a new transaction sees them.
-- Every stock UPDATE checks its row count this way (or in Rust, with the
-- same message), so a change can fail but never get lost.
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

-- Find or create the category for a path such as 'Apparel/Men/Shirts'.
-- Returns NULL for a NULL or empty path.
CREATE FUNCTION category_for_path(path text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = @extschema@, pg_temp
AS $$
DECLARE
    v_parent bigint := NULL;
    v_id     bigint;
    v_slug   text := '';
    v_name   text;
BEGIN
    IF path IS NULL OR btrim(path) = '' THEN
        RETURN NULL;
    END IF;
    FOREACH v_name IN ARRAY string_to_array(path, '/') LOOP
        v_name := btrim(v_name);
        IF v_name = '' THEN
            RAISE EXCEPTION 'invalid category path "%"', path
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'A category path is names separated by "/", such as "Apparel/Men/Shirts", with no empty name.';
        END IF;
        v_slug := v_slug || CASE WHEN v_slug = '' THEN '' ELSE '/' END
                  || regexp_replace(lower(v_name), '\s+', '-', 'g');
        INSERT INTO category AS c (parent_id, name, slug)
        VALUES (v_parent, v_name, v_slug)
        ON CONFLICT ON CONSTRAINT category_parent_name_key DO NOTHING
        RETURNING c.category_id INTO v_id;
        IF v_id IS NULL THEN
            SELECT c.category_id INTO v_id
            FROM category c
            WHERE c.parent_id IS NOT DISTINCT FROM v_parent AND c.name = v_name;
        END IF;
        v_parent := v_id;
        v_id := NULL;
    END LOOP;
    RETURN v_parent;
END
$$;

-- Highest price of one unit, in minor units: 10^12 (ten billion of a
-- currency with cents). With at most 1,000 units a line and 100 lines an
-- order, no total can come near bigint's limit.
CREATE FUNCTION max_price_cents() RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 1000000000000;

CREATE FUNCTION upsert_product(
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

-- Take a SKU off sale (or back on): unsellable SKUs cannot be ordered.
CREATE FUNCTION set_sellable(sku text, sellable boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF set_sellable.sellable IS NULL THEN
        RAISE EXCEPTION 'sellable must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE sku s SET sellable = set_sellable.sellable, updated_at = now()
    WHERE s.code = btrim(set_sellable.sku);
    IF NOT FOUND THEN
        PERFORM raise_unknown_sku(set_sellable.sku);
    END IF;
END
$$;

-- The catalog as a shop shows it: sellable SKUs with their product,
-- category path and what is available now (all locations, hot-stock slots
-- included), in SKU order. Keyset pagination: pass the last SKU of a page
-- as after_sku to get the next; a search term matches the SKU code, the
-- product name or the category path, case-insensitively.
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

-- One SKU as products() shows it (sellable or not).
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
