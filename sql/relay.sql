-- Order events through a relay (storefront.event_delivery = 'relay').
--
-- In the default mode ('notify') every status change calls pg_notify in its
-- own transaction. PostgreSQL serializes the commits of all transactions
-- that notified: PreCommit_Notify takes one database-wide lock and holds it
-- through the commit record's WAL flush, so concurrent order transactions
-- queue on it (see the "Placing an order" chapter for the measurement).
-- In relay mode the change instead appends its JSON payload to
-- order_event_queue, and a relay (relay_order_events(), run by the
-- background worker start_event_relay() starts, or by pg_cron) sends the
-- queued events with NOTIFY in batches: one serialized commit per batch
-- instead of one per order.
--
-- Listeners see the same channel and the same payloads, and still never
-- see a rolled-back change: the relay reads only committed queue rows.
-- Delivery is later by up to the relay's interval.
--
-- The queue is UNLOGGED: its rows are not written to WAL, and a crash
-- empties it. That is NOTIFY's own durability (pending notifications do not
-- survive a crash either); the durable record of every change is the
-- outbox table, written in the same transaction as the change.

CREATE UNLOGGED TABLE order_event_queue (
    -- queue order: a later status change of one order always gets a larger
    -- id (it locks the order row, so it starts after the earlier change
    -- committed), and the relay sends in id order
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload   text        NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE order_event_queue IS
'Order events waiting for the relay (event_delivery = relay); unlogged, emptied by relay_order_events().';

-- The text NOTIFY sends for an order event: the event itself when it fits
-- (a NOTIFY payload is shorter than 8000 bytes), else a stub naming the
-- order, its status and seq, with "truncated": true; the full event stays
-- in the outbox. Free text that enters events is bounded, so only a row
-- written by other means can be too long, and one such row must never
-- stop delivery. Plain text work: the payload need not even be JSON.
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

-- Send up to max_events queued events, oldest first, with NOTIFY on
-- storefront_order_events, and remove them from the queue; returns how many
-- were sent. One relay runs at a time per database (a transaction-level
-- advisory lock; a concurrent call returns 0 at once), which keeps the
-- events of one order in order across batches. The notifications go out
-- when this function's transaction commits.
CREATE FUNCTION relay_order_events(max_events integer DEFAULT 10000)
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

-- The relay workers connected to this database (one, or briefly two while
-- a second finds the first and exits). pg_stat_activity is read once per
-- transaction unless cleared, so clear it: callers poll.
CREATE FUNCTION relay_worker_pids()
RETURNS SETOF integer
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_stat_clear_snapshot();
    SELECT a.pid FROM pg_stat_activity a
    WHERE a.backend_type = 'storefront event relay' AND a.datname = current_database()
$$;

-- Is a relay worker running for this database, and how far behind is it?
CREATE FUNCTION event_relay_status(
    OUT delivery text, OUT relay_pid integer, OUT queued bigint, OUT oldest_queued_at timestamptz)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
    SELECT coalesce(current_setting('storefront.event_delivery', true), 'notify'),
           (SELECT min(p) FROM relay_worker_pids() p),
           (SELECT count(*) FROM order_event_queue),
           (SELECT min(q.queued_at) FROM order_event_queue q)
$$;

-- Stop this database's relay worker; true if one was running. With the
-- library in shared_preload_libraries, the launcher's scheduler starts a
-- relay again, at its next round, in every database where relay mode is in
-- effect (extension/src/relay/launcher.rs): then stopping only pauses it,
-- and a NOTICE says so (relay mode as this session sees it).
CREATE FUNCTION stop_event_relay()
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_temp
AS $$
DECLARE
    v_stopped boolean;
BEGIN
    SELECT coalesce(bool_or(pg_catalog.pg_terminate_backend(p, 5000)), false) INTO v_stopped
    FROM relay_worker_pids() p;
    IF v_stopped AND pg_catalog.current_setting('storefront.event_delivery', true) = 'relay'
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.backend_type = 'storefront relay scheduler') THEN
        RAISE NOTICE 'the relay launcher starts a new relay for this database within % seconds',
            (SELECT s.setting FROM pg_catalog.pg_settings s WHERE s.name = 'storefront.relay_launcher_naptime')
            USING HINT = 'To keep it stopped, turn relay mode off for the database first (ALTER DATABASE ... SET storefront.event_delivery = notify), or set storefront.relay_launcher_naptime to 0.';
    END IF;
    RETURN v_stopped;
END
$$;
