//! Warehouse benchmarks, in one run on one cluster:
//! 1. SCD Type 2 on a dimension of `--rows` keys (1,000,000) with 1% and
//!    10% of the keys changed, full source: storefront.scd2_upsert against
//!    the same merge written as dbt-style SQL (a staging query, then UPDATE,
//!    then INSERT) on an identical table, and against `dbt snapshot`
//!    (dbt-postgres 1.11, check strategy) end to end;
//! 2. delta sources of 1,000, 10,000 and 100,000 changed keys against
//!    dimensions of 100,000 and `--rows` keys: the time follows the batch,
//!    not the dimension (dbt snapshot on the same deltas for contrast);
//! 3. load_warehouse() after a day of new orders on scale-1 demo data,
//!    against a full reload.
//!
//!   cargo run --release -p storefront-benches --bin whbench -- \
//!       --url postgres://postgres:storefront@127.0.0.1:28819 --dbt target/venv/bin/dbt --out book/src/benchmarks
//!
//! The changed-key cases run three rounds (each round changes the same
//! keys again, so every contender writes the same new versions), the
//! contenders in a different order each round, and report the median;
//! the other cases run once. Every contender starts from the same state.

use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use storefront_benches::{bar_chart, flag_pairs, timed};

struct Args {
    url: String,
    rows: i64,
    dbt: Option<String>,
    out: Option<String>,
    load_db: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: "postgres://postgres:storefront@127.0.0.1:28819".into(),
        rows: 1_000_000,
        dbt: None,
        out: None,
        load_db: None,
    };
    let usage = "the header of benches/src/bin/whbench.rs";
    for (flag, val) in flag_pairs(usage) {
        match flag.as_str() {
            "--url" => a.url = val,
            "--rows" => a.rows = val.parse().expect("--rows N"),
            "--dbt" => a.dbt = Some(val),
            "--out" => a.out = Some(val),
            "--load-db" => a.load_db = Some(val),
            other => panic!("unknown argument {other}; see {usage}"),
        }
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn connect(base: &str, db: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|c, _| Box::pin(async move { c.execute("SET jit = off").await.map(|_| ()) }))
        .connect(&format!("{base}/{db}"))
        .await
        .expect("connect")
}

/// A dimension table with the SCD2 columns and the constraints the
/// warehouse's dimensions have.
fn dim_ddl(name: &str) -> String {
    format!(
        "CREATE TABLE {name} (
            sk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id bigint NOT NULL, name text, tier text, price numeric(10,2), region text,
            valid_from timestamptz NOT NULL, valid_to timestamptz NOT NULL, is_current boolean NOT NULL,
            UNIQUE (id, valid_from),
            EXCLUDE USING gist (id WITH =, tstzrange(valid_from, valid_to) WITH &&));
         CREATE UNIQUE INDEX {name}_current ON {name} (id) WHERE is_current;"
    )
}

fn merge_ext(dim: &str, src: &str) -> String {
    format!("SELECT * FROM storefront.scd2_upsert('{dim}', '{src}', '{{id}}', '{{tier,price,region}}', clock_timestamp())")
}

/// The same merge as dbt-style SQL: stage the new and changed rows, close
/// the current versions they replace, insert them.
fn merge_sql(dim: &str, src: &str) -> String {
    format!(
        "BEGIN;
         CREATE TEMP TABLE stg ON COMMIT DROP AS
         SELECT s.id, s.name, s.tier, s.price, s.region, d.sk AS cur_sk, clock_timestamp() AS at
         FROM {src} s LEFT JOIN {dim} d ON d.id = s.id AND d.is_current
         WHERE d.sk IS NULL OR (s.tier, s.price, s.region) IS DISTINCT FROM (d.tier, d.price, d.region);
         UPDATE {dim} d SET valid_to = stg.at, is_current = false FROM stg WHERE d.sk = stg.cur_sk;
         INSERT INTO {dim} (id, name, tier, price, region, valid_from, valid_to, is_current)
         SELECT id, name, tier, price, region, at, 'infinity', true FROM stg;
         COMMIT;"
    )
}

struct Dbt {
    exe: String,
    dir: PathBuf,
}

impl Dbt {
    fn new(exe: &str, base: &str, db: &str) -> Dbt {
        let dir = PathBuf::from("target/dbt-bench");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("snapshots")).unwrap();
        std::fs::create_dir_all(dir.join("models")).unwrap();
        // postgres://user:password@host:port
        let rest = base.trim_start_matches("postgres://");
        let (cred, hostport) = rest.split_once('@').expect("user:password@host:port in --url");
        let (user, password) = cred.split_once(':').unwrap_or((cred, ""));
        let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
        std::fs::write(dir.join("dbt_project.yml"), "name: whbench\nversion: '1.0'\nprofile: whbench\nconfig-version: 2\n").unwrap();
        std::fs::write(
            dir.join("profiles.yml"),
            format!(
                "whbench:\n  target: bench\n  outputs:\n    bench:\n      type: postgres\n      host: {host}\n      port: {port}\n      user: {user}\n      password: '{password}'\n      dbname: {db}\n      schema: public\n      threads: 1\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("models/sources.yml"),
            "version: 2\nsources:\n  - name: bench\n    schema: public\n    tables:\n      - name: src_full\n      - name: src_dbt_delta\n",
        )
        .unwrap();
        let snap = |name: &str, table: &str| {
            format!(
                "  - name: {name}\n    relation: source('bench', '{table}')\n    config:\n      unique_key: id\n      strategy: check\n      check_cols: ['tier', 'price', 'region']\n"
            )
        };
        std::fs::write(
            dir.join("snapshots/dims.yml"),
            format!("snapshots:\n{}{}", snap("dim_dbt", "src_full"), snap("dim_dbt_delta", "src_dbt_delta")),
        )
        .unwrap();
        let exe = std::fs::canonicalize(exe).unwrap_or_else(|e| panic!("dbt at {exe}: {e}"));
        Dbt { exe: exe.display().to_string(), dir }
    }

    /// `dbt snapshot --select name`, end to end, in seconds.
    fn snapshot(&self, name: &str) -> f64 {
        let t = Instant::now();
        let out = std::process::Command::new(&self.exe)
            .args(["snapshot", "--select", name, "--profiles-dir", ".", "--project-dir", "."])
            .current_dir(&self.dir)
            .output()
            .expect("run dbt");
        let secs = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "dbt snapshot {name} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        secs
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = parse_args();
    let base = args.url.trim_end_matches('/').to_string();
    let admin = PgPool::connect(&format!("{base}/postgres")).await.expect("connect");
    admin.execute("DROP DATABASE IF EXISTS sf_whbench WITH (FORCE)").await.expect("drop");
    admin.execute("CREATE DATABASE sf_whbench").await.expect("create");
    let pool = connect(&base, "sf_whbench").await;
    pool.execute("CREATE EXTENSION storefront CASCADE").await.expect("extension");
    let n = args.rows;
    let small = n / 10;
    pool.execute(
        format!(
            "CREATE TABLE src_full (id bigint PRIMARY KEY, name text, tier text, price numeric(10,2), region text);
             INSERT INTO src_full
             SELECT g, 'Customer ' || g, (ARRAY['new', 'one-time', 'repeat', 'loyal'])[1 + g % 4],
                    (g % 1000) / 10.0, (ARRAY['Europe', 'North America', 'Asia Pacific'])[1 + g % 3]
             FROM generate_series(1, {n}) g;
             CREATE TABLE src_small (LIKE src_full INCLUDING ALL);
             INSERT INTO src_small SELECT * FROM src_full WHERE id <= {small};
             CREATE TABLE src_delta (LIKE src_full INCLUDING ALL);
             CREATE VIEW src_dbt_delta AS SELECT * FROM src_full;
             {} {} {}",
            dim_ddl("dim_ext"),
            dim_ddl("dim_sql"),
            dim_ddl("dim_small")
        )
        .as_str(),
    )
    .await
    .expect("benchmark data");
    pool.execute("VACUUM ANALYZE").await.expect("VACUUM ANALYZE");
    let dbt = args.dbt.as_deref().map(|exe| Dbt::new(exe, &base, "sf_whbench"));

    // ------------------------------------------------ initial load
    let mut md = String::new();
    let _ = writeln!(md, "<!-- generated by benches/src/bin/whbench.rs (scripts/bench-warehouse.sh); do not edit -->");
    let init_ext = timed(&pool, &merge_ext("dim_ext", "src_full")).await;
    let init_sql = timed(&pool, &merge_sql("dim_sql", "src_full")).await;
    let init_dbt = dbt.as_ref().map(|d| d.snapshot("dim_dbt"));
    let _ = timed(&pool, &merge_ext("dim_small", "src_small")).await;
    if let Some(d) = &dbt {
        d.snapshot("dim_dbt_delta");
    }
    pool.execute("VACUUM ANALYZE").await.unwrap();

    // --------------------------------------------- 1% and 10% changed
    let mut rows_full: Vec<(String, f64, f64, Option<f64>)> = vec![(format!("initial load, {n} keys"), init_ext, init_sql, init_dbt)];
    const ROUNDS: usize = 3;
    for (pct, every) in [(1, 100), (10, 10)] {
        let (mut es, mut ss, mut ds) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // vacuumed, so the first contender to read the changed rows does
            // not pay for setting their hint bits
            pool.execute(format!("UPDATE src_full SET price = price + 1 WHERE id % {every} = 0").as_str()).await.unwrap();
            pool.execute("VACUUM ANALYZE src_full").await.unwrap();
            // who goes first takes turns (caches warm up behind it)
            for who in (0..3).map(|i| (i + round) % 3) {
                match who {
                    0 => es.push(timed(&pool, &merge_ext("dim_ext", "src_full")).await),
                    1 => ss.push(timed(&pool, &merge_sql("dim_sql", "src_full")).await),
                    _ => {
                        if let Some(d) = &dbt {
                            ds.push(d.snapshot("dim_dbt"));
                        }
                    }
                }
            }
            pool.execute("VACUUM ANALYZE dim_ext, dim_sql").await.unwrap();
            eprintln!(
                "  {pct}% changed, round {round}: scd2_upsert {:.2} s, dbt-style SQL {:.2} s, dbt snapshot {}",
                es[round],
                ss[round],
                ds.get(round).map(|d| format!("{d:.2} s")).unwrap_or_else(|| "-".into())
            );
        }
        let d = dbt.as_ref().map(|_| median(ds));
        rows_full.push((format!("{pct}% changed ({} keys)", n / every), median(es), median(ss), d));
    }
    // all three hold the same history
    let ext_rows = scalar(&pool, "SELECT count(*) FROM dim_ext").await;
    let sql_rows = scalar(&pool, "SELECT count(*) FROM dim_sql").await;
    assert_eq!(ext_rows, sql_rows, "scd2_upsert and the SQL baseline disagree");
    assert_eq!(ext_rows, n + ROUNDS as i64 * (n / 100 + n / 10));
    if dbt.is_some() {
        let dbt_rows = scalar(&pool, "SELECT count(*) FROM dim_dbt").await;
        assert_eq!(ext_rows, dbt_rows, "scd2_upsert and dbt snapshot disagree");
    }

    // ----------------------------------------------- delta sources
    let mut rows_delta: Vec<(i64, f64, f64, Option<f64>)> = Vec::new();
    for batch in [1_000i64, 10_000, 100_000] {
        let step = (n / batch).max(1);
        pool.execute(
            format!(
                "TRUNCATE src_delta;
                 INSERT INTO src_delta SELECT id, name, tier, price + 3, region FROM src_full WHERE id % {step} = 1;
                 ANALYZE src_delta;
                 CREATE OR REPLACE VIEW src_dbt_delta AS SELECT * FROM src_delta;"
            )
            .as_str(),
        )
        .await
        .unwrap();
        let big = timed(&pool, &merge_ext("dim_ext", "src_delta")).await;
        // the same number of keys against the small dimension
        pool.execute(
            format!(
                "TRUNCATE src_delta;
                 INSERT INTO src_delta SELECT id, name, tier, price + 3, region FROM src_small WHERE id % {} = 1 OR {batch} >= {small};
                 ANALYZE src_delta;",
                (small / batch).max(1)
            )
            .as_str(),
        )
        .await
        .unwrap();
        let little = timed(&pool, &merge_ext("dim_small", "src_delta")).await;
        let d = dbt.as_ref().map(|d| {
            // dbt's delta runs against its 1M-key snapshot
            d.snapshot("dim_dbt_delta")
        });
        rows_delta.push((batch, little, big, d));
    }

    // ----------------------------------------------- load_warehouse
    // (--load-db none: only the SCD2 part; --load-db NAME: an already
    // seeded database)
    let load_db = args.load_db.clone().unwrap_or_else(|| "sf_whload".into());
    let (full, incremental, reload) = if load_db == "none" { (0.0, 0.0, 0.0) } else {
    if args.load_db.is_none() {
        admin.execute("DROP DATABASE IF EXISTS sf_whload WITH (FORCE)").await.unwrap();
        admin.execute("CREATE DATABASE sf_whload").await.unwrap();
        let p = connect(&base, &load_db).await;
        p.execute("CREATE EXTENSION storefront CASCADE; SELECT * FROM storefront.seed_demo_data(1, '2026-11-01')")
            .await
            .expect("seed");
        p.execute("VACUUM ANALYZE").await.unwrap();
        p.close().await;
    }
    let p = connect(&base, &load_db).await;
    // a fresh full load first (the starting point)
    p.execute(
        "TRUNCATE storefront_dw.fact_order_line, storefront_dw.dim_customer, storefront_dw.dim_product,
                  storefront_dw.dim_location, storefront_dw.dim_date;
         UPDATE storefront_dw.load_state SET watermark = NULL, system_id = NULL;",
    )
    .await
    .unwrap();
    let full = timed(&p, "SELECT * FROM storefront.load_warehouse()").await;
    // a day of orders: 1,100 orders (the demo's daily average), 93% paid
    p.execute(
        "DO $$
         DECLARE r record; o storefront.order_receipt; i int := 0;
         BEGIN
           FOR r IN SELECT c.customer_id, s.code FROM generate_series(1, 1100) g
                    JOIN LATERAL (SELECT customer_id FROM storefront.customer ORDER BY customer_id OFFSET (g * 89) % 100000 LIMIT 1) c ON true
                    JOIN LATERAL (SELECT s.code FROM storefront.sku s JOIN storefront.inventory iv USING (sku_id)
                                  WHERE iv.on_hand - iv.reserved > 10 AND s.hot_slots = 0
                                  ORDER BY s.sku_id OFFSET (g * 37) % 5000 LIMIT 1) s ON true
           LOOP
             o := storefront.place_order(r.customer_id, jsonb_build_array(jsonb_build_object('sku', r.code, 'qty', 1)));
             i := i + 1;
             IF i % 100 < 93 THEN
               PERFORM storefront.record_payment(o.order_id, o.total_cents, true, 'bench-' || o.order_id);
             END IF;
           END LOOP;
         END $$;",
    )
    .await
    .expect("a day of orders");
    let incremental = timed(&p, "SELECT * FROM storefront.load_warehouse()").await;
    let facts = scalar(&p, "SELECT count(*) FROM storefront_dw.fact_order_line").await;
    let lines = scalar(&p, "SELECT count(*) FROM storefront.order_line").await;
    assert_eq!(facts, lines, "the incremental load missed lines");
    // and the full reload of the same data
    p.execute(
        "TRUNCATE storefront_dw.fact_order_line, storefront_dw.dim_customer, storefront_dw.dim_product,
                  storefront_dw.dim_location, storefront_dw.dim_date;
         UPDATE storefront_dw.load_state SET watermark = NULL, system_id = NULL;",
    )
    .await
    .unwrap();
    let reload = timed(&p, "SELECT * FROM storefront.load_warehouse()").await;
    (full, incremental, reload)
    };

    // --------------------------------------------------------- report
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&pool).await.unwrap();
    let _ = writeln!(md, "Run: {}, {cpus} CPUs, PostgreSQL {version}.\n", chrono::Utc::now().format("%Y-%m-%d"));
    let _ = writeln!(md, "### SCD2 on a {n}-key dimension, full source (changed keys: median of {ROUNDS} rounds)\n");
    let _ = writeln!(md, "| case | scd2_upsert (s) | dbt-style SQL (s) | dbt snapshot (s) | SQL ÷ scd2_upsert | dbt ÷ scd2_upsert |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for (case, e, s, d) in &rows_full {
        let dd = d.map(|d| format!("{d:.2}")).unwrap_or_else(|| "—".into());
        let dr = d.map(|d| format!("{:.1}×", d / e)).unwrap_or_else(|| "—".into());
        let _ = writeln!(md, "| {case} | {e:.2} | {s:.2} | {dd} | {:.2}× | {dr} |", s / e);
    }
    let _ = writeln!(md, "\n### Delta sources: the time follows the batch\n");
    let _ = writeln!(md, "| changed keys in the batch | scd2_upsert, {small}-key dimension (s) | scd2_upsert, {n}-key dimension (s) | dbt snapshot, {n}-key dimension (s) |");
    let _ = writeln!(md, "|---:|---:|---:|---:|");
    for (b, l, g, d) in &rows_delta {
        let dd = d.map(|d| format!("{d:.2}")).unwrap_or_else(|| "—".into());
        let _ = writeln!(md, "| {b} | {l:.3} | {g:.3} | {dd} |");
    }
    let _ = writeln!(md, "\n### load_warehouse() on scale-1 demo data\n");
    let _ = writeln!(md, "| load | wall time (s) |");
    let _ = writeln!(md, "|---|---:|");
    let _ = writeln!(md, "| first full load (empty warehouse) | {full:.1} |");
    let _ = writeln!(md, "| after a day of new orders (1,100 orders, 93% paid) | {incremental:.2} |");
    let _ = writeln!(md, "| full reload of the same data | {reload:.1} |");
    let _ = writeln!(md, "\nIncremental vs full reload: {:.0}× faster.", reload / incremental);
    print!("{md}");
    if let Some(out) = &args.out {
        let out = Path::new(out);
        std::fs::write(out.join("warehouse-results.md"), &md).expect("write results");
        let groups: Vec<String> = rows_full.iter().map(|r| r.0.clone()).collect();
        let values: Vec<Vec<f64>> = rows_full.iter().map(|r| vec![r.1, r.2, r.3.unwrap_or(0.0)]).collect();
        std::fs::write(
            out.join("warehouse-scd2.svg"),
            bar_chart(&format!("SCD2 merge, {n}-key dimension (lower is better)"), &groups, &["scd2_upsert", "dbt-style SQL", "dbt snapshot"], &values, "seconds"),
        )
        .unwrap();
        let groups: Vec<String> = rows_delta.iter().map(|r| format!("{} keys", r.0)).collect();
        let values: Vec<Vec<f64>> = rows_delta.iter().map(|r| vec![r.1 * 1000.0, r.2 * 1000.0]).collect();
        std::fs::write(
            out.join("warehouse-delta.svg"),
            bar_chart("scd2_upsert with a delta source", &groups, &[&format!("{small}-key dimension"), &format!("{n}-key dimension")], &values, "milliseconds"),
        )
        .unwrap();
    }
}
