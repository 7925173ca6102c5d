//! Load driver: orders per second and latency percentiles for place_order
//! against its baselines, in one run on one cluster, plus the contention
//! scenario for hot-stock mode. Shows progress every second; writes a
//! markdown report and SVG charts.
//!
//!   cargo run --release -p storefront-benches --bin load -- \
//!       --url postgres://postgres:storefront@127.0.0.1:28815 --seconds 10 --out book/src/benchmarks
//!
//! Flags: --url, --seconds N, --clients 1,8,32, --events notify,relay
//! (the event delivery modes to run, see sql/relay.sql), --out DIR.
//!
//! Scenarios:
//! 1. random 1-3 line orders over 2,000 SKUs (no contention to speak of) at
//!    1, 8 and 32 clients, for the extension, the PL/pgSQL baseline and the
//!    client-side transaction; pgbench's tpcb-like script on the same
//!    cluster at the same client counts as the floor; once per event
//!    delivery mode: NOTIFY in each ordering transaction, then through the
//!    relay (every implementation queues the event; the relay worker runs);
//! 2. 32 clients buying one unit each: of 32 different SKUs (uncontended),
//!    all of one normal SKU, all of one hot-stock SKU (32 slots), in the
//!    last delivery mode.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fmt::Write as _;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storefront_benches::*;

struct Args {
    url: String,
    seconds: u64,
    clients: Vec<usize>,
    events: Vec<Events>,
    out: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: std::env::var("STOREFRONT_BENCH_URL").unwrap_or_else(|_| "postgres://postgres:storefront@127.0.0.1:28815".into()),
        seconds: 10,
        clients: vec![1, 8, 32],
        events: vec![Events::Notify, Events::Relay],
        out: None,
    };
    let usage = "the header of benches/src/bin/load.rs";
    for (flag, val) in flag_pairs(usage) {
        match flag.as_str() {
            "--url" => a.url = val,
            "--seconds" => a.seconds = val.parse().expect("--seconds N"),
            "--clients" => a.clients = val.split(',').map(|c| c.parse().expect("--clients 1,8,32")).collect(),
            "--events" => {
                a.events = val
                    .split(',')
                    .map(|e| match e {
                        "notify" => Events::Notify,
                        "relay" => Events::Relay,
                        other => panic!("--events takes notify and/or relay, not {other}"),
                    })
                    .collect()
            }
            "--out" => a.out = Some(val),
            other => panic!("unknown argument {other}; see {usage}"),
        }
    }
    a
}

#[derive(Debug, Clone)]
struct Result_ {
    label: String,
    clients: usize,
    events: Events,
    errors: u64,
    per_sec: f64,
    /// share of the machine's CPU time left idle while measuring
    idle_pct: f64,
    p50_us: u64,
    p99_us: u64,
}

/// Run `clients` tasks for `seconds` (after a 2 s warm-up), each calling
/// `op` in a loop on its own connection.
async fn run<F, Fut>(label: &str, events: Events, base: &str, db: &str, clients: usize, seconds: u64, op: F) -> Result_
where
    F: Fn(usize, u64, sqlx::pool::PoolConnection<sqlx::Postgres>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = (Result<(), sqlx::Error>, sqlx::pool::PoolConnection<sqlx::Postgres>)> + Send,
{
    let pool = pool(base, db, clients as u32).await;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let lat: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let pool = pool.clone();
        let (measuring, stop, count, errors, lat, op) =
            (measuring.clone(), stop.clone(), count.clone(), errors.clone(), lat.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await.expect("connection");
            let mut mine = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (r, back) = op(c, i, conn).await;
                conn = back;
                i += 1;
                if measuring.load(Ordering::Relaxed) {
                    match r {
                        Ok(()) => {
                            mine.push(t.elapsed().as_micros() as u64);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            lat.lock().expect("latencies").extend(mine);
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let cpu = cpu_times();
    let start = Instant::now();
    for s in 1..=seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n = count.load(Ordering::Relaxed);
        eprint!("\r  {label:<34} clients {clients:>2}: {s:>3}/{seconds} s  {:>8.0} /s   ", n as f64 / start.elapsed().as_secs_f64());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let idle_pct = idle_since(cpu);
    measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }
    pool.close().await;
    let mut l = lat.lock().expect("latencies").clone();
    l.sort_unstable();
    let r = Result_ {
        label: label.to_string(),
        clients,
        events,
        errors: errors.load(Ordering::Relaxed),
        per_sec: l.len() as f64 / elapsed,
        idle_pct,
        p50_us: percentile(&l, 0.50),
        p99_us: percentile(&l, 0.99),
    };
    eprintln!("\r  {label:<34} clients {clients:>2}: {:>8.0} /s  p50 {:>6} µs  p99 {:>6} µs  errors {}", r.per_sec, r.p50_us, r.p99_us, r.errors);
    r
}

/// (idle, total) CPU time of the whole machine so far, from /proc/stat
/// (idle includes I/O wait); zeros where there is no /proc.
fn cpu_times() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (idle, fields.iter().sum())
}

/// Percentage of CPU time idle since `before` (NaN without /proc).
fn idle_since(before: (u64, u64)) -> f64 {
    let now = cpu_times();
    let total = now.1.saturating_sub(before.1);
    if total == 0 {
        return f64::NAN;
    }
    100.0 * now.0.saturating_sub(before.0) as f64 / total as f64
}

/// pgbench's built-in tpcb-like script: the floor.
fn pgbench(base: &str, events: Events, clients: usize, seconds: u64) -> Result_ {
    let (user, password, host, port) = split_url(base);
    let env = |c: &mut Command| {
        c.env("PGPASSWORD", &password).args(["-h", &host, "-p", &port, "-U", &user]);
    };
    let dir = std::env::temp_dir().join(format!("sf-pgbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("pgbench log dir");
    let mut cmd = Command::new("pgbench");
    env(&mut cmd);
    cmd.current_dir(&dir).args([
        "-n",
        "-b",
        "tpcb-like",
        "-c",
        &clients.to_string(),
        "-j",
        &clients.min(4).to_string(),
        "-T",
        &seconds.to_string(),
        "-l",
        "sf_pgbench",
    ]);
    eprint!("  {:<34} clients {clients:>2}: running {seconds} s", "pgbench tpcb-like (floor)");
    let cpu = cpu_times();
    let out = cmd.output().expect("pgbench on PATH (postgresql-client-15)");
    let idle_pct = idle_since(cpu);
    assert!(out.status.success(), "pgbench failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let tps: f64 = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .expect("pgbench tps");
    let mut lat: Vec<u64> = Vec::new();
    for f in std::fs::read_dir(&dir).expect("pgbench logs").flatten() {
        let body = std::fs::read_to_string(f.path()).unwrap_or_default();
        lat.extend(body.lines().filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()));
    }
    let _ = std::fs::remove_dir_all(&dir);
    lat.sort_unstable();
    let r = Result_ {
        label: "pgbench tpcb-like (floor)".into(),
        clients,
        events,
        errors: 0,
        per_sec: tps,
        idle_pct,
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
    };
    eprintln!("\r  {:<34} clients {clients:>2}: {:>8.0} /s  p50 {:>6} µs  p99 {:>6} µs", r.label, r.per_sec, r.p50_us, r.p99_us);
    r
}

/// Make `events` the delivery mode of `db` for new connections, with the
/// relay worker running exactly when the mode is relay.
async fn set_events(base: &str, db: &str, events: Events) {
    let admin = pool(base, "postgres", 1).await;
    sqlx::Executor::execute(
        &admin,
        format!("ALTER DATABASE {db} SET storefront.event_delivery = '{}'", events.setting()).as_str(),
    )
    .await
    .expect("ALTER DATABASE ... SET storefront.event_delivery");
    admin.close().await;
    let p = pool(base, db, 1).await;
    let sql = match events {
        Events::Notify => "SELECT storefront.stop_event_relay()::text",
        Events::Relay => "SELECT storefront.start_event_relay()::text",
    };
    let r: String = sqlx::query_scalar(sql).fetch_one(&p).await.expect("start or stop the relay");
    eprintln!("storefront.event_delivery = {} ({sql}: {r})", events.setting());
    p.close().await;
}

async fn checkpoint(base: &str) {
    let admin = pool(base, "postgres", 1).await;
    sqlx::Executor::execute(&admin, "CHECKPOINT").await.expect("CHECKPOINT");
    admin.close().await;
}

fn keep_best<'a>(best: &mut Vec<(&'a str, Result_)>, key: &'a str, r: Result_) {
    match best.iter_mut().find(|(k, b)| *k == key && b.events == r.events) {
        Some((_, b)) if b.per_sec >= r.per_sec => {}
        Some((_, b)) => *b = r,
        None => best.push((key, r)),
    }
}

fn split_url(base: &str) -> (String, String, String, String) {
    let rest = base.trim_start_matches("postgres://").trim_start_matches("postgresql://");
    let (auth, hostport) = rest.split_once('@').unwrap_or(("postgres", rest));
    let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    (user.into(), password.into(), host.into(), port.into())
}

fn pgbench_init(base: &str) {
    let (user, password, host, port) = split_url(base);
    let admin = |sql: &str| {
        let st = Command::new("psql")
            .env("PGPASSWORD", &password)
            .args(["-X", "-q", "-h", &host, "-p", &port, "-U", &user, "-d", "postgres", "-c", sql])
            .status()
            .expect("psql");
        assert!(st.success(), "{sql}");
    };
    admin("DROP DATABASE IF EXISTS sf_pgbench WITH (FORCE)");
    admin("CREATE DATABASE sf_pgbench");
    let st = Command::new("pgbench")
        .env("PGPASSWORD", &password)
        .args(["-i", "-q", "-s", "10", "-h", &host, "-p", &port, "-U", &user, "sf_pgbench"])
        .output()
        .expect("pgbench -i");
    assert!(st.status.success(), "pgbench -i failed");
}

fn order_op(imp: Impl, events: Events) -> impl Fn(usize, u64, sqlx::pool::PoolConnection<sqlx::Postgres>) -> std::pin::Pin<Box<dyn std::future::Future<Output = (Result<(), sqlx::Error>, sqlx::pool::PoolConnection<sqlx::Postgres>)> + Send>> + Send + Sync + Clone + 'static {
    move |client, i, mut conn| {
        Box::pin(async move {
            let mut rng = SmallRng::seed_from_u64((client as u64) << 32 | i);
            let lines = rng.gen_range(1..=3);
            let items = random_items(&mut rng, lines);
            let customer = rng.gen_range(1..=CUSTOMERS);
            let r = place(imp, events, &mut conn, customer, &items).await.map(|_| ());
            (r, conn)
        })
    }
}

fn contention_op(sku_of: fn(usize) -> String, events: Events) -> impl Fn(usize, u64, sqlx::pool::PoolConnection<sqlx::Postgres>) -> std::pin::Pin<Box<dyn std::future::Future<Output = (Result<(), sqlx::Error>, sqlx::pool::PoolConnection<sqlx::Postgres>)> + Send>> + Send + Sync + Clone + 'static {
    move |client, _i, mut conn| {
        Box::pin(async move {
            let items = items_for(&sku_of(client));
            let customer = client as i64 % CUSTOMERS + 1;
            let r = place(Impl::Extension, events, &mut conn, customer, &items).await.map(|_| ());
            (r, conn)
        })
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = parse_args();
    let db = "sf_bench";
    eprintln!("storefront load driver: {} s per scenario (+2 s warm-up), clients {:?}", args.seconds, args.clients);
    eprintln!("setting up {db} ({SKUS} SKUs, {CUSTOMERS} customers) and sf_pgbench (scale 10) ...");
    setup(&args.url, db).await;
    pgbench_init(&args.url);
    // warm the server (shared buffers, plan caches) before measuring
    let first = args.events.first().copied().unwrap_or(Events::Notify);
    set_events(&args.url, db, first).await;
    run("warm-up", first, &args.url, db, 4, 5, order_op(Impl::Extension, first)).await;

    let mut throughput = Vec::new();
    for &events in &args.events {
        set_events(&args.url, db, events).await;
        eprintln!("\n1. random 1-3 line orders, storefront.event_delivery = {}", events.setting());
        // Two passes per client count, the order of implementations rotating,
        // a CHECKPOINT before each run; the better pass of each counts. The
        // machine is a shared 2-core VM: this keeps a passing checkpoint or
        // autovacuum from deciding a comparison.
        for (round, &c) in args.clients.iter().enumerate() {
            let mut best: Vec<(&str, Result_)> = Vec::new();
            for pass in 0..2 {
                for k in 0..Impl::ALL.len() {
                    let imp = Impl::ALL[(k + round + pass) % Impl::ALL.len()];
                    checkpoint(&args.url).await;
                    let r = run(imp.name(), events, &args.url, db, c, args.seconds, order_op(imp, events)).await;
                    keep_best(&mut best, imp.short(), r);
                }
                checkpoint(&args.url).await;
                keep_best(&mut best, "pgbench", pgbench(&args.url, events, c, args.seconds));
            }
            throughput.extend(best);
        }
    }
    let last = args.events.last().copied().unwrap_or(Events::Notify);

    eprintln!("\n2. contention: 32 clients, one unit per order, storefront.event_delivery = {}", last.setting());
    let mut contention = Vec::new();
    let cases: [(&str, fn(usize) -> String); 3] = [
        ("32 different SKUs (uncontended)", |c| format!("B-{}", c + 1)),
        ("one SKU, normal mode", |_| "FLASH-NORMAL".to_string()),
        ("one SKU, hot-stock mode (32 slots)", |_| "FLASH-HOT".to_string()),
    ];
    for (label, f) in cases {
        checkpoint(&args.url).await;
        contention.push(run(label, last, &args.url, db, 32, args.seconds, contention_op(f, last)).await);
    }
    set_events(&args.url, db, Events::Notify).await;

    // leave nothing behind for autovacuum to chew on during later benchmarks
    let admin = pool(&args.url, "postgres", 1).await;
    for d in [db, "sf_pgbench"] {
        sqlx::Executor::execute(&admin, format!("DROP DATABASE IF EXISTS {d} WITH (FORCE)").as_str())
            .await
            .expect("drop benchmark database");
    }
    let report = report(&args, &throughput, &contention);
    println!("{report}");
    if let Some(dir) = &args.out {
        std::fs::write(format!("{dir}/orders-results.md"), &report).expect("write report");
        std::fs::write(format!("{dir}/orders-throughput.svg"), throughput_svg(&args, &throughput)).expect("write chart");
        std::fs::write(format!("{dir}/orders-contention.svg"), contention_svg(&contention)).expect("write chart");
        eprintln!("wrote {dir}/orders-results.md, orders-throughput.svg, orders-contention.svg");
    }
}

fn find<'a>(t: &'a [(&str, Result_)], key: &str, c: usize, events: Events) -> Option<&'a Result_> {
    t.iter().find(|(k, r)| *k == key && r.clients == c && r.events == events).map(|(_, r)| r)
}

/// The cells every results row starts with: label, orders/s, p50, p99 (ms), errors.
fn cells(r: &Result_) -> String {
    format!(
        "{} | {:.0} | {:.2} | {:.2} | {}",
        r.label,
        r.per_sec,
        r.p50_us as f64 / 1000.0,
        r.p99_us as f64 / 1000.0,
        r.errors
    )
}

fn events_title(events: Events) -> &'static str {
    match events {
        Events::Notify => "Events by NOTIFY in each ordering transaction (`storefront.event_delivery = notify`, the default)",
        Events::Relay => "Events through the relay (`storefront.event_delivery = relay`; every implementation queues the event, the relay worker sends it every 10 ms)",
    }
}

fn report(args: &Args, throughput: &[(&str, Result_)], contention: &[Result_]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "<!-- generated by the load driver (benches/src/bin/load.rs); do not edit -->");
    let _ = writeln!(
        s,
        "Run: {} s per scenario after a 2 s warm-up, a CHECKPOINT before each; two passes per client count \
         (implementations in rotating order), the better pass shown; orders of 1–3 random lines over {SKUS} SKUs. \
         Idle CPU: the share of the machine's CPU time (all cores, /proc/stat) left idle during the measured seconds.",
        args.seconds
    );
    for &events in &args.events {
        let _ = writeln!(s, "\n**{}**\n", events_title(events));
        let _ = writeln!(s, "| clients | implementation | orders/s | p50 (ms) | p99 (ms) | errors | idle CPU | vs client-side | vs PL/pgSQL | vs pgbench tpcb-like |");
        let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for &c in &args.clients {
            let client = find(throughput, "client", c, events).map(|r| r.per_sec).unwrap_or(f64::NAN);
            let plpgsql = find(throughput, "plpgsql", c, events).map(|r| r.per_sec).unwrap_or(f64::NAN);
            let floor = find(throughput, "pgbench", c, events).map(|r| r.per_sec).unwrap_or(f64::NAN);
            for key in ["extension", "plpgsql", "client", "pgbench"] {
                if let Some(r) = find(throughput, key, c, events) {
                    let _ = writeln!(
                        s,
                        "| {c} | {} | {:.0}% | {:.2}× | {:.2}× | {:.2}× |",
                        cells(r),
                        r.idle_pct,
                        r.per_sec / client,
                        r.per_sec / plpgsql,
                        r.per_sec / floor
                    );
                }
            }
        }
    }
    let base = contention.first().map(|r| r.per_sec).unwrap_or(f64::NAN);
    let mode = contention.first().map(|r| r.events.setting()).unwrap_or("notify");
    let _ = writeln!(s, "\n**Contention** (`storefront.event_delivery = {mode}`)\n");
    let _ = writeln!(s, "| 32 clients, one unit each | orders/s | p50 (ms) | p99 (ms) | errors | vs uncontended |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for r in contention {
        let _ = writeln!(s, "| {} | {:.0}% |", cells(r), 100.0 * r.per_sec / base);
    }
    s
}

fn throughput_svg(args: &Args, t: &[(&str, Result_)]) -> String {
    let keys = ["extension", "plpgsql", "client", "pgbench"];
    let mut groups = Vec::new();
    let mut values = Vec::new();
    for &events in &args.events {
        for &c in &args.clients {
            groups.push(format!("{c} client{}, {}", if c == 1 { "" } else { "s" }, events.setting()));
            values.push(keys.iter().map(|k| find(t, k, c, events).map(|r| r.per_sec).unwrap_or(0.0)).collect());
        }
    }
    bar_chart(
        "place_order throughput (1-3 line orders), by event delivery",
        &groups,
        &["storefront (Rust)", "PL/pgSQL", "client-side txn", "pgbench tpcb-like"],
        &values,
        "orders (transactions) per second",
    )
}

fn contention_svg(c: &[Result_]) -> String {
    let groups: Vec<String> = vec!["32 clients".into()];
    let values = vec![c.iter().map(|r| r.per_sec).collect::<Vec<_>>()];
    let names: Vec<&str> = vec!["32 SKUs (uncontended)", "1 SKU, normal", "1 SKU, hot-stock"];
    bar_chart("Flash sale: 32 clients buying one unit each", &groups, &names, &values, "orders per second")
}
