//! Objects in schema `public` that shadow what the extension calls.
//!
//! A role that may create objects in `public` (here the database's owner,
//! a plain role) puts there a function for every function, operator and
//! aggregate of `pg_catalog` it can declare (btrim, lower, now,
//! jsonb_array_length, pg_notify, to_regprocedure, set_config, =, +, ||,
//! sum, count, ...), one for every function of the extension, and a view
//! for every one of its tables. Then the session, and the database's
//! default, put `public` before `pg_catalog`: `search_path = public,
//! pg_catalog`. A name looked up under that path finds the role's object
//! first, which would then run with the caller's rights (a superuser's
//! here, or the extension owner's inside SECURITY DEFINER functions).
//!
//! The same calls of the API (accounts, catalog, stock, orders, payments,
//! events, rollups, maintenance, invariants, the relay function and the
//! relay worker) run in that database and in a clean one, and must give
//! exactly the same results; and none of the shadowing objects may have
//! run: each one counts itself in a sequence (which a rollback does not
//! undo) before it raises.

use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{Connection, Executor, PgConnection, PgPool, Row};
use std::str::FromStr;
use std::time::{Duration, Instant};
use storefront_tests::*;

const OWNER: &str = "sf_sp_owner";
const HOSTILE: &str = "sf_sp_hostile";
const CLEAN: &str = "sf_sp_clean";

/// Run as the hostile role, with pg_catalog first while it works: a
/// shadow of every function, operator and aggregate of pg_catalog that
/// PL/pgSQL can declare, of every function of the extension, and a view
/// for every relation of the extension. Each counts itself, then raises.
const SHADOWS: &str = r#"
SET search_path = pg_catalog;
CREATE SEQUENCE public.hostile_calls;
CREATE FUNCTION public.hostile_ran(what text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    PERFORM pg_catalog.nextval('public.hostile_calls'::pg_catalog.regclass);
    RAISE EXCEPTION 'hostile %', what;
END $$;
CREATE TABLE public.hostile_made (kind text, made integer, failed integer);

DO $gen$
DECLARE
    -- pseudo-types PL/pgSQL takes and returns
    ok_pseudo CONSTANT text[] := ARRAY['anyelement', 'anyarray', 'anynonarray', 'anyenum', 'anyrange',
        'anymultirange', 'anycompatible', 'anycompatiblearray', 'anycompatiblenonarray',
        'anycompatiblerange', 'anycompatiblemultirange', 'record', 'void'];
    body text;
    f record;
    made integer := 0;
    failed integer := 0;
BEGIN
    -- functions: pg_catalog's, and the extension's own names
    FOR f IN
        SELECT p.oid, p.proname, n.nspname, pg_get_function_arguments(p.oid) AS args,
               pg_get_function_result(p.oid) AS result
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('pg_catalog', 'storefront') AND p.prokind = 'f'
          AND NOT EXISTS (
              SELECT 1 FROM pg_type t
              WHERE t.oid = ANY (p.proargtypes::oid[] || coalesce(p.proallargtypes, '{}') || p.prorettype)
                AND t.typtype = 'p' AND NOT t.typname = ANY (ok_pseudo))
    LOOP
        body := format('BEGIN PERFORM public.hostile_ran(%L); END', f.nspname || '.' || f.proname);
        BEGIN
            EXECUTE format('CREATE FUNCTION public.%I(%s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog AS %L',
                           f.proname, f.args, f.result, body);
            made := made + 1;
        EXCEPTION WHEN others THEN
            failed := failed + 1;
        END;
    END LOOP;
    INSERT INTO public.hostile_made VALUES ('function', made, failed);

    -- operators
    made := 0;
    failed := 0;
    FOR f IN
        SELECT o.oid, o.oprname, o.oprleft, o.oprright, o.oprresult
        FROM pg_operator o
        WHERE o.oprnamespace = 'pg_catalog'::regnamespace
          AND NOT EXISTS (
              SELECT 1 FROM pg_type t
              WHERE t.oid IN (o.oprleft, o.oprright, o.oprresult) AND t.typtype = 'p' AND NOT t.typname = ANY (ok_pseudo))
    LOOP
        body := format('BEGIN PERFORM public.hostile_ran(%L); END', 'operator ' || f.oprname);
        BEGIN
            EXECUTE format('CREATE FUNCTION public.hostile_op_%s(%s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog AS %L',
                           f.oid,
                           concat_ws(', ', CASE WHEN f.oprleft <> 0 THEN format_type(f.oprleft, NULL) END,
                                           CASE WHEN f.oprright <> 0 THEN format_type(f.oprright, NULL) END),
                           format_type(f.oprresult, NULL), body);
            EXECUTE format('CREATE OPERATOR public.%s (%s FUNCTION = public.hostile_op_%s)',
                           f.oprname,
                           concat(CASE WHEN f.oprleft <> 0 THEN format('LEFTARG = %s, ', format_type(f.oprleft, NULL)) END,
                                  CASE WHEN f.oprright <> 0 THEN format('RIGHTARG = %s, ', format_type(f.oprright, NULL)) END),
                           f.oid);
            made := made + 1;
        EXCEPTION WHEN others THEN
            failed := failed + 1;
        END;
    END LOOP;
    INSERT INTO public.hostile_made VALUES ('operator', made, failed);

    -- aggregates (plain ones): a bigint state whose step raises
    made := 0;
    failed := 0;
    FOR f IN
        SELECT p.oid, p.proname, p.pronargs, pg_get_function_identity_arguments(p.oid) AS args
        FROM pg_proc p JOIN pg_aggregate a ON a.aggfnoid = p.oid
        WHERE p.pronamespace = 'pg_catalog'::regnamespace AND a.aggkind = 'n'
          AND NOT EXISTS (
              SELECT 1 FROM pg_type t
              WHERE t.oid = ANY (p.proargtypes::oid[]) AND t.typtype = 'p' AND NOT t.typname = ANY (ok_pseudo))
    LOOP
        body := format('BEGIN PERFORM public.hostile_ran(%L); RETURN 0; END', 'aggregate ' || f.proname);
        BEGIN
            EXECUTE format('CREATE FUNCTION public.hostile_agg_%s(bigint%s) RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog AS %L',
                           f.oid, CASE WHEN f.pronargs > 0 THEN ', ' || f.args ELSE '' END, body);
            EXECUTE format('CREATE AGGREGATE public.%I(%s) (SFUNC = public.hostile_agg_%s, STYPE = bigint)',
                           f.proname, CASE WHEN f.pronargs > 0 THEN f.args ELSE '*' END, f.oid);
            made := made + 1;
        EXCEPTION WHEN others THEN
            failed := failed + 1;
        END;
    END LOOP;
    INSERT INTO public.hostile_made VALUES ('aggregate', made, failed);

    -- a view named as each relation of the extension
    made := 0;
    FOR f IN SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'storefront'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'S')
    LOOP
        EXECUTE format('CREATE VIEW public.%I AS SELECT public.hostile_ran(%L) AS hostile', f.relname, 'view ' || f.relname);
        made := made + 1;
    END LOOP;
    INSERT INTO public.hostile_made VALUES ('view', made, 0);
END
$gen$;
"#;

/// The calls, the same in both databases. Each gives its rows as text (or
/// its error's SQLSTATE and message); nothing the session runs itself
/// looks a name up (no function, operator or aggregate outside the
/// extension's qualified calls), so only the extension can meet a shadow.
const CALLS: &[(&str, Option<&str>)] = &[
    ("SELECT storefront.register_customer('ann@example.com', 'correct horse', 'Ann')", None),
    ("SELECT storefront.register_customer('bob@example.com', 'battery staple', 'Bob')", None),
    ("SELECT storefront.register_customer('ann@example.com', 'again', 'Ann again')", Some("23505")),
    ("SELECT storefront.authenticate('ann@example.com', 'correct horse')", None),
    ("SELECT storefront.authenticate('ann@example.com', 'wrong')", None),
    ("SELECT storefront.upsert_product('  SP-A ', 'Alpha', 1250, 'usd', 'Home/Kitchen', '{\"color\": \"red\"}')", None),
    ("SELECT storefront.upsert_product('SP-B', 'Beta', 999)", None),
    ("SELECT storefront.upsert_product('SP-HOT', 'Hot', 500, 'USD', 'Home')", None),
    ("SELECT storefront.upsert_product('bad sku!', 'Bad', 1)", Some("22023")),
    ("SELECT storefront.restock('SP-A', 10)", None),
    ("SELECT storefront.restock('SP-B', 5)", None),
    ("SELECT storefront.restock('SP-HOT', 40)", None),
    ("SELECT storefront.restock('SP-B', 0)", Some("22023")),
    ("SELECT storefront.set_hot_stock('SP-HOT', 4)", None),
    ("SELECT location, on_hand, reserved, available FROM storefront.stock('SP-A')", None),
    ("SELECT sku, product, price_cents, currency, category, attributes, available FROM storefront.products('sp-')", None),
    ("SELECT sku, product, price_cents, available FROM storefront.product('SP-B')", None),
    ("SELECT order_id, status, total_cents, currency, replayed
     FROM storefront.place_order(1, '[{\"sku\": \"SP-A\", \"qty\": 2}, {\"sku\": \"SP-B\", \"qty\": 1}]', 'key-1')", None),
    ("SELECT order_id, status, total_cents, currency, replayed
     FROM storefront.place_order(1, '[{\"sku\": \"SP-A\", \"qty\": 2}, {\"sku\": \"SP-B\", \"qty\": 1}]', 'key-1')", None),
    ("SELECT order_id FROM storefront.place_order(1, '[{\"sku\": \"SP-B\", \"qty\": 1}]', 'key-1')", Some("23505")),
    ("SELECT order_id FROM storefront.place_order(2, '[{\"sku\": \"SP-B\", \"qty\": 50}]')", Some("23514")),
    ("SELECT order_id FROM storefront.place_order(2, '[{\"sku\": \"NOPE\", \"qty\": 1}]')", Some("23503")),
    ("SELECT order_id FROM storefront.place_order(2, '{\"sku\": \"SP-B\"}')", Some("22P02")),
    ("SELECT order_id, status, total_cents FROM storefront.place_order(2, '[{\"sku\": \"SP-HOT\", \"qty\": 3}]')", None),
    ("SELECT order_id, status, total_cents FROM storefront.place_order(2, '[{\"sku\": \"SP-A\", \"qty\": 1}]')", None),
    ("SELECT order_id, status, total_cents FROM storefront.place_order(1, '[{\"sku\": \"SP-B\", \"qty\": 2}]', NULL, '1 second')", None),
    ("SELECT storefront.record_payment(1, 3499, true, 'psp-1')", None),
    ("SELECT storefront.record_payment(1, 3499, true, 'psp-1')", None),
    ("SELECT storefront.record_payment(3, 1500, false, 'psp-2')", None),
    ("SELECT storefront.record_payment(4, 1, true, 'psp-3')", Some("22023")),
    ("SELECT storefront.cancel_order(4, 'changed my mind')", None),
    ("SELECT storefront.ship_order(1)", None),
    ("SELECT storefront.deliver_order(1)", None),
    ("SELECT storefront.ship_order(4)", Some("55000")),
    ("SELECT storefront.expire_reservations('2100-01-01 00:00:00+00')", None),
    ("SELECT status FROM storefront.order_timeline(1)", None),
    ("SELECT seq, status FROM storefront.order_events(4)", None),
    ("SELECT order_id, customer_id, status, total_cents, currency, lines FROM storefront.order_details(1)", None),
    ("SELECT order_id FROM storefront.order_details(99)", Some("P0002")),
    ("SELECT location, on_hand, reserved, available FROM storefront.stock('SP-HOT')", None),
    ("SELECT storefront.track_event('page_view', '2026-05-01 10:15:00+00', 1, '{\"path\": \"/\"}')", None),
    ("SELECT storefront.track_event('page_view', '-infinity', 1, '{}')", Some("22008")),
    ("SELECT storefront.track_events(ARRAY['page_view', 'add_to_cart', 'page_view'],
                                    ARRAY['2026-05-01 10:20:00+00', '2026-05-01 11:05:00+00', '2026-05-01 11:30:00+00']::timestamptz[],
                                    ARRAY[1, 2, NULL]::bigint[],
                                    ARRAY['{\"path\": \"/a\"}', '{}', '{\"path\": \"/b\"}']::jsonb[])", None),
    ("SELECT storefront.create_rollup('sp_views_hourly', 'storefront.event', 'at', '1 hour', '{kind}', '{count}')", None),
    ("SELECT storefront.refresh_rollup('sp_views_hourly', '2026-06-01 00:00:00+00')", None),
    ("SELECT * FROM storefront_rollups.sp_views_hourly", None),
    ("SELECT storefront.track_event('page_view', '2026-05-01 10:50:00+00', 2, '{}')", None),
    ("SELECT storefront.refresh_rollup('sp_views_hourly', '2026-06-01 00:00:00+00')", None),
    ("SELECT * FROM storefront_rollups.sp_views_hourly", None),
    ("SELECT \"time\", page_views FROM storefront.dashboard_page_views('2026-05-01 00:00:00+00', '2026-05-02 00:00:00+00', '1 hour')", None),
    ("SELECT storefront.set_retention('sp_views_hourly', '3650 days')", None),
    ("CALL storefront.run_maintenance('2026-06-01 00:00:00+00')", None),
    ("SELECT step, ok, rows, sqlstate FROM storefront.maintenance_report()", None),
    ("SELECT pending_holds, relay_queue FROM storefront.pipeline_status()", None),
    ("SELECT invariant, ok, detail FROM storefront.check_invariants()", None),
    // order events through the relay function
    ("SET storefront.event_delivery = relay", None),
    ("SELECT order_id, status FROM storefront.place_order(2, '[{\"sku\": \"SP-A\", \"qty\": 1}]')", None),
    ("SELECT storefront.relay_order_events()", None),
    ("SELECT storefront.relay_order_events(0)", Some("22023")),
    ("RESET storefront.event_delivery", None),
];

/// The calls' results, one line each, and the calls whose outcome was not
/// the one expected (a SQLSTATE, or success).
async fn run_calls(conn: &mut PgConnection) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::new();
    let mut unexpected = Vec::new();
    for (sql, expected) in CALLS {
        let line = if sql.starts_with("SET") || sql.starts_with("RESET") || sql.starts_with("CALL") {
            match conn.execute(*sql).await {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("{:?}", pg_err(&e)),
            }
        } else {
            // each row as its text form: record_out, and a cast that looks
            // nothing up by name
            let wrapped = format!("SELECT r::text FROM ({sql}) r");
            match sqlx::query(&wrapped).fetch_all(&mut *conn).await {
                Ok(rows) => rows.iter().map(|r| r.get::<String, _>(0)).collect::<Vec<_>>().join(" | "),
                Err(e) => match pg_err(&e) {
                    Some(pe) => format!("ERROR {} {}", pe.code, pe.message),
                    None => format!("{e}"),
                },
            }
        };
        let outcome = line.strip_prefix("ERROR ").map(|rest| rest.split(' ').next().unwrap_or_default());
        if outcome != *expected {
            unexpected.push(format!("{sql}\n    expected {expected:?}, got {line}"));
        }
        out.push(format!("{sql}\n    -> {line}"));
    }
    (out, unexpected)
}

/// A pool for the test's own reads, with pg_catalog first whatever the
/// database's default.
async fn admin_pool(db: &str) -> PgPool {
    let opts = PgConnectOptions::from_str(&db_url(db)).unwrap().options([("search_path", "pg_catalog,public")]);
    sqlx::postgres::PgPoolOptions::new().max_connections(2).connect_with(opts).await.unwrap()
}

async fn session(db: &str, search_path: Option<&str>) -> PgConnection {
    let mut conn = PgConnection::connect_with(&PgConnectOptions::from_str(&db_url(db)).unwrap()).await.unwrap();
    if let Some(path) = search_path {
        conn.execute(format!("SET search_path = {path}").as_str()).await.unwrap();
    }
    conn
}

/// How many times a shadowing object ran (is_called: the sequence was
/// ever advanced), read by a clean session.
async fn hostile_calls(admin: &PgPool) -> i64 {
    let (last, called): (i64, bool) =
        sqlx::query_as("SELECT last_value, is_called FROM public.hostile_calls").fetch_one(admin).await.unwrap();
    if called {
        last
    } else {
        0
    }
}

async fn drop_everything() {
    let admin = connect("postgres", 1).await;
    for db in [HOSTILE, CLEAN] {
        admin.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str()).await.unwrap();
    }
    admin.execute(format!("DROP ROLE IF EXISTS {OWNER}").as_str()).await.unwrap();
    admin.close().await;
}

#[tokio::test]
async fn objects_in_public_shadowing_what_the_extension_calls_never_run() {
    drop_everything().await;
    let clean = fresh_db(CLEAN).await;
    let hostile = fresh_db(HOSTILE).await;
    // the database's owner owns schema public (pg_database_owner), so may
    // create objects there; it is no superuser
    hostile
        .execute(
            format!(
                "CREATE ROLE {OWNER} NOLOGIN;
                 ALTER DATABASE {HOSTILE} OWNER TO {OWNER};
                 GRANT USAGE ON SCHEMA storefront TO {OWNER};"
            )
            .as_str(),
        )
        .await
        .unwrap();
    let mut owner = session(HOSTILE, None).await;
    owner.execute(format!("SET ROLE {OWNER}").as_str()).await.unwrap();
    owner.execute(SHADOWS).await.expect("create the shadowing objects");
    owner.execute(format!("ALTER DATABASE {HOSTILE} SET search_path = public, pg_catalog").as_str()).await.unwrap();
    owner.close().await.unwrap();
    hostile.close().await;
    let hostile = admin_pool(HOSTILE).await;

    let made: Vec<(String, i32, i32)> =
        sqlx::query_as("SELECT kind, made, failed FROM public.hostile_made ORDER BY kind").fetch_all(&hostile).await.unwrap();
    eprintln!("shadowing objects (made, not declarable): {made:?}");
    let made_of = |kind: &str| made.iter().find(|m| m.0 == kind).map(|m| m.1).unwrap_or(0);
    assert!(made_of("function") > 2000, "{made:?}");
    assert!(made_of("operator") > 500, "{made:?}");
    assert!(made_of("aggregate") > 50, "{made:?}");
    assert!(made_of("view") > 20, "{made:?}");
    // the ones the extension would be most likely to meet are there
    for signature in [
        "btrim(text)",
        "lower(text)",
        "upper(text)",
        "length(text)",
        "now()",
        "jsonb_array_length(jsonb)",
        "jsonb_typeof(jsonb)",
        "pg_notify(text,text)",
        "to_regprocedure(text)",
        "to_regclass(text)",
        "set_config(text,text,boolean)",
        "current_setting(text,boolean)",
        "pg_try_advisory_lock(bigint)",
        "pg_try_advisory_xact_lock(bigint)",
        "date_trunc(text,timestamp with time zone,text)",
        "nextval(regclass)",
        "place_order(bigint,jsonb,text,interval)",
        "relay_order_events(integer)",
    ] {
        let present: bool = sqlx::query_scalar("SELECT to_regprocedure($1) IS NOT NULL")
            .bind(format!("public.{signature}"))
            .fetch_one(&hostile)
            .await
            .unwrap();
        assert!(present, "no shadow public.{signature}");
    }
    for op in ["=(text,text)", "=(bigint,bigint)", "<(timestamptz,timestamptz)", "+(bigint,bigint)", "||(text,text)", "->>(jsonb,text)"] {
        let present: bool = sqlx::query_scalar("SELECT to_regoperator($1) IS NOT NULL")
            .bind(format!("public.{op}"))
            .fetch_one(&hostile)
            .await
            .unwrap();
        assert!(present, "no shadow operator public.{op}");
    }

    // the shadows work: a name looked up under this path finds them
    let mut probe = session(HOSTILE, None).await;
    let path: String = sqlx::query_scalar("SHOW search_path").fetch_one(&mut probe).await.unwrap();
    assert_eq!(path, "public, pg_catalog", "the database's default search_path");
    for sql in ["SELECT btrim(' x ')", "SELECT 'a'::text = 'b'::text", "SELECT count(*) FROM (VALUES (1)) v"] {
        let err = probe.execute(sql).await.expect_err(sql);
        assert!(pg_err(&err).is_some_and(|e| e.message.starts_with("hostile")), "{sql}: {err}");
    }
    probe.close().await.unwrap();
    assert_eq!(hostile_calls(&hostile).await, 3);
    hostile.execute("ALTER SEQUENCE public.hostile_calls RESTART").await.unwrap();
    // (RESTART sets is_called back to false)
    assert_eq!(hostile_calls(&hostile).await, 0);

    // the API, in both databases
    let mut c = session(CLEAN, None).await;
    let (want, unexpected) = run_calls(&mut c).await;
    c.close().await.unwrap();
    assert!(unexpected.is_empty(), "calls without shadows did not do what they should:\n{}", unexpected.join("\n"));
    let mut h = session(HOSTILE, Some("public, pg_catalog")).await;
    let (got, _) = run_calls(&mut h).await;
    let ran = hostile_calls(&hostile).await;
    let differ: Vec<String> = want
        .iter()
        .zip(&got)
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("without shadows: {w}\nwith shadows:    {g}"))
        .collect();
    assert!(differ.is_empty(), "{} call(s) gave other results next to the shadows:\n{}", differ.len(), differ.join("\n\n"));
    assert_eq!(ran, 0, "shadowing objects ran {ran} time(s) during the API calls");
    assert_invariants(&clean).await;
    assert_invariants(&hostile).await;

    // the relay worker runs as a superuser in the hostile database, where
    // the database's default search_path applies to it
    let mut listener = PgListener::connect(&db_url(HOSTILE)).await.unwrap();
    listener.listen("storefront_order_events").await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT storefront.start_event_relay()").fetch_one(&mut h).await.unwrap();
    assert!(pid > 0);
    h.execute("SET storefront.event_delivery = relay").await.unwrap();
    let order: i64 = sqlx::query_scalar(
        "SELECT order_id FROM storefront.place_order(1, '[{\"sku\": \"SP-A\", \"qty\": 1}]', 'relay-key')",
    )
    .fetch_one(&mut h)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut heard = None;
    while heard.is_none() && Instant::now() < deadline {
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await {
            heard = Some(n.payload().to_string());
        }
    }
    // a second of relay rounds
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ran = hostile_calls(&hostile).await;
    let still: Option<i32> =
        sqlx::query_scalar("SELECT relay_pid FROM storefront.event_relay_status()").fetch_one(&mut h).await.unwrap();
    let stopped: bool = sqlx::query_scalar("SELECT storefront.stop_event_relay()").fetch_one(&mut h).await.unwrap();
    h.close().await.unwrap();
    assert_eq!(ran, 0, "shadowing objects ran {ran} time(s) in the relay worker");
    let payload = heard.expect("the relay worker to deliver the order's event");
    assert!(payload.contains(&format!("\"order_id\": {order}")), "{payload}");
    assert_eq!(still, Some(pid), "the relay worker did not keep running");
    assert!(stopped);

    clean.close().await;
    hostile.close().await;
    drop_everything().await;
}
