-- storefront OLTP schema (BCNF).
--
-- Pulled into the install script by extension_sql_file!(..., bootstrap), so it
-- runs first, inside schema storefront (the control file's schema; CREATE
-- EXTENSION creates it and DROP EXTENSION removes it with everything below).
--
-- Conventions
--   * money is bigint minor units ("cents") plus a char(3) ISO currency;
--   * customer-scoped tables (orders, order_line, reservation, payment,
--     order_status_history, outbox) lead with customer_id and carry it in every
--     primary key and unique constraint, so they can be distributed by it
--     (Citus) without a rewrite; no triggers on them;
--   * catalog and inventory tables are the reference side: foreign keys point
--     from the customer group at them, never the other way;
--   * every foreign key has an index whose leading columns match it.
-- Notes on keys and normal form for each table are in the book (ERD page).

\echo Use "CREATE EXTENSION storefront" to load this file. \quit

-- The schema named in the control file: CREATE EXTENSION creates it, or
-- takes one that already exists as it finds it. Every name in this script,
-- and in the functions it creates with search_path = @extschema@, pg_temp,
-- is looked up there, so refuse a schema that a role other than a superuser
-- owns or may create objects in, or that holds a function, operator, type
-- or relation of such a role: it could put objects there that the
-- extension's SECURITY DEFINER functions would use with their owner's
-- rights. Everything here is qualified, as the schema is not trusted yet.
DO $guard$
BEGIN
    IF EXISTS (
        SELECT FROM pg_catalog.pg_namespace n
        JOIN pg_catalog.pg_roles o ON o.oid OPERATOR(pg_catalog.=) n.nspowner
        WHERE n.nspname OPERATOR(pg_catalog.=) '@extschema@'
          AND (NOT o.rolsuper
               OR EXISTS (SELECT FROM pg_catalog.aclexplode(n.nspacl) a
                          WHERE a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
                            AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner)
               OR EXISTS (SELECT FROM pg_catalog.pg_proc p
                          JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) p.proowner
                          WHERE p.pronamespace OPERATOR(pg_catalog.=) n.oid AND NOT r.rolsuper)
               OR EXISTS (SELECT FROM pg_catalog.pg_operator p
                          JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) p.oprowner
                          WHERE p.oprnamespace OPERATOR(pg_catalog.=) n.oid AND NOT r.rolsuper)
               OR EXISTS (SELECT FROM pg_catalog.pg_type t
                          JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) t.typowner
                          WHERE t.typnamespace OPERATOR(pg_catalog.=) n.oid AND NOT r.rolsuper)
               OR EXISTS (SELECT FROM pg_catalog.pg_class c
                          JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) c.relowner
                          WHERE c.relnamespace OPERATOR(pg_catalog.=) n.oid AND NOT r.rolsuper)))
    THEN
        RAISE EXCEPTION 'schema "@extschema@" is not safe for extension storefront'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The schema and every function, operator, type and relation in it must belong to a superuser, and no other role may create objects in it; otherwise that role could place objects there that the extension''s functions would use with their owner''s rights.',
                  HINT = 'Drop what other roles own in the schema, revoke CREATE on it from them and make a superuser its owner (or drop the schema), then run the command again.';
    END IF;
END
$guard$;

-- ---------------------------------------------------------------- catalog --

CREATE TABLE category (
    category_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_id   bigint REFERENCES category (category_id),
    name        text   NOT NULL CHECK (btrim(name) <> '' AND position('/' IN name) = 0),
    -- the full path, lower-cased, e.g. 'apparel/men/shirts'; a candidate key
    slug        text   NOT NULL UNIQUE,
    CONSTRAINT category_parent_name_key UNIQUE NULLS NOT DISTINCT (parent_id, name)
);
CREATE INDEX category_parent_id_idx ON category (parent_id);
COMMENT ON TABLE category IS 'Category tree (adjacency list); slug is the lower-cased full path.';

CREATE TABLE product (
    product_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    category_id bigint REFERENCES category (category_id),
    name        text   NOT NULL CHECK (btrim(name) <> ''),
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT product_category_name_key UNIQUE NULLS NOT DISTINCT (category_id, name)
);
CREATE INDEX product_category_id_idx ON product (category_id);
COMMENT ON TABLE product IS 'A product; its sellable variants are SKUs.';

CREATE TABLE sku (
    sku_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id  bigint  NOT NULL REFERENCES product (product_id),
    code        text    NOT NULL UNIQUE CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    -- at most max_price_cents() (10^12): no order total can overflow
    price_cents bigint  NOT NULL CHECK (price_cents >= 0 AND price_cents <= 1000000000000),
    currency    char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    attributes  jsonb   NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    sellable    boolean NOT NULL DEFAULT true,
    -- 0: normal stock mode; n > 0: hot-stock mode with n slots per location
    hot_slots   smallint NOT NULL DEFAULT 0 CHECK (hot_slots BETWEEN 0 AND 64),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sku_product_id_idx ON sku (product_id);
COMMENT ON TABLE sku IS 'A sellable stock-keeping unit: price in minor units plus currency.';

-- -------------------------------------------------------------- customers --

CREATE TABLE customer (
    customer_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- stored normalised (trimmed, lower-cased), so plain UNIQUE is case-insensitive
    email         text NOT NULL UNIQUE CHECK (email = lower(btrim(email))),
    -- PHC string (argon2id); a value starting with '!' is a locked account
    password_hash text NOT NULL,
    full_name     text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- where the customer lives, as the shop groups it ('Europe', ...);
    -- NULL: not known. Set with set_customer_region().
    region        text CHECK (length(region) BETWEEN 1 AND 64),
    -- when the account last changed (region); the warehouse versions the
    -- customer from then
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE customer IS 'Customer accounts; password_hash is an argon2id PHC string.';

-- -------------------------------------------------------------- inventory --

CREATE TABLE location (
    location_id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code        text NOT NULL UNIQUE CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    name        text NOT NULL
);
COMMENT ON TABLE location IS 'Stock locations (warehouses, stores).';

CREATE TABLE inventory (
    sku_id      bigint  NOT NULL REFERENCES sku (sku_id),
    location_id integer NOT NULL REFERENCES location (location_id),
    on_hand     integer NOT NULL DEFAULT 0,
    reserved    integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sku_id, location_id),
    CONSTRAINT inventory_reserved_range CHECK (reserved >= 0 AND reserved <= on_hand)
)
-- every order updates these rows; free space on each page lets the update
-- stay on the page (HOT) instead of adding index entries each time
WITH (fillfactor = 50);
CREATE INDEX inventory_location_id_idx ON inventory (location_id);
COMMENT ON TABLE inventory IS 'Stock level per SKU and location: 0 <= reserved <= on_hand.';

-- Hot-stock mode (flash sales): the stock of a hot SKU at a location is
-- split over slot rows, so concurrent buyers claim different rows (SKIP
-- LOCKED) instead of queueing on one. While a SKU is hot its stock lives in
-- its slots and its inventory row holds nothing; see set_hot_stock().
CREATE TABLE inventory_slot (
    sku_id      bigint   NOT NULL,
    location_id integer  NOT NULL,
    slot        smallint NOT NULL CHECK (slot >= 0),
    on_hand     integer  NOT NULL DEFAULT 0,
    reserved    integer  NOT NULL DEFAULT 0,
    PRIMARY KEY (sku_id, location_id, slot),
    FOREIGN KEY (sku_id, location_id) REFERENCES inventory (sku_id, location_id),
    CONSTRAINT inventory_slot_reserved_range CHECK (reserved >= 0 AND reserved <= on_hand)
) WITH (fillfactor = 50);
COMMENT ON TABLE inventory_slot IS 'Hot-stock slots: the stock of a hot SKU split over rows claimed with SKIP LOCKED.';

-- Every change to on_hand that is not a sale: restocks and adjustments. With
-- consumed reservations (sales) it explains on_hand exactly:
--   on_hand = sum(stock_movement.qty) - sum(consumed reservation qty).
CREATE TABLE stock_movement (
    movement_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku_id      bigint  NOT NULL,
    location_id integer NOT NULL,
    qty         integer NOT NULL CHECK (qty <> 0),
    reason      text    NOT NULL CHECK (reason IN ('restock', 'adjustment')),
    at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (sku_id, location_id) REFERENCES inventory (sku_id, location_id)
);
CREATE INDEX stock_movement_sku_location_idx ON stock_movement (sku_id, location_id);
COMMENT ON TABLE stock_movement IS 'Ledger of restocks and adjustments (sales are consumed reservations).';

-- ----------------------------------------------------------------- orders --

CREATE TABLE orders (
    customer_id     bigint  NOT NULL REFERENCES customer (customer_id),
    order_id        bigint  GENERATED ALWAYS AS IDENTITY,
    status          text    NOT NULL CHECK (status IN
                      ('pending', 'paid', 'shipped', 'delivered',
                       'cancelled', 'payment_failed', 'expired')),
    currency        char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- = sum of the lines (qty * unit_price_cents); kept for the receipt and
    -- checked by check_invariants()
    total_cents     bigint  NOT NULL CHECK (total_cents >= 0),
    idempotency_key text    CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    -- sha-256 of the canonical request, to tell a replay from a different
    -- request under the same idempotency key
    request_hash    bytea,
    placed_at       timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, order_id),
    CONSTRAINT orders_key_has_hash CHECK ((idempotency_key IS NULL) = (request_hash IS NULL))
)
-- payment, shipping and delivery update each order: room for HOT updates
WITH (fillfactor = 80);
-- one order per (customer, idempotency key); orders without a key are not
-- indexed here (most orders), which saves an index insert per order
CREATE UNIQUE INDEX orders_idempotency_key ON orders (customer_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX orders_customer_placed_idx ON orders (customer_id, placed_at);
-- record_payment(order_id), ship_order(order_id)... look orders up by id alone
CREATE INDEX orders_order_id_idx ON orders (order_id);
-- time-range scans (warehouse loads, dashboards): orders arrive in time
-- order, so a BRIN index is tiny and nearly free to maintain
CREATE INDEX orders_placed_at_brin ON orders USING brin (placed_at);
COMMENT ON TABLE orders IS 'Orders; status is the current state of the order status machine.';

CREATE TABLE order_line (
    customer_id      bigint  NOT NULL,
    order_id         bigint  NOT NULL,
    line_no          integer NOT NULL CHECK (line_no > 0),
    sku_id           bigint  NOT NULL REFERENCES sku (sku_id),
    qty              integer NOT NULL CHECK (qty > 0),
    -- price snapshot at order time
    unit_price_cents bigint  NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (customer_id, order_id, line_no),
    CONSTRAINT order_line_sku_once UNIQUE (customer_id, order_id, sku_id),
    FOREIGN KEY (customer_id, order_id) REFERENCES orders (customer_id, order_id)
);
CREATE INDEX order_line_sku_id_idx ON order_line (sku_id);
COMMENT ON TABLE order_line IS 'Order lines with the unit price snapshotted at order time.';

-- A hold of qty units of one line's SKU at one location. state moves
-- held -> consumed (sold) | released (payment failed, cancelled) | expired.
CREATE TABLE reservation (
    customer_id    bigint  NOT NULL,
    reservation_id bigint  GENERATED ALWAYS AS IDENTITY,
    order_id       bigint  NOT NULL,
    line_no        integer NOT NULL,
    location_id    integer NOT NULL REFERENCES location (location_id),
    -- the hot-stock slot the units came from; NULL: the inventory row
    slot           smallint CHECK (slot >= 0),
    qty            integer NOT NULL CHECK (qty > 0),
    state          text    NOT NULL DEFAULT 'held'
                     CHECK (state IN ('held', 'consumed', 'released', 'expired')),
    expires_at     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    ended_at       timestamptz,
    PRIMARY KEY (customer_id, reservation_id),
    FOREIGN KEY (customer_id, order_id, line_no)
        REFERENCES order_line (customer_id, order_id, line_no),
    CONSTRAINT reservation_ended CHECK ((state = 'held') = (ended_at IS NULL))
);
CREATE INDEX reservation_order_line_idx ON reservation (customer_id, order_id, line_no);
CREATE INDEX reservation_location_id_idx ON reservation (location_id);
-- live holds by expiry: what expire_reservations() sweeps
CREATE INDEX reservation_live_expiry_idx ON reservation (expires_at) WHERE state = 'held';
COMMENT ON TABLE reservation IS 'Stock holds per order line and location; held -> consumed | released | expired.';

CREATE TABLE payment (
    customer_id  bigint  NOT NULL,
    payment_id   bigint  GENERATED ALWAYS AS IDENTITY,
    order_id     bigint  NOT NULL,
    provider_ref text    NOT NULL CHECK (length(provider_ref) BETWEEN 1 AND 255),
    -- in the order's currency
    amount_cents bigint  NOT NULL CHECK (amount_cents >= 0),
    succeeded    boolean NOT NULL,
    -- the status record_payment() returned, so a replay returns it again
    outcome      text    NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, payment_id),
    CONSTRAINT payment_provider_ref_key UNIQUE (customer_id, provider_ref),
    FOREIGN KEY (customer_id, order_id) REFERENCES orders (customer_id, order_id)
);
CREATE INDEX payment_order_idx ON payment (customer_id, order_id);
COMMENT ON TABLE payment IS 'Payment attempts; one per provider_ref (record_payment is idempotent on it).';

CREATE TABLE order_status_history (
    customer_id bigint  NOT NULL,
    order_id    bigint  NOT NULL,
    seq         integer NOT NULL CHECK (seq > 0),
    status      text    NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    detail      jsonb   NOT NULL DEFAULT '{}',
    PRIMARY KEY (customer_id, order_id, seq),
    FOREIGN KEY (customer_id, order_id) REFERENCES orders (customer_id, order_id)
);
COMMENT ON TABLE order_status_history IS 'Every status change of every order, in order (seq).';

-- Transactional outbox in Debezium's outbox-event-router shape (id,
-- aggregatetype, aggregateid, type, payload) plus customer_id for
-- distribution and a timestamp. Written in the same transaction as the
-- change it announces.
CREATE TABLE outbox (
    customer_id   bigint NOT NULL,
    id            uuid   NOT NULL DEFAULT gen_random_uuid(),
    aggregatetype text   NOT NULL,
    aggregateid   text   NOT NULL,
    type          text   NOT NULL,
    payload       jsonb  NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, id)
);
-- relays read the outbox in time order (or from WAL, as Debezium does)
CREATE INDEX outbox_created_at_brin ON outbox USING brin (created_at);
COMMENT ON TABLE outbox IS 'Transactional outbox (Debezium outbox event router shape).';

-- What place_order() returns.
CREATE TYPE order_receipt AS (
    order_id    bigint,
    status      text,
    total_cents bigint,
    currency    char(3),
    expires_at  timestamptz,
    replayed    boolean
);
COMMENT ON TYPE order_receipt IS 'Result of place_order(): replayed is true when an idempotency key returned an earlier order.';

INSERT INTO location (code, name) VALUES ('main', 'Main warehouse');
