-- Rollups (downsampling) and retention. The rollup machinery is in Rust
-- (extension/src/timeseries/rollup/: create_rollup, refresh_rollup,
-- drop_rollup, invalidate_rollup, the maintenance steps and the capture
-- trigger); this file holds its metadata, the queue of buckets to bring up
-- to date, the watermark lookup used by the real-time views, retention and
-- the maintenance procedure that pg_cron calls.

-- The default home of rollups' tables and views. Objects in it belong to
-- the roles that created the rollups; only create_rollup() puts them here.
CREATE SCHEMA storefront_rollups;
COMMENT ON SCHEMA storefront_rollups IS 'Rollups'' bucket tables and views (create_rollup''s default schema).';

CREATE TABLE rollup (
    name          text        PRIMARY KEY,
    -- the source table, by OID: renaming it keeps the rollup working (for
    -- a stacked rollup, the finer rollup's bucket table)
    source        regclass    NOT NULL,
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

-- Buckets behind a rollup's watermark to bring up to date at the next
-- refresh: clean ones have delta rows to fold in (late inserts), dirty
-- ones are re-aggregated from the source (late updates and deletes, a
-- TRUNCATE, invalidate_rollup()). One row per bucket however many changes
-- hit it; writers upsert in bucket order, refreshes claim rows with
-- FOR UPDATE SKIP LOCKED.
CREATE TABLE rollup_pending (
    rollup_name text        NOT NULL REFERENCES rollup (name) ON DELETE CASCADE,
    bucket      timestamptz NOT NULL,
    dirty       boolean     NOT NULL,
    PRIMARY KEY (rollup_name, bucket)
);
COMMENT ON TABLE rollup_pending IS 'Rollup buckets changed behind the watermark, brought up to date by the next refresh.';

-- One row per step of each CALL run_maintenance(): what it did or why it
-- failed. Kept for 30 days.
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
COMMENT ON TABLE maintenance_log IS 'Each step of each run_maintenance() run: rows affected, or the error that stopped it.';

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

-- Keep `keep` of a relation: storefront.event (whole partitions) or a
-- rollup (its buckets; only its owner may say). NULL removes the policy.
CREATE FUNCTION set_retention(relation text, keep interval)
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

-- Apply one relation's retention policy as of `as_of`: for "event", drop
-- whole partitions whose range ended by the cutoff (plus such rows of the
-- default partition); for a rollup, delete its buckets before the cutoff
-- (as the rollup's owner). Rollups keep their buckets when raw events go:
-- they have their own policies, and a refresh never re-aggregates buckets
-- before the horizon recorded here. Returns what it dropped (partitions,
-- or bucket rows); NULL when the relation has no policy.
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

-- Every retention policy, applied as of `as_of`, in one transaction.
-- CALL run_maintenance() applies them one per transaction instead.
CREATE FUNCTION apply_retention(as_of timestamptz DEFAULT now())
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

-- The rollups in the order maintenance refreshes them: finer before
-- coarser (a rollup after the one it is built on), then by name.
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

-- The steps of recent maintenance runs, newest run first.
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
