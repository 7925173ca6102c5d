-- Rollups (downsampling) and retention. The rollup machinery is in Rust
-- (extension/src/timeseries/rollup.rs: create_rollup, refresh_rollup,
-- drop_rollup); this file holds its metadata, the watermark lookup used by
-- the real-time views, the trigger that logs late changes, retention and
-- the maintenance entry point that pg_cron calls.

CREATE TABLE rollup (
    name          text        PRIMARY KEY,
    -- the source relation (qualified, quoted); text, not regclass, so a
    -- dump restores before or after the source exists
    source        text        NOT NULL,
    -- set when the source is another rollup's bucket table
    source_rollup text        REFERENCES rollup (name),
    time_column   text        NOT NULL,
    bucket_width  interval    NOT NULL,
    group_columns text[]      NOT NULL DEFAULT '{}',
    aggregates    text[]      NOT NULL,
    target_schema text        NOT NULL,
    -- buckets before this are materialized (a bucket boundary)
    watermark     timestamptz NOT NULL DEFAULT '-infinity',
    refreshed_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rollup_source_rollup_idx ON rollup (source_rollup);
COMMENT ON TABLE rollup IS 'Rollups: what they aggregate, how, and how far they are materialized.';

-- Source rows inserted, updated or deleted below a rollup's watermark: the
-- time range [lo, hi] to re-aggregate at the next refresh.
CREATE TABLE rollup_invalidation (
    invalidation_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rollup_name     text        NOT NULL REFERENCES rollup (name) ON DELETE CASCADE,
    lo              timestamptz NOT NULL,
    hi              timestamptz NOT NULL,
    logged_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (lo <= hi)
);
CREATE INDEX rollup_invalidation_rollup_idx ON rollup_invalidation (rollup_name);
COMMENT ON TABLE rollup_invalidation IS 'Late changes below a rollup watermark, re-aggregated at the next refresh.';

-- How long to keep data: whole event partitions, or rollup buckets.
CREATE TABLE retention_policy (
    relation  text     PRIMARY KEY,
    keep      interval NOT NULL CHECK (keep > interval '0'),
    -- data before this has been dropped (rollups never re-aggregate it)
    horizon   timestamptz
);
COMMENT ON TABLE retention_policy IS 'Retention: keep this much of a relation; older data is dropped by apply_retention().';

-- The bucket function of rollups: time_bucket(width, ts), except that a
-- time whose bucket would start before the timestamp range (within one
-- width of 4714-11-24 BC) goes to the -infinity bucket instead of raising
-- an error, so no stored row can make a refresh fail.
CREATE FUNCTION rollup_bucket(bucket_width interval, ts timestamptz) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'storefront_rollup_bucket' LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION rollup_watermark(name text)
RETURNS timestamptz
LANGUAGE sql STABLE SECURITY DEFINER PARALLEL SAFE
SET search_path = @extschema@, pg_temp
AS $$ SELECT r.watermark FROM rollup r WHERE r.name = rollup_watermark.name $$;

-- Statement-level trigger on a rollup source: log the time range of the
-- rows changed below each rollup's watermark. TG_ARGV[0] is the time column.
CREATE FUNCTION rollup_invalidate()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
DECLARE
    src text := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);
    lo  timestamptz;
    hi  timestamptz;
    lo2 timestamptz;
    hi2 timestamptz;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        EXECUTE format('SELECT min(%1$I), max(%1$I) FROM new_rows', TG_ARGV[0]) INTO lo, hi;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        EXECUTE format('SELECT min(%1$I), max(%1$I) FROM old_rows', TG_ARGV[0]) INTO lo2, hi2;
        lo := least(lo, lo2);
        hi := greatest(hi, hi2);
    END IF;
    IF lo IS NOT NULL THEN
        -- FOR SHARE: a refresh running now (it holds the row FOR NO KEY
        -- UPDATE) finishes first and we see its new watermark; a refresh
        -- starting after us waits for our commit and sees our rows.
        INSERT INTO rollup_invalidation (rollup_name, lo, hi)
        SELECT r.name, lo, hi
        FROM (SELECT x.name, x.watermark FROM rollup x
              WHERE x.source = src AND x.source_rollup IS NULL AND x.time_column = TG_ARGV[0]
              FOR SHARE) r
        WHERE lo < r.watermark;
    END IF;
    RETURN NULL;
END
$$;

-- Keep `keep` of a relation: storefront.event (whole partitions) or a
-- rollup (its buckets). NULL removes the policy.
CREATE FUNCTION set_retention(relation text, keep interval)
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

-- Drop what the retention policies say is too old, as of `as_of`: whole
-- event partitions whose range ends by the cutoff (plus such rows of the
-- default partition), and rollup buckets before the cutoff. Rollups keep
-- their buckets when raw events go: they have their own policies.
CREATE FUNCTION apply_retention(as_of timestamptz DEFAULT now())
RETURNS TABLE (relation text, dropped bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p       record;
    part    record;
    cutoff  timestamptz;
    n       bigint;
    tbl     text;
BEGIN
    FOR p IN SELECT * FROM retention_policy ORDER BY 1 LOOP
        cutoff := as_of - p.keep;
        n := 0;
        IF p.relation = 'event' THEN
            FOR part IN
                SELECT c.oid::regclass AS rel,
                       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS upper
                FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'event'::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
            LOOP
                CONTINUE WHEN part.upper IS NULL OR part.upper > cutoff;
                EXECUTE format('DROP TABLE %s', part.rel);
                n := n + 1;
            END LOOP;
            DELETE FROM event_default e WHERE e.at < cutoff;
        ELSE
            SELECT format('%I.%I', r.target_schema, r.name || '_buckets') INTO tbl FROM rollup r WHERE r.name = p.relation;
            EXECUTE format('DELETE FROM %s WHERE bucket < $1', tbl) USING cutoff;
            GET DIAGNOSTICS n = ROW_COUNT;
        END IF;
        UPDATE retention_policy rp SET horizon = greatest(rp.horizon, cutoff) WHERE rp.relation = p.relation;
        relation := p.relation;
        dropped := n;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Everything periodic, in order: create event partitions ahead, refresh
-- every rollup (finer before coarser), apply retention. Schedule it with
-- pg_cron (see the book's time-series reference page).
CREATE FUNCTION run_maintenance(as_of timestamptz DEFAULT now())
RETURNS TABLE (task text, detail text)
LANGUAGE plpgsql VOLATILE
SET search_path = @extschema@, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    r record;
    n bigint;
BEGIN
    n := ensure_event_partitions(from_time => as_of);
    task := 'partitions';
    detail := n || ' created';
    RETURN NEXT;
    FOR r IN
        WITH RECURSIVE d AS (
            SELECT x.name, 0 AS depth FROM rollup x WHERE x.source_rollup IS NULL
            UNION ALL
            SELECT x.name, d.depth + 1 FROM rollup x JOIN d ON x.source_rollup = d.name
        )
        SELECT d.name, max(d.depth) AS depth FROM d GROUP BY d.name ORDER BY 2, 1
    LOOP
        n := refresh_rollup(r.name, as_of);
        task := 'refresh ' || r.name;
        detail := n || ' buckets written';
        RETURN NEXT;
    END LOOP;
    FOR r IN SELECT * FROM apply_retention(as_of) LOOP
        task := 'retention ' || r.relation;
        detail := r.dropped || ' dropped';
        RETURN NEXT;
    END LOOP;
END
$$;
