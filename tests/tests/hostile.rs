//! Every function in schema storefront, called as a hostile caller would:
//! one argument at a time gets NULL, empty, huge, negative, non-finite,
//! very long or malformed values while the others stay sane. Each call
//! ends with a result or a documented SQLSTATE: never an internal error
//! (XX000), never a lost connection, never a statement that runs away.
//! Afterwards every invariant holds and maintenance still runs.
//!
//! The functions are read from pg_proc, so a function is covered the day
//! it lands; an argument type with no hostile values below fails the test
//! until it gets some.

use sqlx::{Connection, Executor, PgConnection, Row};
use std::collections::BTreeMap;
use storefront_tests::*;

/// Hostile values (SQL expressions) for an argument type.
fn hostile(ty: &str) -> Option<Vec<String>> {
    let deep_array = format!("'{}{}'::jsonb", "[".repeat(500), "]".repeat(500));
    let deep_object = format!("'{}1{}'::jsonb", "{\"a\": ".repeat(300), "}".repeat(300));
    let big_number = format!("'[{{\"sku\": \"SANE-1\", \"qty\": {}}}]'::jsonb", "9".repeat(400));
    let big_props = format!("'{{\"n\": {}}}'::jsonb", "1".repeat(400));
    let v: Vec<String> = match ty {
        "bigint" => vec!["NULL", "0", "-1", "(-9223372036854775807 - 1)", "9223372036854775807"]
            .into_iter()
            .map(String::from)
            .collect(),
        "integer" => vec!["NULL", "0", "-1", "(-2147483647 - 1)", "2147483647"].into_iter().map(String::from).collect(),
        "smallint" => vec!["NULL", "0::smallint", "-1::smallint", "(-32767 - 1)::smallint", "32767::smallint"]
            .into_iter()
            .map(String::from)
            .collect(),
        "double precision" => vec!["NULL", "'NaN'", "'Infinity'", "'-Infinity'", "-1e308", "0"]
            .into_iter()
            .map(String::from)
            .collect(),
        "boolean" => vec!["NULL", "true", "false"].into_iter().map(String::from).collect(),
        "text" | "character varying" | "name" => vec![
            "NULL".to_string(),
            "''".to_string(),
            "'   '".to_string(),
            "repeat('x', 100000)".to_string(),
            "repeat('é', 20000)".to_string(),
            "E'\\x01\\x02\\x7f'".to_string(),
            "''' OR 1=1; DROP TABLE storefront.orders; --'".to_string(),
            "'\"; SELECT 1; --'".to_string(),
            "'%s%s%n'".to_string(),
            "'🙂🙃'".to_string(),
        ],
        "character" => vec!["NULL", "''", "'us'", "'€€€'", "'US1'", "repeat('X', 1000)"]
            .into_iter()
            .map(String::from)
            .collect(),
        "jsonb" | "json" => vec![
            "NULL".to_string(),
            "'null'".to_string(),
            "'{}'".to_string(),
            "'[]'".to_string(),
            "'\"x\"'".to_string(),
            "'[{}]'".to_string(),
            "'[{\"sku\": null, \"qty\": null}]'".to_string(),
            deep_array.clone(),
            deep_object.clone(),
            big_number.clone(),
            big_props.clone(),
            "(SELECT jsonb_agg(jsonb_build_object('sku', 'SANE-1', 'qty', 1)) FROM generate_series(1, 100001))".to_string(),
            "jsonb_build_object('reason', repeat('x', 100000))".to_string(),
        ],
        "jsonb[]" => vec![
            "NULL".to_string(),
            "'{}'::jsonb[]".to_string(),
            "ARRAY[NULL::jsonb]".to_string(),
            "ARRAY['[]'::jsonb]".to_string(),
            format!("ARRAY[{deep_array}]"),
            format!("ARRAY[{deep_object}]"),
            format!("ARRAY[{big_props}]"),
            "array_fill('{}'::jsonb, ARRAY[100001])".to_string(),
        ],
        "text[]" => vec![
            "NULL",
            "'{}'::text[]",
            "ARRAY[NULL::text]",
            "ARRAY['']",
            "ARRAY[repeat('x', 100000)]",
            "array_fill('x'::text, ARRAY[100001])",
            "ARRAY['count; DROP TABLE storefront.orders']",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "bigint[]" => vec![
            "NULL",
            "'{}'::bigint[]",
            "ARRAY[NULL::bigint]",
            "ARRAY[-9223372036854775807 - 1, 9223372036854775807]",
            "array_fill(1::bigint, ARRAY[100001])",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "integer[]" => vec!["NULL", "'{}'::integer[]", "ARRAY[NULL::integer]", "ARRAY[-2147483647 - 1, 2147483647]"]
            .into_iter()
            .map(String::from)
            .collect(),
        "double precision[]" => vec![
            "NULL",
            "'{}'::float8[]",
            "ARRAY[NULL::float8]",
            "ARRAY['NaN', 'Infinity', '-Infinity']::float8[]",
            "array_fill(1::float8, ARRAY[100001])",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "timestamp with time zone" => vec![
            "NULL",
            "'infinity'::timestamptz",
            "'-infinity'::timestamptz",
            "'4714-11-24 00:00:00+00 BC'::timestamptz",
            "'294276-12-31 23:59:59+00'::timestamptz",
            "'epoch'::timestamptz",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "timestamp without time zone" => vec![
            "NULL",
            "'infinity'::timestamp",
            "'-infinity'::timestamp",
            "'4714-11-24 00:00:00 BC'::timestamp",
            "'294276-12-31 23:59:59'::timestamp",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "date" => vec!["NULL", "'infinity'::date", "'-infinity'::date", "'4714-11-24 BC'::date", "'5874897-12-31'::date"]
            .into_iter()
            .map(String::from)
            .collect(),
        "timestamp with time zone[]" => vec![
            "NULL",
            "'{}'::timestamptz[]",
            "ARRAY[NULL::timestamptz]",
            "ARRAY['infinity', '-infinity']::timestamptz[]",
            "ARRAY['4714-11-24 00:00:00+00 BC', '294276-12-31 23:59:59+00']::timestamptz[]",
            "array_fill(now(), ARRAY[100001])",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "interval" => vec![
            "NULL",
            "'0'::interval",
            "'-1 day'::interval",
            "'1 microsecond'::interval",
            "'178000000 years'::interval",
            "'-178000000 years'::interval",
            "'1 mon 1 day'::interval",
            "'2147483647 days 2562047788:00:54.775807'::interval",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "regclass" => vec![
            "NULL",
            "'pg_catalog.pg_class'::regclass",
            "'pg_catalog.pg_authid'::regclass",
            "'storefront.customer'::regclass",
            "'storefront.orders'::regclass",
            "0::oid::regclass",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "regrole" => vec!["NULL", "'postgres'::regrole", "'pg_monitor'::regrole", "0::oid::regrole"]
            .into_iter()
            .map(String::from)
            .collect(),
        "regclass[]" => vec![
            "NULL",
            "'{}'::regclass[]",
            "ARRAY[NULL::regclass]",
            "ARRAY['pg_catalog.pg_authid'::regclass]",
            "ARRAY[0::oid::regclass]",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "regprocedure[]" => vec![
            "NULL",
            "'{}'::regprocedure[]",
            "ARRAY[NULL::regprocedure]",
            "ARRAY['pg_catalog.pg_read_file(text)'::regprocedure]",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        // polymorphic: every anyelement argument of a call has the same type
        "anyelement" => vec!["NULL::integer", "(-2147483647 - 1)", "2147483647"].into_iter().map(String::from).collect(),
        _ => return None,
    };
    Some(v)
}

/// A sane value for argument `arg` of type `ty`: what a careful caller
/// would pass, so that the hostile argument is the only odd one.
fn sane(func: &str, arg: &str, ty: &str, n: usize) -> String {
    let by_name = match (func, arg) {
        (_, "email") => Some(format!("'sane{n}@example.com'")),
        (_, "password") => Some("'correct horse'".into()),
        (_, "full_name") => Some("'Sane Caller'".into()),
        ("add_location", "code") => Some(format!("'loc{n}'")),
        ("add_location", "name") | ("upsert_product", "name") => Some("'Sane'".into()),
        (_, "sku") => Some("'SANE-1'".into()),
        (_, "price_cents") => Some("100".into()),
        (_, "currency") => Some("'USD'".into()),
        (_, "category") => Some("'Sane/Things'".into()),
        (_, "path") => Some("'Sane/Things'".into()),
        (_, "attributes") | (_, "props") => Some("'{}'::jsonb".into()),
        (_, "sellable") => Some("true".into()),
        (_, "qty") => Some("1".into()),
        (_, "slots") => Some("0".into()),
        (_, "location") => Some("'main'".into()),
        (_, "customer_id") => Some("1".into()),
        (_, "items") => Some("'[{\"sku\": \"SANE-1\", \"qty\": 1}]'::jsonb".into()),
        (_, "idempotency_key") => Some("NULL".into()),
        (_, "hold") => Some("'15 minutes'::interval".into()),
        (_, "order_id") => Some("1".into()),
        (_, "amount_cents") => Some("100".into()),
        (_, "succeeded") => Some("true".into()),
        (_, "provider_ref") => Some(format!("'psp-{n}'")),
        (_, "reason") => Some("'sane reason'".into()),
        (_, "batch") => Some("10".into()),
        (_, "bucket_width") => Some("'1 hour'::interval".into()),
        (_, "timezone") => Some("'Europe/Berlin'".into()),
        (_, "origin") if ty == "date" => Some("'2000-01-03'::date".into()),
        (_, "origin") if ty.starts_with("timestamp with") => Some("NULL::timestamptz".into()),
        (_, "origin") => Some("'2000-01-03'::timestamp".into()),
        (_, "offset") => Some("'0'::interval".into()),
        (_, "start") | (_, "from_time") => Some("'2026-01-01 00:00+00'::timestamptz".into()),
        (_, "finish") | (_, "to_time") => Some("'2026-01-02 00:00+00'::timestamptz".into()),
        (_, "times") => Some("ARRAY['2026-01-01 01:00+00']::timestamptz[]".into()),
        (_, "vals") => Some("ARRAY[1.5]::float8[]".into()),
        (_, "fill") => Some("'locf'".into()),
        (_, "ahead") => Some("'1 day'::interval".into()),
        (_, "behind") => Some("'1 day'::interval".into()),
        ("grant_functions", "kind") => Some("NULL".into()),
        (_, "kind") => Some("'page_view'".into()),
        (_, "kinds") => Some("ARRAY['page_view']".into()),
        (_, "ats") => Some("ARRAY[now()]".into()),
        (_, "customer_ids") => Some("ARRAY[1::bigint]".into()),
        (_, "relation") => Some("'sane_r'".into()),
        (_, "keep") => Some("'30 days'::interval".into()),
        ("create_rollup", "name") => Some(format!("'hostile_r{n}'")),
        (_, "name") => Some("'sane_r'".into()),
        (_, "source") => Some("'storefront.event'::regclass".into()),
        (_, "time_column") => Some("'at'".into()),
        (_, "group_columns") => Some("ARRAY['kind']".into()),
        (_, "aggregates") => Some("ARRAY['count']".into()),
        (_, "schema") => Some("'storefront_rollups'".into()),
        (_, "max_events") => Some("100".into()),
        (_, "interval_ms") => Some("10".into()),
        (_, "role_name") => Some("'sf_hostile_role'::regrole".into()),
        (_, "functions") => Some("'{}'::regprocedure[]".into()),
        (_, "scale") => Some("0".into()),
        (_, "search") => Some("'tee'".into()),
        (_, "after_sku") => Some("NULL".into()),
        (_, "page_size") => Some("50".into()),
        (_, "after_seq") => Some("0".into()),
        (_, "tables") => Some("ARRAY['storefront.orders'::regclass]".into()),
        _ => None,
    };
    if let Some(v) = by_name {
        return v;
    }
    match ty {
        "bigint" | "integer" | "smallint" => "1".into(),
        "double precision" => "1.0".into(),
        "boolean" => "true".into(),
        "text" | "character varying" | "name" => "'x'".into(),
        "character" => "'USD'".into(),
        "jsonb" | "json" => "'{}'".into(),
        "timestamp with time zone" => "'2026-01-01 12:00+00'::timestamptz".into(),
        "timestamp without time zone" => "'2026-01-01 12:00'::timestamp".into(),
        "date" => "'2026-01-01'::date".into(),
        "interval" => "'1 hour'::interval".into(),
        "anyelement" => "1".into(),
        t if t.ends_with("[]") => format!("'{{}}'::{t}"),
        t => format!("NULL::{t}"),
    }
}

/// SQLSTATEs that are never an acceptable answer to bad input.
fn unacceptable(code: &str) -> bool {
    code.starts_with("XX") // internal error: a bug (a panic, a failed assertion)
        || code.starts_with("58") // system error
        || code == "22000" // the generic data exception: no documented meaning
        || code == "57014" // canceled by statement_timeout: the input ran away
        || code == "42883" // undefined function: the call itself is wrong (a test bug)
        || code == "42601" // syntax error: the call itself is wrong (a test bug)
}

struct Func {
    name: String,
    kind: String,
    sig: String,
    args: Vec<(String, String)>,
}

async fn functions(conn: &mut PgConnection) -> Vec<Func> {
    let rows = sqlx::query(
        "SELECT p.proname::text, p.prokind::text, p.oid::regprocedure::text,
                coalesce(p.proargnames, '{}')::text[],
                coalesce(p.proargmodes::text[], '{}')::text[],
                ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY u(t, i) ORDER BY i)
         FROM pg_proc p
         WHERE p.pronamespace = 'storefront'::regnamespace
           AND p.prorettype <> 'trigger'::regtype
         ORDER BY 1, 3",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("list functions");
    rows.into_iter()
        .map(|r| {
            let names: Vec<String> = r.get(3);
            let modes: Vec<String> = r.get(4);
            let types: Vec<String> = r.get(5);
            // names cover every argument (OUT and TABLE columns too) when
            // modes are given; keep the input ones
            let in_names: Vec<String> = if modes.is_empty() {
                names.clone()
            } else {
                names.iter().zip(&modes).filter(|(_, m)| matches!(m.as_str(), "i" | "b" | "v")).map(|(n, _)| n.clone()).collect()
            };
            let args = types
                .into_iter()
                .enumerate()
                .map(|(i, t)| (in_names.get(i).cloned().unwrap_or_default(), t))
                .collect();
            Func { name: r.get(0), kind: r.get(1), sig: r.get(2), args }
        })
        .collect()
}

fn call_sql(f: &Func, values: &[String]) -> String {
    let typed: Vec<String> = values
        .iter()
        .zip(&f.args)
        .map(|(v, (_, t))| if t == "anyelement" { v.clone() } else { format!("({v})::{t}") })
        .collect();
    match f.kind.as_str() {
        "p" => format!("CALL storefront.{}({})", f.name, typed.join(", ")),
        "a" => format!("SELECT storefront.{}(x) FROM (VALUES ({})) v(x)", f.name, typed.join(", ")),
        _ => format!("SELECT * FROM storefront.{}({})", f.name, typed.join(", ")),
    }
}

async fn session(db: &str) -> PgConnection {
    let mut c = PgConnection::connect(&db_url(db)).await.expect("connect");
    c.execute("SET statement_timeout = '30s'").await.expect("statement_timeout");
    c
}

#[tokio::test]
async fn every_function_survives_hostile_arguments() {
    let db = "sf_hostile";
    let pool = fresh_db(db).await;
    pool.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sf_hostile_role') THEN
             CREATE ROLE sf_hostile_role; END IF; END $$;
         SELECT storefront.register_customer('sane@example.com', 'pw', 'Sane');
         SELECT storefront.upsert_product('SANE-1', 'Sane', 100);
         SELECT storefront.restock('SANE-1', 1000000);
         SELECT order_id FROM storefront.place_order(1, '[{\"sku\": \"SANE-1\", \"qty\": 1}]');
         SELECT storefront.ensure_event_partitions();
         SELECT storefront.create_rollup('sane_r', 'storefront.event', 'at', '1 hour', '{kind}', '{count}');",
    )
    .await
    .expect("set up a store");
    pool.close().await;

    let mut conn = session(db).await;
    let funcs = functions(&mut conn).await;
    assert!(funcs.len() > 40, "only {} functions found", funcs.len());

    let mut failures = Vec::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut calls = 0usize;
    let mut n = 0usize;
    for f in &funcs {
        let mut plans: Vec<Vec<String>> = Vec::new();
        if f.args.is_empty() {
            plans.push(Vec::new());
        }
        for (i, (arg, ty)) in f.args.iter().enumerate() {
            let Some(values) = hostile(ty) else {
                failures.push(format!("{}: no hostile values for argument {arg} of type {ty}; add some", f.sig));
                continue;
            };
            for v in values {
                n += 1;
                let mut call: Vec<String> =
                    f.args.iter().map(|(a, t)| sane(&f.name, a, t, n)).collect();
                call[i] = v;
                plans.push(call);
            }
        }
        for values in plans {
            let sql = call_sql(f, &values);
            calls += 1;
            let res = conn.execute(sql.as_str()).await;
            let outcome = match &res {
                Ok(_) => "ok".to_string(),
                Err(e) => match pg_err(e) {
                    Some(pe) => {
                        if unacceptable(&pe.code) {
                            failures.push(format!("{}: {} -> {} {}", f.sig, short(&sql), pe.code, pe.message));
                        }
                        pe.code
                    }
                    None => {
                        failures.push(format!("{}: {} -> connection lost: {e}", f.sig, short(&sql)));
                        conn = session(db).await;
                        "lost".to_string()
                    }
                },
            };
            *outcomes.entry(outcome).or_insert(0) += 1;
            // a session that is still there answers
            if sqlx::query("SELECT 1").execute(&mut conn).await.is_err() {
                failures.push(format!("{}: {} -> the session died", f.sig, short(&sql)));
                conn = session(db).await;
            }
        }
    }
    eprintln!("hostile calls: {calls} over {} functions; outcomes {outcomes:?}", funcs.len());
    assert!(failures.is_empty(), "{} hostile call(s) misbehaved:\n{}", failures.len(), failures.join("\n"));

    // the store is still consistent and maintenance still runs
    let pool = connect(db, 2).await;
    assert_invariants(&pool).await;
    let is_proc: bool = sqlx::query_scalar(
        "SELECT prokind = 'p' FROM pg_proc WHERE proname = 'run_maintenance' AND pronamespace = 'storefront'::regnamespace",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let maintenance = if is_proc { "CALL storefront.run_maintenance()" } else { "SELECT * FROM storefront.run_maintenance()" };
    pool.execute(maintenance).await.expect("maintenance runs after the hostile calls");
    pool.execute(maintenance).await.expect("and again");
}

fn short(sql: &str) -> String {
    if sql.len() > 300 {
        format!("{}…", &sql[..sql.char_indices().nth(300).map(|(i, _)| i).unwrap_or(sql.len())])
    } else {
        sql.to_string()
    }
}
