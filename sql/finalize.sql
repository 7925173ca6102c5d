-- Runs last in the install script: documentation comments on every
-- function, privileges, and pg_dump registration of the data tables.

-- ------------------------------------------------------------- comments --
COMMENT ON FUNCTION register_customer(text, text, text) IS
'Register a customer with an argon2id-hashed password; returns the customer id. Email is trimmed and lower-cased. Errors: 22023 malformed email, empty password or name; 23505 email already registered.';
COMMENT ON FUNCTION authenticate(text, text) IS
'The customer id for a correct email and password, else NULL. Always performs one argon2id verification, so timing does not reveal whether the email exists.';
COMMENT ON FUNCTION upsert_product(text, text, bigint, character, text, jsonb) IS
'Create or update a sellable SKU and its product (found or created by name within the category path, e.g. ''Apparel/Men/Shirts''); returns the SKU id. Errors: 22023 on a bad code, name, price, currency or attributes; 22003 price above max_price_cents().';
COMMENT ON FUNCTION set_sellable(text, boolean) IS
'Take a SKU off sale (false) or put it back (true); unsellable SKUs cannot be ordered. Errors: 23503 unknown SKU.';
COMMENT ON FUNCTION products(text, text, integer) IS
'Sellable SKUs with product, category path and units available, in SKU order: page_size rows (1..200) after after_sku (keyset pagination), matching search (SKU code, product name or category path, case-insensitive) when given. Errors: 22023 page size out of range, search over 200 or page key over 64 characters.';
COMMENT ON FUNCTION product(text) IS
'One SKU as products() shows it. Errors: 23503 unknown SKU.';
COMMENT ON FUNCTION raise_unknown_sku(text) IS
'Internal: raise the 23503 "product SKU does not exist" error shared by every function that takes a SKU code.';
COMMENT ON FUNCTION category_for_path(text) IS
'Internal: find or create the category for a path such as ''Apparel/Men/Shirts''; NULL for a NULL or empty path.';
COMMENT ON FUNCTION add_location(text, text) IS
'Add a stock location (code: lower-case letters, digits, _ or -); returns its id. Errors: 22023 bad code or name, 23505 code taken.';
COMMENT ON FUNCTION max_restock_qty() IS
'The largest quantity one restock() call may add.';
COMMENT ON FUNCTION max_price_cents() IS
'The highest price of one unit, in minor units (10^12): with at most 1,000 units a line and 100 lines an order, no order total can overflow.';
COMMENT ON FUNCTION expect_row_count(text, bigint, bigint) IS
'Internal: raise 40001 when an UPDATE that must hit expected rows hit got (the rows changed under the caller; retry).';
COMMENT ON FUNCTION restock(text, integer, text) IS
'Add qty units of a SKU at a location (default ''main'') and record the movement; returns the new on_hand. A hot-stock SKU''s units are spread over its slots. Errors: 22023 qty out of range, 23503 unknown SKU or location, 55P03 lock wait over 5s, 40001 stock changed under the call (retry).';
COMMENT ON FUNCTION stock(text) IS
'Inventory of a SKU per location as a user sees it: on_hand, reserved and available = on_hand - reserved. Errors: 23503 unknown SKU.';
COMMENT ON FUNCTION seed_u(bigint, integer) IS
'Deterministic uniform number in [0, 1) from a key and a salt (used by seed_demo_data).';
COMMENT ON FUNCTION seed_demo_data(integer, date) IS
'Load realistic, deterministic demo data: scale 1 = 100k customers, 10k SKUs in a 3-level category tree, ~400k orders with ~1.05M lines over the 365 days before anchor. Reports progress with NOTICEs; returns row counts. Errors: 22023 scale outside 1..100, 55000 demo data already loaded.';
COMMENT ON FUNCTION invariant_detail(text[]) IS
'Internal: summarise invariant violations for check_invariants().';
COMMENT ON FUNCTION check_invariants() IS
'Check every store invariant over the live data: stock bounds and ledger, live holds, order totals and lines, payments, idempotency keys, status history and outbox. One row per invariant with ok and a detail naming up to five violations.';
COMMENT ON FUNCTION order_status_can_move(text, text) IS
'Whether an order may move from status from (NULL: a new order) to status to, per the order status machine.';

COMMENT ON FUNCTION place_order(bigint, jsonb, text, interval) IS
'Place an order in one transaction: validate the items ([{"sku": ..., "qty": n}, ...]; repeats merged), reserve every line or none (rows locked in SKU order), snapshot prices, write order, lines, reservations, status history and outbox, NOTIFY storefront_order_events. Same idempotency key and request: the original receipt (replayed = true). Errors: 23514 short stock (DETAIL names each SKU), 23503 unknown customer or SKU, 23505 key reused for another request, 22023 bad qty / line count / hold / SKU code, 22P02 malformed items (wrong shape, nested over 128 levels), 55P03 lock wait over 2s, 40001 stock changed under the call (retry).';
COMMENT ON FUNCTION record_payment(bigint, bigint, boolean, text) IS
'Record a payment attempt; returns the order status after it. Success sells the held stock (or re-reserves it after expiry or a failed attempt: 23514 if gone) and marks the order paid; failure releases the stock (payment_failed). Idempotent per provider_ref. Errors: P0002 unknown order, 22023 amount differs from the total, 55000 order cancelled or already paid, 23505 provider_ref used for another payment.';
COMMENT ON FUNCTION cancel_order(bigint, text) IS
'Cancel a pending, failed or expired order, releasing any stock it holds; returns ''cancelled''. The reason (at most 500 characters) goes into the order''s event. Errors: P0002 unknown order, 55000 order paid, shipped, delivered or already cancelled, 22023 reason too long.';
COMMENT ON FUNCTION ship_order(bigint) IS
'Mark a paid order shipped; returns ''shipped''. Errors: P0002 unknown order, 55000 order not paid.';
COMMENT ON FUNCTION deliver_order(bigint) IS
'Mark a shipped order delivered; returns ''delivered''. Errors: P0002 unknown order, 55000 order not shipped.';
COMMENT ON FUNCTION expire_reservations(timestamp with time zone, integer) IS
'Release holds that expired by as_of (at most batch per call; pending orders move to expired); returns the number of reservations released. Orders locked by other sessions are skipped (SKIP LOCKED), so concurrent sweepers never wait on each other. Schedule it with pg_cron.';
COMMENT ON FUNCTION order_timeline(bigint) IS
'Every status change of an order, oldest first: time, status and detail. Errors: P0002 unknown order, 42501 another customer''s order.';
COMMENT ON FUNCTION order_details(bigint) IS
'An order as its customer sees it: status, total, currency, times, the hold''s end while pending, and its lines as JSON [{line_no, sku, qty, unit_price_cents}]. Errors: P0002 unknown order, 42501 another customer''s order.';
COMMENT ON FUNCTION order_events(bigint, integer) IS
'The order''s status changes after seq after_seq (default all), with their seq numbers, oldest first; a listener that reconnects reads what it missed from here. Errors: P0002 unknown order, 42501 another customer''s order, 22023 after_seq < 0.';
COMMENT ON FUNCTION order_customer(bigint) IS
'The customer an order belongs to. Errors: P0002 unknown order.';
COMMENT ON FUNCTION set_hot_stock(text, integer) IS
'Turn hot-stock mode on for a SKU with n slots per location (1..64), or off with 0: its stock is split over slot rows that concurrent buyers claim with SKIP LOCKED. Live holds move with their units. Waits for every transaction using the SKU''s stock to finish (the SKU row FOR UPDATE). Errors: 22023 slots out of range, 23503 unknown SKU, 55P03 lock wait over 5s.';

COMMENT ON FUNCTION time_bucket(interval, timestamp with time zone) IS
'The start of the bucket of width bucket_width holding ts, TimescaleDB semantics: buckets in UTC from origin 2000-01-03 (months: 2000-01-01); a width is months/years or days/time, positive. Errors: 22023 width <= 0 or mixing months with days or time.';
COMMENT ON FUNCTION time_bucket(interval, timestamp without time zone) IS
'time_bucket for timestamp: bucket start of width bucket_width (origin 2000-01-03; months: 2000-01-01).';
COMMENT ON FUNCTION time_bucket(interval, timestamp with time zone, timestamp with time zone) IS
'time_bucket with an explicit origin: buckets are aligned to origin (for month widths, to its year and month).';
COMMENT ON FUNCTION time_bucket(interval, timestamp without time zone, timestamp without time zone) IS
'time_bucket for timestamp with an explicit origin.';
COMMENT ON FUNCTION time_bucket(interval, timestamp with time zone, interval) IS
'time_bucket with an offset: time_bucket(width, ts - offset) + offset (arithmetic in UTC).';
COMMENT ON FUNCTION time_bucket(interval, timestamp without time zone, interval) IS
'time_bucket for timestamp with an offset: time_bucket(width, ts - offset) + offset.';
COMMENT ON FUNCTION time_bucket(interval, timestamp with time zone, text, timestamp with time zone, interval) IS
'time_bucket in a time zone (TimescaleDB 2.28 semantics): the offset is applied in absolute time, then buckets align to local midnight and month starts in timezone, so a day bucket spanning a DST change lasts 23 or 25 hours; at a fall-back change a bucket always starts at or before its time. A NULL origin or offset means not given. Errors: 22023 unknown time zone or bad width.';
COMMENT ON FUNCTION time_bucket(interval, date) IS
'time_bucket for dates: fixed widths must be whole days (22023 otherwise); months as for timestamps.';
COMMENT ON FUNCTION time_bucket(interval, date, date) IS
'time_bucket for dates with an explicit origin date.';
COMMENT ON FUNCTION time_bucket(interval, date, interval) IS
'time_bucket for dates with an offset: time_bucket(width, ts - offset) + offset. Like TimescaleDB, the offset must be zero or more whole days. Errors: 22023 sub-day, negative or month offset, width not whole days or months.';
COMMENT ON FUNCTION time_bucket_series(interval, timestamp with time zone, timestamp with time zone) IS
'Every bucket start from the bucket holding start up to the last one starting before finish (at most 1,000,000).';
COMMENT ON FUNCTION time_bucket_series(interval, timestamp with time zone, timestamp with time zone, text) IS
'time_bucket_series with buckets aligned to local time in a time zone.';
COMMENT ON FUNCTION gapfill(interval, timestamp with time zone, timestamp with time zone, timestamp with time zone[], double precision[], text, text) IS
'One row per bucket in [start, finish) with the value given for it in (times, vals), else NULL (fill ''none''), the last earlier value (''locf'') or the linear interpolation of its neighbours (''linear''). Errors: 22023 unknown fill, arrays of different length, two values in one bucket.';
COMMENT ON FUNCTION locf_step(anyelement, anyelement) IS
'Internal: transition function of the locf aggregate.';
COMMENT ON AGGREGATE locf(anyelement) IS
'Last non-NULL value so far; use as locf(value) OVER (ORDER BY bucket) to carry values forward across gaps.';
COMMENT ON FUNCTION ensure_event_partitions(interval, interval, timestamp with time zone) IS
'Create the daily partitions of storefront.event from from_time - behind to from_time + ahead (moving matching rows out of the default partition); returns how many it created. Concurrent calls take turns. Errors: 22023 window negative or over 3660 days, 22008 window outside 1970 up to 3000.';
COMMENT ON FUNCTION track_event(text, timestamp with time zone, bigint, jsonb) IS
'Record one event (kind such as ''page_view'', time from 1970 up to 3000 (UTC), customer or NULL, props object). Errors: 22023 bad kind or props, 22008 time out of range or infinite.';
COMMENT ON FUNCTION track_events(text[], timestamp with time zone[], bigint[], jsonb[]) IS
'Record many events in one call (arrays of equal length) through PostgreSQL''s COPY machinery; NULL times mean now(); props go in exactly as given. Returns how many. Errors: 22023 arrays of different length, a bad kind, props that are not objects; 22008 a time out of range (1970 up to 3000, UTC) or infinite.';
COMMENT ON FUNCTION rollup_watermark(text) IS
'The watermark of a rollup: buckets before it are materialized. Used by the real-time views.';
COMMENT ON FUNCTION set_retention(text, interval) IS
'Keep this much of ''event'' (whole daily partitions) or of a rollup (its buckets; the rollup''s owner only); NULL removes the policy. Errors: 42704 unknown relation, 22023 keep not in (0, 1000 years], 42501 not the rollup''s owner.';
COMMENT ON FUNCTION rollup_bucket(interval, timestamp with time zone) IS
'The bucket function of rollups: time_bucket(bucket_width, ts), but -infinity for a time whose bucket would start before the timestamp range, so no stored row can make a refresh fail.';
COMMENT ON FUNCTION apply_retention(timestamp with time zone) IS
'Apply every retention policy as of as_of, in one transaction: event partitions whose range ended, rollup buckets before the cutoff. Returns what it dropped per relation.';
COMMENT ON FUNCTION apply_retention_to(text, timestamp with time zone) IS
'Apply one relation''s retention policy as of as_of (a step of run_maintenance). Returns the partitions or bucket rows dropped, NULL without a policy.';
COMMENT ON PROCEDURE run_maintenance(timestamp with time zone, interval, integer) IS
'Periodic maintenance for pg_cron (CALL it): event partitions ahead, every rollup brought up to date (finer first), retention; each step in its own transaction, waiting at most lock_wait for a lock; a failing step is logged and the rest run. Errors: 25001 inside a transaction block, 22023 bad arguments.';
COMMENT ON FUNCTION maintenance_begin() IS
'Internal (run_maintenance): refuse a transaction block, trim the log, return the run''s id.';
COMMENT ON FUNCTION maintenance_note(bigint, text, timestamp with time zone, boolean, bigint, text, text) IS
'Internal (run_maintenance): log one step and say it (NOTICE, or WARNING when it failed).';
COMMENT ON FUNCTION maintenance_rollups() IS
'Internal (run_maintenance): rollups in refresh order, finer before coarser.';
COMMENT ON FUNCTION maintenance_retention_relations() IS
'Internal (run_maintenance): the relations with a retention policy.';
COMMENT ON FUNCTION maintenance_report(integer) IS
'The steps of the last runs of run_maintenance: when, how long, rows, and the SQLSTATE and message of a failure.';
COMMENT ON FUNCTION create_rollup(text, regclass, text, interval, text[], text[], text) IS
'Define a rollup of a table (or of a finer rollup) in buckets of bucket_width, grouped by group_columns, keeping aggregates (count, sum(c), min(c), max(c), avg(c)). Creates schema.name_buckets, name_deltas, the real-time view schema.name and the Grafana view name_series, owned by the calling role. Errors: 22023 bad name, width, aggregate or source kind, 42P01 unknown source, 42703 unknown column, 23505 name taken, 42501 no SELECT or TRIGGER on the source, or a schema owned by another role.';
COMMENT ON FUNCTION refresh_rollup(text, timestamp with time zone) IS
'Materialize a rollup''s complete buckets up to upto, fold in late inserts and re-aggregate buckets that late updates and deletes touched, in the caller''s transaction; returns the bucket rows written. Errors: 42704 unknown rollup, 0A000 under REPEATABLE READ or SERIALIZABLE.';
COMMENT ON FUNCTION drop_rollup(text) IS
'Drop a rollup (views, tables, queued buckets, policy, and source triggers no other rollup needs). Errors: 42704 unknown rollup, 2BP01 a coarser rollup is built on it, 42501 not its owner.';
COMMENT ON FUNCTION invalidate_rollup(text, timestamp with time zone, timestamp with time zone) IS
'Queue every bucket of a rollup that source times in [from_time, to_time) touch for re-aggregation at the next refresh, after changes the capture triggers cannot see (ATTACH or DETACH PARTITION, triggers disabled). Returns the buckets queued. Errors: 42704 unknown rollup.';
COMMENT ON FUNCTION rollup_advance(text, timestamp with time zone) IS
'A step of run_maintenance: advance a rollup''s watermark to upto; returns the bucket rows written.';
COMMENT ON FUNCTION rollup_pending_step(text, integer) IS
'A step of run_maintenance: claim up to batch queued buckets of a rollup (skipping any another refresh holds) and bring them up to date; returns the buckets claimed.';
COMMENT ON FUNCTION rollup_drop_buckets(text, timestamp with time zone) IS
'Internal (retention): delete a rollup''s buckets before cutoff, as the rollup''s owner.';
COMMENT ON FUNCTION rollup_repair(text) IS
'Internal (upgrades): bring a rollup''s run-time objects up to this version; safe to repeat.';
COMMENT ON FUNCTION rollup_arm(regclass) IS
'Internal (ensure_event_partitions): put the capture triggers on a new partition of a rollup source.';
COMMENT ON FUNCTION rollup_capture() IS
'Internal: statement trigger on rollup sources and their partitions; late inserts become delta rows, late updates, deletes and truncates queue their buckets.';

COMMENT ON FUNCTION pipeline_status() IS
'The order pipeline at a glance: live holds, events waiting for the relay and the oldest one''s time, and how far the most lagging rollup''s watermark is behind now.';
COMMENT ON FUNCTION dashboard_page_views(timestamp with time zone, timestamp with time zone, interval) IS
'Grafana time series: page views per bucket (default hourly) over [from_time, to_time); empty buckets are 0.';
COMMENT ON FUNCTION dashboard_orders(timestamp with time zone, timestamp with time zone, interval) IS
'Grafana time series: orders placed per bucket (default per minute) over [from_time, to_time).';
COMMENT ON FUNCTION dashboard_revenue(timestamp with time zone, timestamp with time zone, interval) IS
'Grafana time series: revenue of paid, shipped and delivered orders per bucket (default hourly), one series (metric) per currency.';
COMMENT ON FUNCTION dashboard_funnel(timestamp with time zone, timestamp with time zone) IS
'Grafana time series: the daily funnel page views -> add to cart -> orders, with step conversion rates in percent.';

COMMENT ON FUNCTION grant_app_role(regrole) IS
'Grant an application role what it needs to act for customers: USAGE on the schema, EXECUTE on the functions listed by app_role_functions() (orders, payments, cancellation, reading orders and the catalog, accounts, events) and SELECT on the customer-facing tables (customer without password_hash), whose rows row-level security limits to the acting customer. Records the role as an app role. Idempotent; returns the privileges granted. Errors: 22004 NULL role, 42704 unknown role.';
COMMENT ON FUNCTION grant_catalog_role(regrole) IS
'Grant a catalog role USAGE on the schema and EXECUTE on the functions listed by catalog_role_functions(): products, prices, sellability, locations, stock and hot-stock mode. Records the role as a catalog role. Idempotent; returns the privileges granted.';
COMMENT ON FUNCTION grant_operations_role(regrole) IS
'Grant an operations role USAGE on the schema and EXECUTE on the functions listed by operations_role_functions(): ship, deliver, cancel, expire, read any order, the event relay, maintenance and rollups, invariants and dashboards; and SELECT on storefront.event (a rollup reads its source as its owner). Records the role as an operations role (it acts for every customer). Idempotent; returns the privileges granted.';
COMMENT ON FUNCTION grant_analyst_role(regrole) IS
'Grant a read-only analyst role USAGE on the schema, SELECT on the store''s tables (customer without password_hash) and EXECUTE on the reporting functions listed by analyst_role_functions(). Records the role as an analyst (row-level security shows it every row). Idempotent; returns the privileges granted. Errors: 22004 NULL role, 42704 unknown role.';
COMMENT ON FUNCTION grant_functions(regrole, regprocedure[], text) IS
'Grant a role USAGE on the schema and EXECUTE on the routines given, and record its kind (app, catalog, operations, analyst; NULL records nothing); returns the privileges granted. The building block of the grant_*_role() functions. Errors: 22004 NULL role, 42704 unknown role, 22023 unknown kind.';
COMMENT ON FUNCTION grant_table_reads(regrole, regclass[]) IS
'Internal: grant SELECT on the tables given (the customer table without password_hash); returns the privileges granted.';
COMMENT ON FUNCTION app_role_functions() IS
'The functions grant_app_role() grants EXECUTE on.';
COMMENT ON FUNCTION catalog_role_functions() IS
'The functions grant_catalog_role() grants EXECUTE on.';
COMMENT ON FUNCTION operations_role_functions() IS
'The functions grant_operations_role() grants EXECUTE on.';
COMMENT ON FUNCTION analyst_role_functions() IS
'The read-only reporting functions grant_analyst_role() grants EXECUTE on.';
COMMENT ON FUNCTION enable_row_security() IS
'Make every application session name its customer: a role granted with grant_app_role() (and no catalog or operations role) then gets 42501 from functions acting for a customer unless storefront.customer_id is set in the transaction. Returns ''on''.';
COMMENT ON FUNCTION disable_row_security() IS
'Turn enable_row_security() off: application sessions may again act without naming a customer (direct reads stay limited by row-level security). Returns ''off''.';
COMMENT ON FUNCTION sees_every_customer() IS
'Whether the calling role is a staff role (catalog, operations or analyst), whose row-level security policies show every customer''s rows.';
COMMENT ON FUNCTION acting_customer() IS
'The customer this transaction acts for (the storefront.customer_id setting), or NULL. Errors: 22023 a setting that is not a customer id.';
COMMENT ON FUNCTION check_acting_customer(bigint) IS
'Internal: raise 42501 unless the caller may act for this customer (the acting customer, or no acting customer where the session need not name one).';
COMMENT ON FUNCTION calling_role() IS
'The calling role as SET ROLE (or the login) left it, which SECURITY DEFINER functions do not change.';

COMMENT ON FUNCTION notify_payload(text) IS
'Internal: the text NOTIFY sends for an order event: the event when it is under 8000 bytes, else a stub with order_id, customer_id, seq, status and "truncated": true (the outbox keeps the whole event).';
COMMENT ON FUNCTION relay_order_events(integer) IS
'Send up to max_events queued order events (event_delivery = relay), oldest first, with NOTIFY storefront_order_events, and remove them from the queue; returns how many were sent. One relay per database at a time: a concurrent call returns 0. Schedule it with pg_cron, or let start_event_relay() run it. Errors: 22023 max_events < 1.';
COMMENT ON FUNCTION start_event_relay(integer) IS
'Start the background worker that runs relay_order_events() every interval_ms milliseconds (default 10) for the current database, or return the running one; returns its process id. A server restart ends it: with storefront in shared_preload_libraries the relay launcher starts it again in every database in relay mode, else call this again (pg_cron can, every minute). Errors: 22023 interval outside 1..60000, 53000 no free background worker slot (max_worker_processes).';
COMMENT ON FUNCTION stop_event_relay() IS
'Stop the current database''s event relay worker; true if one was running. Queued events stay queued. While the relay launcher runs (shared_preload_libraries) and relay mode is in effect for the database, it starts a new relay at its next round (a NOTICE says so): turn relay mode off first to keep it stopped.';
COMMENT ON FUNCTION relay_worker_pids() IS
'Internal: process ids of the event relay workers connected to the current database.';
COMMENT ON FUNCTION event_relay_status() IS
'How order events are delivered (storefront.event_delivery), the relay worker''s process id (NULL if none runs), and how many events wait in the queue since when.';

COMMENT ON FUNCTION set_customer_region(bigint, text) IS
'Set the customer''s region (NULL or '''' clears it); returns it. The warehouse versions the customer from this change. Errors: 22004 NULL customer, 22023 region over 64 characters, 23503 unknown customer, 42501 another customer.';
COMMENT ON FUNCTION scd2_upsert(regclass, regclass, text[], text[], timestamp with time zone, text, text, text) IS
'Merge source into the SCD Type 2 table target (valid_from, valid_to = ''infinity'' while current, is_current): new keys get a version, keys whose tracked columns changed (typed, NULL-safe) get a new version and their current one is closed where it starts, untracked columns are copied into new versions. With changed_at_column a key may change several times in one batch (chained versions); a change older than the current version splits the version covering it (late_changes => ''split'') or is refused (''reject''). deletes: ''ignore'', ''close'' (close keys missing from the source at as_of) or ''version'' (also add a tombstone with is_deleted). Returns (inserted, versioned, unchanged, closed). Runs with the caller''s rights; one merge per target at a time. Errors: 21000 several source rows of a key at one time, 23502 NULL key or change time, 42P01 unknown relation, 42703 unknown column, 22023 target without validity columns or a type mismatch, 22008 infinite time, 55000 late change refused, 55P03 lock wait over 30s.';
COMMENT ON FUNCTION load_warehouse() IS
'Load the warehouse (schema storefront_dw) from the OLTP tables: only rows written since the last load (transaction-id watermark, nothing missed or doubled while orders arrive), dimensions merged with scd2_upsert, facts pointing at the versions valid when each order was placed, report views refreshed concurrently. Idempotent; one load at a time. Returns rows per step. Errors: 55P03 lock wait over 10s.';
COMMENT ON FUNCTION xact_age_limit(bigint, bigint) IS
'Internal: the largest age(xmin) of a row written at or after a transaction-id watermark, seen from transaction now_xid (every row when there is no usable watermark).';
COMMENT ON FUNCTION storefront_dw.segment_of(bigint) IS
'The customer segment after a number of paid orders: new (0), one-time (1), repeat (2-4), loyal (5 or more).';

-- Row-lock waits are bounded: a caller gets 55P03 instead of queueing.
-- The statements inside are kept prepared plans whose parameters (arrays of
-- ids) do not change the best plan, so plan them once (generic plans), as
-- custom planning on every call costs more than the statements themselves.
ALTER FUNCTION place_order(bigint, jsonb, text, interval) SET lock_timeout = '2s' SET plan_cache_mode = 'force_generic_plan';
ALTER FUNCTION record_payment(bigint, bigint, boolean, text) SET lock_timeout = '2s' SET plan_cache_mode = 'force_generic_plan';
ALTER FUNCTION cancel_order(bigint, text) SET lock_timeout = '2s' SET plan_cache_mode = 'force_generic_plan';
ALTER FUNCTION ship_order(bigint) SET lock_timeout = '2s' SET plan_cache_mode = 'force_generic_plan';
ALTER FUNCTION deliver_order(bigint) SET lock_timeout = '2s' SET plan_cache_mode = 'force_generic_plan';
ALTER FUNCTION expire_reservations(timestamp with time zone, integer) SET lock_timeout = '2s' SET plan_cache_mode = 'force_generic_plan';
-- a merge waits for another merge of the same target at most this long
ALTER FUNCTION scd2_upsert(regclass, regclass, text[], text[], timestamp with time zone, text, text, text) SET lock_timeout = '30s';

-- The capture trigger of rollup sources writes the queue of changed
-- buckets whoever writes the source; what it runs on the user's data runs
-- as the rollup's owner (rollup/mod.rs, AsOwner).
ALTER FUNCTION rollup_capture() SECURITY DEFINER SET search_path = @extschema@, pg_temp;

-- ----------------------------------------------------------- privileges --
-- Nothing that reads or writes store data is callable by PUBLIC; grant
-- what an application or an analyst needs with grant_app_role() and
-- grant_analyst_role() (roles.sql).
REVOKE ALL ON ALL ROUTINES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA @extschema@ FROM PUBLIC;
-- pure helpers stay public
GRANT EXECUTE ON FUNCTION order_status_can_move(text, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION seed_u(bigint, integer) TO PUBLIC;
GRANT EXECUTE ON FUNCTION invariant_detail(text[]) TO PUBLIC;
GRANT EXECUTE ON FUNCTION max_restock_qty() TO PUBLIC;
GRANT EXECUTE ON FUNCTION max_price_cents() TO PUBLIC;
GRANT EXECUTE ON FUNCTION xact_age_limit(bigint, bigint) TO PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA storefront_dw FROM PUBLIC;
-- row-level security policies call these as the querying role
GRANT EXECUTE ON FUNCTION acting_customer(), calling_role(), sees_every_customer() TO PUBLIC;
-- the real-time views of rollups call these as the querying role
GRANT EXECUTE ON FUNCTION rollup_bucket(interval, timestamp with time zone), rollup_watermark(text) TO PUBLIC;
-- the rollups' schema: its objects carry their owners' grants
GRANT USAGE ON SCHEMA storefront_rollups TO PUBLIC;
GRANT EXECUTE ON FUNCTION
    time_bucket(interval, timestamp with time zone),
    time_bucket(interval, timestamp without time zone),
    time_bucket(interval, timestamp with time zone, timestamp with time zone),
    time_bucket(interval, timestamp without time zone, timestamp without time zone),
    time_bucket(interval, timestamp with time zone, interval),
    time_bucket(interval, timestamp without time zone, interval),
    time_bucket(interval, timestamp with time zone, text, timestamp with time zone, interval),
    time_bucket(interval, date),
    time_bucket(interval, date, date),
    time_bucket(interval, date, interval),
    time_bucket_series(interval, timestamp with time zone, timestamp with time zone),
    time_bucket_series(interval, timestamp with time zone, timestamp with time zone, text),
    gapfill(interval, timestamp with time zone, timestamp with time zone, timestamp with time zone[], double precision[], text, text),
    locf_step(anyelement, anyelement),
    locf(anyelement)
  TO PUBLIC;

-- --------------------------------------------------------------- pg_dump --
-- Extension tables are skipped by pg_dump unless registered: register every
-- data table and identity sequence so a dump restores the store. The 'main'
-- location is created by CREATE EXTENSION itself, so it is not dumped.
DO $$
DECLARE
    t text;
    s text;
BEGIN
    FOREACH t IN ARRAY ARRAY['category', 'product', 'sku', 'customer', 'inventory', 'inventory_slot', 'stock_movement',
                             'orders', 'order_line', 'reservation', 'payment',
                             'order_status_history', 'outbox', 'event', 'event_default',
                             'rollup', 'rollup_pending', 'retention_policy', 'role_kind', 'config',
                             'maintenance_log'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(format('@extschema@.%I', t)::regclass, '');
    END LOOP;
    PERFORM pg_catalog.pg_extension_config_dump('@extschema@.location'::regclass, $f$WHERE code <> 'main'$f$);
    PERFORM pg_catalog.pg_extension_config_dump('@extschema@.maintenance_run_seq'::regclass, '');
    -- the warehouse (its report views are refreshed by the next load; the
    -- load state is not dumped: a restored store loads everything again)
    FOREACH t IN ARRAY ARRAY['dim_date', 'dim_customer', 'dim_product', 'dim_location', 'fact_order_line'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(format('storefront_dw.%I', t)::regclass, '');
    END LOOP;
    FOR s IN
        SELECT pg_catalog.pg_get_serial_sequence(format('%I.%I', c.relnamespace::regnamespace, c.relname), a.attname)
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
        WHERE c.relnamespace IN ('@extschema@'::regnamespace, 'storefront_dw'::regnamespace)
          AND c.relkind = 'r' AND a.attidentity <> ''
          -- not the unlogged event queue's: its rows are transient, like NOTIFY's
          AND c.relpersistence = 'p'
    LOOP
        PERFORM pg_catalog.pg_extension_config_dump(s::regclass, '');
    END LOOP;
END
$$;
