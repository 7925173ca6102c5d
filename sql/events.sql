-- Events: an append-only, time-partitioned fact stream (page views, carts,
-- checkouts...). One partition per UTC day, created ahead of time by
-- ensure_event_partitions(); rows outside every partition land in
-- event_default and are moved when their partition is created. Whole
-- partitions are dropped by apply_retention().
--
-- No key and no foreign key: events are facts about visitors who may be
-- anonymous (customer_id NULL) and outlive the rows they mention; a BRIN
-- index on `at` in each partition serves time ranges at almost no
-- ingestion cost. Its ranges are four pages (summarized as they fill), so
-- a rollup re-aggregating one late-changed hour reads about that hour.

CREATE TABLE event (
    at          timestamptz NOT NULL,
    kind        text        NOT NULL,
    customer_id bigint,
    props       jsonb       NOT NULL DEFAULT '{}',
    -- event times are real times: track_event() and track_events() refuse
    -- others with 22008; this keeps COPY and INSERT honest too, so no row
    -- can stop partitioning, a refresh or retention
    CONSTRAINT event_at_range CHECK (at >= '1970-01-01 00:00:00+00' AND at < '3000-01-01 00:00:00+00')
) PARTITION BY RANGE (at);
CREATE TABLE event_default PARTITION OF event DEFAULT;
-- BRIN indexes are made per partition (here and in ensure_event_partitions),
-- not on the parent: a partitioned index owned by the extension would clash
-- with pg_dump's restore of the run-time partitions and their indexes.
CREATE INDEX event_default_at_brin ON event_default USING brin (at);
COMMENT ON TABLE event IS 'Events, partitioned by day on at (see ensure_event_partitions()).';

-- Create the daily partitions covering [from_time - behind, from_time +
-- ahead], moving any rows of those days out of the default partition.
-- Returns how many partitions it created. Concurrent runs (a pg_cron job
-- and a manual call) take turns: each holds a transaction-level advisory
-- lock from before it looks for a partition until it commits, so the
-- second finds what the first created instead of creating it again.
CREATE FUNCTION ensure_event_partitions(ahead interval DEFAULT '7 days', behind interval DEFAULT '1 day',
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

CREATE FUNCTION track_event(kind text, at timestamptz DEFAULT now(), customer_id bigint DEFAULT NULL,
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

-- Batched ingestion, track_events(), is in Rust (extension/src/timeseries/ingest.rs):
-- it feeds the batch to PostgreSQL's COPY machinery.
