-- Accounts: what a customer may change about their account after
-- registering (register_customer and authenticate are in the library).

-- Set (or clear, with NULL or '') the customer's region; returns it. The
-- warehouse versions the customer from this change on (updated_at).
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
