-- The warehouse: a star schema in schema storefront_dw, fed from the OLTP
-- tables by load_warehouse() (incremental), with SCD Type 2 dimensions
-- merged by storefront.scd2_upsert() and materialized views for the
-- reports a dashboard polls.
--
--   fact_order_line   one row per order line (every order, its status kept
--                     current); points at the dimension versions valid
--                     when the order was placed
--   dim_date          one row per calendar day (UTC)
--   dim_customer      SCD2: segment (by paid orders so far) and region
--   dim_product       SCD2 per SKU: price, currency and category path
--   dim_location      the stock location that filled the line
--
-- Dimension tables carry the SCD2 columns valid_from, valid_to ('infinity'
-- while current) and is_current; the database refuses two current
-- versions of a key (partial unique index) and overlapping validity
-- (exclusion constraint, btree_gist).

CREATE SCHEMA storefront_dw;
COMMENT ON SCHEMA storefront_dw IS 'The warehouse: star schema, SCD2 dimensions, load state and report views (see load_warehouse()).';

CREATE TABLE storefront_dw.dim_date (
    date_key   integer  PRIMARY KEY,          -- yyyymmdd
    date       date     NOT NULL UNIQUE,
    year       smallint NOT NULL,
    quarter    smallint NOT NULL,
    month      smallint NOT NULL,
    month_name text     NOT NULL,
    iso_week   smallint NOT NULL,
    day        smallint NOT NULL,
    iso_dow    smallint NOT NULL,
    day_name   text     NOT NULL,
    is_weekend boolean  NOT NULL
);
COMMENT ON TABLE storefront_dw.dim_date IS 'Calendar days (UTC) from the first order on; date_key is yyyymmdd.';

CREATE TABLE storefront_dw.dim_customer (
    customer_key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  bigint      NOT NULL,
    -- tracked: new (no paid order yet), one-time, repeat (2-4), loyal (5+)
    segment      text        NOT NULL,
    region       text,
    -- copied into new versions
    full_name    text        NOT NULL,
    signup_date  date        NOT NULL,
    valid_from   timestamptz NOT NULL,
    valid_to     timestamptz NOT NULL DEFAULT 'infinity',
    is_current   boolean     NOT NULL DEFAULT true,
    CONSTRAINT dim_customer_validity CHECK (valid_from < valid_to AND is_current = (valid_to = 'infinity')),
    CONSTRAINT dim_customer_version_key UNIQUE (customer_id, valid_from),
    CONSTRAINT dim_customer_no_overlap EXCLUDE USING gist (customer_id WITH =, tstzrange(valid_from, valid_to) WITH &&)
);
CREATE UNIQUE INDEX dim_customer_current_key ON storefront_dw.dim_customer (customer_id) WHERE is_current;
COMMENT ON TABLE storefront_dw.dim_customer IS 'Customers, SCD Type 2: a version per change of segment or region, valid [valid_from, valid_to).';

CREATE TABLE storefront_dw.dim_product (
    product_key   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku_id        bigint      NOT NULL,
    -- tracked
    price_cents   bigint      NOT NULL,
    currency      char(3)     NOT NULL,
    category_path text,
    -- copied into new versions
    sku_code      text        NOT NULL,
    product_id    bigint      NOT NULL,
    product_name  text        NOT NULL,
    top_category  text,
    valid_from    timestamptz NOT NULL,
    valid_to      timestamptz NOT NULL DEFAULT 'infinity',
    is_current    boolean     NOT NULL DEFAULT true,
    CONSTRAINT dim_product_validity CHECK (valid_from < valid_to AND is_current = (valid_to = 'infinity')),
    CONSTRAINT dim_product_version_key UNIQUE (sku_id, valid_from),
    CONSTRAINT dim_product_no_overlap EXCLUDE USING gist (sku_id WITH =, tstzrange(valid_from, valid_to) WITH &&)
);
CREATE UNIQUE INDEX dim_product_current_key ON storefront_dw.dim_product (sku_id) WHERE is_current;
COMMENT ON TABLE storefront_dw.dim_product IS 'SKUs with their product, SCD Type 2: a version per change of price, currency or category path.';

CREATE TABLE storefront_dw.dim_location (
    location_key integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    location_id  integer NOT NULL UNIQUE,
    code         text    NOT NULL,
    name         text    NOT NULL
);
COMMENT ON TABLE storefront_dw.dim_location IS 'Stock locations (Type 1: changes overwrite).';

CREATE TABLE storefront_dw.fact_order_line (
    customer_id      bigint  NOT NULL,
    order_id         bigint  NOT NULL,
    line_no          integer NOT NULL,
    date_key         integer NOT NULL REFERENCES storefront_dw.dim_date (date_key),
    customer_key     bigint  NOT NULL REFERENCES storefront_dw.dim_customer (customer_key),
    product_key      bigint  NOT NULL REFERENCES storefront_dw.dim_product (product_key),
    location_key     integer REFERENCES storefront_dw.dim_location (location_key),
    ordered_at       timestamptz NOT NULL,
    -- the order's status now: revenue counts paid, shipped and delivered
    order_status     text    NOT NULL,
    quantity         integer NOT NULL,
    unit_price_cents bigint  NOT NULL,
    amount_cents     bigint  NOT NULL,
    currency         char(3) NOT NULL,
    PRIMARY KEY (customer_id, order_id, line_no)
);
CREATE INDEX fact_order_line_date_idx ON storefront_dw.fact_order_line (date_key);
CREATE INDEX fact_order_line_customer_idx ON storefront_dw.fact_order_line (customer_key);
CREATE INDEX fact_order_line_product_idx ON storefront_dw.fact_order_line (product_key);
CREATE INDEX fact_order_line_location_idx ON storefront_dw.fact_order_line (location_key);
COMMENT ON TABLE storefront_dw.fact_order_line IS 'One row per order line: quantity, unit price and amount in the order''s currency, the order''s status, and the dimension versions valid when the order was placed.';

-- Where the last load got to: the oldest transaction still running when
-- it started (see extension/src/warehouse/load.rs), in the cluster it ran
-- in (a copy restored elsewhere loads everything again, to no effect).
CREATE TABLE storefront_dw.load_state (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    watermark     bigint,
    system_id     bigint,
    loaded_at     timestamptz,
    loads         bigint NOT NULL DEFAULT 0
);
INSERT INTO storefront_dw.load_state DEFAULT VALUES;
COMMENT ON TABLE storefront_dw.load_state IS 'Where load_warehouse() got to: the transaction id watermark of the last load.';

-- The customer segment after `paid_orders` paid orders.
CREATE FUNCTION storefront_dw.segment_of(paid_orders bigint)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN paid_orders IS NULL OR paid_orders < 1 THEN 'new'
            WHEN paid_orders = 1 THEN 'one-time'
            WHEN paid_orders < 5 THEN 'repeat'
            ELSE 'loyal' END;

-- ------------------------------------------------------------ reports --
-- What a dashboard polls, refreshed CONCURRENTLY by load_warehouse(), so
-- readers never wait for a refresh. Revenue is paid, shipped and
-- delivered orders.

CREATE MATERIALIZED VIEW storefront_dw.daily_revenue AS
SELECT d.date, f.currency,
       count(DISTINCT (f.customer_id, f.order_id)) AS orders,
       sum(f.quantity)::bigint AS units,
       sum(f.amount_cents)::bigint AS revenue_cents
FROM storefront_dw.fact_order_line f
JOIN storefront_dw.dim_date d ON d.date_key = f.date_key
WHERE f.order_status IN ('paid', 'shipped', 'delivered')
GROUP BY d.date, f.currency;
CREATE UNIQUE INDEX daily_revenue_key ON storefront_dw.daily_revenue (date, currency);
COMMENT ON MATERIALIZED VIEW storefront_dw.daily_revenue IS 'Revenue, orders and units per day (UTC) and currency.';

CREATE MATERIALIZED VIEW storefront_dw.monthly_product_sales AS
SELECT date_trunc('month', d.date)::date AS month, p.sku_id, f.currency,
       sum(f.quantity)::bigint AS units,
       sum(f.amount_cents)::bigint AS revenue_cents
FROM storefront_dw.fact_order_line f
JOIN storefront_dw.dim_date d ON d.date_key = f.date_key
JOIN storefront_dw.dim_product p ON p.product_key = f.product_key
WHERE f.order_status IN ('paid', 'shipped', 'delivered')
GROUP BY 1, 2, 3;
CREATE UNIQUE INDEX monthly_product_sales_key ON storefront_dw.monthly_product_sales (month, sku_id, currency);
COMMENT ON MATERIALIZED VIEW storefront_dw.monthly_product_sales IS 'Units and revenue per month, SKU and currency.';

CREATE MATERIALIZED VIEW storefront_dw.monthly_segment_revenue AS
SELECT date_trunc('month', d.date)::date AS month,
       coalesce(p.top_category, 'Uncategorised') AS top_category,
       c.segment, f.currency,
       count(DISTINCT (f.customer_id, f.order_id)) AS orders,
       sum(f.amount_cents)::bigint AS revenue_cents
FROM storefront_dw.fact_order_line f
JOIN storefront_dw.dim_date d ON d.date_key = f.date_key
JOIN storefront_dw.dim_product p ON p.product_key = f.product_key
JOIN storefront_dw.dim_customer c ON c.customer_key = f.customer_key
WHERE f.order_status IN ('paid', 'shipped', 'delivered')
GROUP BY 1, 2, 3, 4;
CREATE UNIQUE INDEX monthly_segment_revenue_key
    ON storefront_dw.monthly_segment_revenue (month, top_category, segment, currency);
COMMENT ON MATERIALIZED VIEW storefront_dw.monthly_segment_revenue IS 'Revenue per month, top-level category and customer segment as it was when each order was placed.';

-- ------------------------------------------------------------- loader --
-- Incremental: only OLTP rows written by transactions the last load did
-- not see (transaction-id watermark, see load.rs), merged idempotently, so
-- a row seen twice changes nothing and none is missed while orders keep
-- arriving. Steps, in lock order: the load state row (one load at a time),
-- dim_date, dim_location, dim_product and dim_customer (scd2_upsert, SHARE
-- ROW EXCLUSIVE each), fact_order_line, then the report views.
CREATE FUNCTION load_warehouse()
RETURNS TABLE (step text, rows bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '10s'
AS $$
#variable_conflict use_column
DECLARE
    v_now_xid  bigint;
    v_mark     bigint;
    v_system   bigint;
    v_state    record;
    v_age      integer;
    v_full     boolean;
    v_as_of    timestamptz;
    v_n        bigint;
    v_more     bigint;  -- the rows of a step's second statement
    v_changed  bigint := 0;
    v_min      date;
    v_max      date;
    r          record;
BEGIN
    SELECT * INTO v_state FROM storefront_dw.load_state WHERE id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO storefront_dw.load_state DEFAULT VALUES;
        SELECT * INTO v_state FROM storefront_dw.load_state WHERE id FOR UPDATE;
    END IF;
    -- this transaction's id first, so age() counts from it
    v_now_xid := pg_current_xact_id()::text::bigint;
    v_mark := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
    SELECT s.system_identifier INTO v_system FROM pg_control_system() s;
    -- no watermark of this cluster (the first load, or the first after a
    -- restore): everything is read, and the report views are refreshed
    -- even when nothing turns out to have changed, since a restored
    -- database's views are as CREATE EXTENSION made them (empty)
    v_full := v_state.system_id IS DISTINCT FROM v_system OR v_state.watermark IS NULL;
    v_age := storefront.xact_age_limit(v_now_xid, CASE WHEN NOT v_full THEN v_state.watermark END);

    -- ------------------------------------------------ what changed --
    -- (left over when an earlier load in this transaction failed and was
    -- caught)
    FOR r IN SELECT t FROM unnest(ARRAY['wh_order', 'wh_customer', 'wh_sku', 'wh_sold', 'wh_cust_event',
                                         'wh_product_src', 'wh_customer_src']) t
             WHERE to_regclass('pg_temp.' || t) IS NOT NULL LOOP
        EXECUTE format('DROP TABLE pg_temp.%I', r.t);
    END LOOP;
    CREATE TEMP TABLE wh_order ON COMMIT DROP AS
    SELECT o.customer_id, o.order_id, o.status, o.currency, o.placed_at
    FROM storefront.orders o WHERE age(o.xmin) <= v_age;
    CREATE TEMP TABLE wh_customer ON COMMIT DROP AS
    SELECT c.customer_id, c.updated_at FROM storefront.customer c WHERE age(c.xmin) <= v_age;
    CREATE TEMP TABLE wh_sku ON COMMIT DROP AS
    SELECT s.sku_id FROM storefront.sku s WHERE age(s.xmin) <= v_age;
    step := 'orders read'; rows := (SELECT count(*) FROM wh_order); RETURN NEXT;

    -- ----------------------------------------------------- dim_date --
    SELECT min((o.placed_at AT TIME ZONE 'UTC')::date), max((o.placed_at AT TIME ZONE 'UTC')::date)
    INTO v_min, v_max FROM wh_order o;
    IF v_min IS NOT NULL THEN
        v_min := least(v_min, (SELECT max(d.date) + 1 FROM storefront_dw.dim_date d));
        INSERT INTO storefront_dw.dim_date (date_key, date, year, quarter, month, month_name, iso_week, day,
                                            iso_dow, day_name, is_weekend)
        SELECT to_char(g, 'YYYYMMDD')::integer, g::date, extract(year FROM g), extract(quarter FROM g),
               extract(month FROM g), to_char(g, 'FMMonth'), extract(week FROM g), extract(day FROM g),
               extract(isodow FROM g), to_char(g, 'FMDay'), extract(isodow FROM g) >= 6
        FROM generate_series(v_min, v_max, interval '1 day') AS g
        ON CONFLICT (date_key) DO NOTHING;
        GET DIAGNOSTICS v_n = ROW_COUNT;
    ELSE
        v_n := 0;
    END IF;
    step := 'dim_date'; rows := v_n; RETURN NEXT;

    -- ------------------------------------------------- dim_location --
    -- renamed ones updated, new ones inserted: an INSERT .. ON CONFLICT of
    -- every location would take a key from the identity for each one at
    -- every load, conflict or not
    UPDATE storefront_dw.dim_location d SET code = l.code, name = l.name
    FROM storefront.location l
    WHERE l.location_id = d.location_id AND (d.code, d.name) IS DISTINCT FROM (l.code, l.name);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    INSERT INTO storefront_dw.dim_location (location_id, code, name)
    SELECT l.location_id, l.code, l.name FROM storefront.location l
    WHERE NOT EXISTS (SELECT FROM storefront_dw.dim_location d WHERE d.location_id = l.location_id);
    GET DIAGNOSTICS v_more = ROW_COUNT;
    v_n := v_n + v_more;
    step := 'dim_location'; rows := v_n; RETURN NEXT;

    -- -------------------------------------------------- dim_product --
    -- a SKU new to the warehouse is versioned from its creation, a
    -- changed one from its last update
    CREATE TEMP TABLE wh_product_src ON COMMIT DROP AS
    WITH RECURSIVE path AS (
        SELECT c.category_id, c.name AS path, c.name AS top
        FROM storefront.category c WHERE c.parent_id IS NULL
        UNION ALL
        SELECT c.category_id, p.path || '/' || c.name, p.top
        FROM storefront.category c JOIN path p ON c.parent_id = p.category_id
    )
    SELECT s.sku_id, s.price_cents, s.currency, pa.path AS category_path, s.code AS sku_code,
           p.product_id, p.name AS product_name, pa.top AS top_category,
           CASE WHEN EXISTS (SELECT 1 FROM storefront_dw.dim_product d WHERE d.sku_id = s.sku_id)
                THEN s.updated_at ELSE s.created_at END AS changed_at
    FROM wh_sku w
    JOIN storefront.sku s ON s.sku_id = w.sku_id
    JOIN storefront.product p ON p.product_id = s.product_id
    LEFT JOIN path pa ON pa.category_id = p.category_id;

    -- ------------------------------------------------- dim_customer --
    -- orders that became sold since the last load: each one may move its
    -- customer to the next segment, from the time it was paid
    CREATE TEMP TABLE wh_sold ON COMMIT DROP AS
    SELECT o.customer_id, o.order_id,
           coalesce((SELECT min(p.created_at) FROM storefront.payment p
                     WHERE p.customer_id = o.customer_id AND p.order_id = o.order_id AND p.succeeded),
                    o.placed_at) AS paid_at
    FROM wh_order o
    WHERE o.status IN ('paid', 'shipped', 'delivered')
      AND NOT EXISTS (SELECT 1 FROM storefront_dw.fact_order_line f
                      WHERE f.customer_id = o.customer_id AND f.order_id = o.order_id
                        AND f.order_status IN ('paid', 'shipped', 'delivered'));
    -- the times at which an affected customer's state is stated: creation
    -- (new to the warehouse), the account's last change, each new payment,
    -- and every later version (restated, should a change arrive late)
    CREATE TEMP TABLE wh_cust_event ON COMMIT DROP AS
    WITH affected AS (
        SELECT customer_id FROM wh_customer UNION SELECT customer_id FROM wh_sold
    ), ev AS (
        SELECT c.customer_id,
               CASE WHEN EXISTS (SELECT 1 FROM storefront_dw.dim_customer d WHERE d.customer_id = c.customer_id)
                    THEN NULL ELSE c.created_at END AS at
        FROM affected a JOIN storefront.customer c ON c.customer_id = a.customer_id
        UNION ALL
        SELECT w.customer_id, w.updated_at FROM wh_customer w
        WHERE EXISTS (SELECT 1 FROM storefront_dw.dim_customer d WHERE d.customer_id = w.customer_id)
        UNION ALL
        SELECT s.customer_id, s.paid_at FROM wh_sold s
    ), firsts AS (
        SELECT customer_id, min(at) AS first_at FROM ev WHERE at IS NOT NULL GROUP BY customer_id
    )
    SELECT DISTINCT customer_id, at FROM ev WHERE at IS NOT NULL
    UNION
    SELECT d.customer_id, d.valid_from
    FROM firsts f JOIN storefront_dw.dim_customer d ON d.customer_id = f.customer_id AND d.valid_from > f.first_at;
    -- the state at each of those times: segment by paid orders so far,
    -- region as the account says (or, before its last change, as the
    -- warehouse has it)
    CREATE TEMP TABLE wh_customer_src ON COMMIT DROP AS
    WITH pay AS (
        SELECT o.customer_id,
               coalesce((SELECT min(p.created_at) FROM storefront.payment p
                         WHERE p.customer_id = o.customer_id AND p.order_id = o.order_id AND p.succeeded),
                        o.placed_at) AS at
        FROM (SELECT DISTINCT customer_id FROM wh_cust_event) a
        JOIN storefront.orders o ON o.customer_id = a.customer_id
        WHERE o.status IN ('paid', 'shipped', 'delivered')
    ), x AS (
        SELECT customer_id, at, 1 AS paid, 0 AS kind FROM pay
        UNION ALL
        SELECT customer_id, at, 0, 1 FROM wh_cust_event
    ), y AS (
        SELECT customer_id, at, kind,
               sum(paid) OVER (PARTITION BY customer_id ORDER BY at, kind ROWS UNBOUNDED PRECEDING) AS paid_orders
        FROM x
    )
    SELECT y.customer_id, storefront_dw.segment_of(y.paid_orders) AS segment,
           CASE WHEN y.at >= c.updated_at THEN c.region
                ELSE coalesce((SELECT d.region FROM storefront_dw.dim_customer d
                               WHERE d.customer_id = y.customer_id AND d.valid_from <= y.at AND d.valid_to > y.at),
                              c.region) END AS region,
           c.full_name, (c.created_at AT TIME ZONE 'UTC')::date AS signup_date, y.at AS changed_at
    FROM y JOIN storefront.customer c ON c.customer_id = y.customer_id
    WHERE y.kind = 1;

    -- every change time is in the past of as_of, even for demo data
    -- stamped ahead of the clock
    v_as_of := greatest(clock_timestamp(),
                        (SELECT max(changed_at) FROM wh_product_src),
                        (SELECT max(changed_at) FROM wh_customer_src));
    SELECT * INTO r FROM storefront.scd2_upsert('storefront_dw.dim_product', 'pg_temp.wh_product_src',
        '{sku_id}', '{price_cents,currency,category_path}', v_as_of, 'changed_at');
    v_changed := v_changed + r.inserted + r.versioned;
    step := 'dim_product'; rows := r.inserted + r.versioned; RETURN NEXT;
    SELECT * INTO r FROM storefront.scd2_upsert('storefront_dw.dim_customer', 'pg_temp.wh_customer_src',
        '{customer_id}', '{segment,region}', v_as_of, 'changed_at');
    v_changed := v_changed + r.inserted + r.versioned;
    step := 'dim_customer'; rows := r.inserted + r.versioned; RETURN NEXT;

    -- -------------------------------------------------------- facts --
    -- facts of customers and SKUs whose history changed point again at
    -- the version valid when their order was placed
    UPDATE storefront_dw.fact_order_line f SET customer_key = v.customer_key
    FROM (SELECT DISTINCT customer_id FROM wh_customer_src) a, storefront_dw.dim_customer v
    WHERE f.customer_id = a.customer_id AND v.customer_id = a.customer_id
      AND v.valid_from <= f.ordered_at AND f.ordered_at < v.valid_to AND f.customer_key <> v.customer_key;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_changed := v_changed + v_n;
    UPDATE storefront_dw.fact_order_line f SET product_key = v.product_key
    FROM (SELECT DISTINCT sku_id FROM wh_product_src) a, storefront_dw.dim_product old, storefront_dw.dim_product v
    WHERE old.sku_id = a.sku_id AND f.product_key = old.product_key AND v.sku_id = a.sku_id
      AND v.valid_from <= f.ordered_at AND f.ordered_at < v.valid_to AND f.product_key <> v.product_key;
    GET DIAGNOSTICS v_more = ROW_COUNT;
    v_n := v_n + v_more;
    v_changed := v_changed + v_more;
    step := 'facts repointed'; rows := v_n; RETURN NEXT;

    -- new lines, and the status of lines already loaded; each points at
    -- the version valid when the order was placed (or the first one, for
    -- an order older than everything the warehouse knows)
    INSERT INTO storefront_dw.fact_order_line AS f
        (customer_id, order_id, line_no, date_key, customer_key, product_key, location_key, ordered_at,
         order_status, quantity, unit_price_cents, amount_cents, currency)
    SELECT o.customer_id, o.order_id, l.line_no,
           to_char(o.placed_at AT TIME ZONE 'UTC', 'YYYYMMDD')::integer,
           (SELECT d.customer_key FROM storefront_dw.dim_customer d WHERE d.customer_id = o.customer_id
            ORDER BY d.valid_from <= o.placed_at DESC,
                     CASE WHEN d.valid_from <= o.placed_at THEN o.placed_at - d.valid_from ELSE d.valid_from - o.placed_at END
            LIMIT 1),
           (SELECT d.product_key FROM storefront_dw.dim_product d WHERE d.sku_id = l.sku_id
            ORDER BY d.valid_from <= o.placed_at DESC,
                     CASE WHEN d.valid_from <= o.placed_at THEN o.placed_at - d.valid_from ELSE d.valid_from - o.placed_at END
            LIMIT 1),
           (SELECT dl.location_key
            FROM storefront.reservation rs JOIN storefront_dw.dim_location dl ON dl.location_id = rs.location_id
            WHERE rs.customer_id = l.customer_id AND rs.order_id = l.order_id AND rs.line_no = l.line_no
            ORDER BY rs.state = 'consumed' DESC, rs.qty DESC, rs.reservation_id DESC LIMIT 1),
           o.placed_at, o.status, l.qty, l.unit_price_cents, l.qty * l.unit_price_cents, o.currency
    FROM wh_order o
    JOIN storefront.order_line l ON l.customer_id = o.customer_id AND l.order_id = o.order_id
    ON CONFLICT (customer_id, order_id, line_no) DO UPDATE SET order_status = excluded.order_status
    WHERE f.order_status IS DISTINCT FROM excluded.order_status;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_changed := v_changed + v_n;
    step := 'fact_order_line'; rows := v_n; RETURN NEXT;

    -- ------------------------------------------------------ reports --
    IF v_changed > 0 OR v_full THEN
        REFRESH MATERIALIZED VIEW CONCURRENTLY storefront_dw.daily_revenue;
        REFRESH MATERIALIZED VIEW CONCURRENTLY storefront_dw.monthly_product_sales;
        REFRESH MATERIALIZED VIEW CONCURRENTLY storefront_dw.monthly_segment_revenue;
        step := 'reports refreshed'; rows := 3; RETURN NEXT;
    ELSE
        step := 'reports refreshed'; rows := 0; RETURN NEXT;
    END IF;

    UPDATE storefront_dw.load_state
    SET watermark = v_mark, system_id = v_system, loaded_at = now(), loads = loads + 1
    WHERE id;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n <> 1 THEN
        RAISE EXCEPTION 'could not serialize access due to a concurrent change of the warehouse load state'
            USING ERRCODE = 'serialization_failure', HINT = 'Retry the call in a new transaction.';
    END IF;
    DROP TABLE pg_temp.wh_order, pg_temp.wh_customer, pg_temp.wh_sku, pg_temp.wh_sold,
        pg_temp.wh_cust_event, pg_temp.wh_product_src, pg_temp.wh_customer_src;
END
$$;
