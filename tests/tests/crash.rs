//! Crash safety: a randomized order load from many clients (place, pay,
//! cancel, expire, restock) while the server is killed with SIGKILL, three
//! times. After each restart (crash recovery), the store holds exactly the
//! transactions PostgreSQL says committed, and every invariant holds.
//!
//! The bookkeeping is exact. Every operation runs in its own transaction
//! that first asks for its transaction id (`pg_current_xact_id()`), and
//! every order carries an idempotency key the client chose. Each client
//! records, per operation, the transaction id and how far it got:
//!
//! - COMMIT acknowledged: the transaction must be committed and its effect
//!   present (the order with that key, the payment with that provider
//!   reference, the cancelled status);
//! - never sent COMMIT (an error, or the connection died before): it must
//!   be aborted and its effect absent;
//! - COMMIT sent but no answer (the crash came in between): it may have
//!   gone either way, so `pg_xact_status()` after recovery decides, and the
//!   effect must be present exactly when it says committed.
//!
//! Every order in the database must carry a key some client sent in a
//! transaction that committed; nothing else may exist.
//!
//! The kills: the postmaster alone (its backends notice and exit), and once
//! the postmaster together with every one of its processes at the same
//! moment, which is what a power cut does to the server's processes (the
//! operating system's page cache survives either kill, so this shows crash
//! recovery, not the disk's write cache; fsync and synchronous_commit are
//! on all the same).
//!
//! This runs on a private cluster (port 28819) made with the system's
//! PostgreSQL 15 binaries and the installed extension, never on the shared
//! test cluster.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, Executor, PgPool};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use storefront_tests::*;

const PORT: u16 = 28819;
const PGBIN: &str = "/usr/lib/postgresql/15/bin";
const DB: &str = "crash";
const CLIENTS: usize = 16;
const NORMAL_SKUS: usize = 30;
const HOT_SKUS: usize = 2;

/// The private cluster: its data directory, started and killed by the test.
#[derive(Clone)]
struct Cluster {
    dir: PathBuf,
}

/// Stops the cluster however the test ends.
struct StopOnDrop(Cluster);

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new("sudo")
            .arg("-u")
            .arg("postgres")
            .arg(Path::new(PGBIN).join(tool))
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {tool}: {e}"))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("{tool} {args:?} failed:\n{text}"))
        }
    }

    /// A new cluster: fsync and synchronous_commit on, as in production.
    fn init(dir: PathBuf) -> Cluster {
        let cluster = Cluster { dir };
        let _ = cluster.as_postgres("pg_ctl", &["-D", cluster.data().to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&cluster.dir);
        std::fs::create_dir_all(&cluster.dir).expect("cluster directory");
        let chown = Command::new("chown").args(["postgres:postgres", cluster.dir.to_str().unwrap()]).status().unwrap();
        assert!(chown.success(), "chown the cluster directory to postgres");
        cluster
            .as_postgres(
                "initdb",
                &["-D", cluster.data().to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
            )
            .unwrap();
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {PORT}\nunix_socket_directories = '{}'\n\
             max_connections = 60\nshared_buffers = 128MB\n\
             fsync = on\nsynchronous_commit = on\nfull_page_writes = on\n\
             log_min_messages = warning\nrestart_after_crash = off\n",
            cluster.dir.display()
        );
        let path = cluster.data().join("postgresql.conf");
        let mut all = std::fs::read_to_string(&path).unwrap();
        all.push_str(&conf);
        std::fs::write(&path, all).unwrap();
        cluster
    }

    fn start(&self) {
        let log = self.dir.join("server.log");
        if let Err(e) =
            self.as_postgres("pg_ctl", &["-D", self.data().to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "120", "start"])
        {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(30).collect();
            panic!("{e}\nserver.log (last lines, newest first):\n{}", tail.join("\n"));
        }
    }

    fn postmaster_pid(&self) -> i32 {
        let pidfile = std::fs::read_to_string(self.data().join("postmaster.pid")).expect("postmaster.pid");
        pidfile.lines().next().and_then(|l| l.trim().parse().ok()).expect("a pid in postmaster.pid")
    }

    /// SIGKILL the postmaster, and with `everything` also each of its
    /// processes at once; then wait until every one of them is gone.
    fn kill(&self, everything: bool) -> usize {
        let postmaster = self.postmaster_pid();
        let children = children_of(postmaster);
        assert!(!children.is_empty(), "the postmaster {postmaster} has no processes");
        let mut victims = vec![postmaster];
        if everything {
            victims.extend(&children);
        }
        for pid in &victims {
            let status = Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
            assert!(status.success() || !alive(*pid), "kill -9 {pid}");
        }
        // backends of a killed postmaster exit when they notice it is gone;
        // then wait for the exited processes to be reaped (by init here),
        // as a new postmaster takes an unreaped one for a running server
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut all = children;
        all.push(postmaster);
        while all.iter().any(|p| alive(*p)) {
            assert!(Instant::now() < deadline, "processes of the killed server still run: {all:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let reaped = Instant::now() + Duration::from_secs(30);
        while all.iter().any(|p| stat_of(*p).is_some()) && Instant::now() < reaped {
            std::thread::sleep(Duration::from_millis(100));
        }
        if stat_of(postmaster).is_some() {
            // still a zombie: its lock file is stale, as after a reboot
            std::fs::remove_file(self.data().join("postmaster.pid")).expect("remove the stale postmaster.pid");
        }
        victims.len()
    }

    fn stop(&self) {
        let _ = self.as_postgres("pg_ctl", &["-D", self.data().to_str().unwrap(), "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let data = self.0.data();
        if data.join("postmaster.pid").exists() {
            let _ = self.0.as_postgres("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        }
    }
}

/// Process ids whose parent is `parent` (from /proc).
fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if let Some((ppid, _)) = stat_of(pid) {
            if ppid == parent {
                out.push(pid);
            }
        }
    }
    out
}

/// (parent pid, state) of a process, from /proc/<pid>/stat.
fn stat_of(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces; split after the last ')'
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Running (a zombie has exited; only its exit status is left).
fn alive(pid: i32) -> bool {
    matches!(stat_of(pid), Some((_, state)) if state != 'Z' && state != 'X')
}

fn cluster_dir() -> PathBuf {
    private_cluster_dir("crash")
}

fn url(db: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{PORT}/{db}")
}

async fn pool(db: &str, max: u32) -> PgPool {
    let opts = PgConnectOptions::from_str(&url(db)).unwrap();
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(opts)
        .await
        .unwrap_or_else(|e| panic!("connect to the crash cluster ({db}): {e}"))
}

/// What an operation does, with what identifies its effect.
#[derive(Debug, Clone)]
enum Op {
    Place { customer: i64, key: String },
    Pay { order: i64, provider_ref: String, succeeded: bool },
    Cancel { order: i64 },
    Expire,
    Restock,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Place { .. } => "place",
            Op::Pay { succeeded: true, .. } => "pay ok",
            Op::Pay { succeeded: false, .. } => "pay fail",
            Op::Cancel { .. } => "cancel",
            Op::Expire => "expire",
            Op::Restock => "restock",
        }
    }
}

/// How far an operation's transaction got, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// COMMIT was acknowledged.
    Acked,
    /// COMMIT was never sent (an error or a lost connection before it).
    NotCommitted,
    /// COMMIT was sent and the connection died before the answer.
    InDoubt,
}

#[derive(Debug, Clone)]
struct Record {
    round: usize,
    op: Op,
    xid: String,
    fate: Fate,
    /// What PostgreSQL says of the transaction after the recovery that
    /// followed its round: committed, aborted, or never logged (its id is
    /// past the last one recovery found, so it wrote nothing to the WAL
    /// and the id will be handed out again).
    status: Option<String>,
    /// The operation changed nothing (an expiry that found no order to
    /// expire). Its transaction then writes no WAL but its commit record,
    /// and PostgreSQL does not wait for that record to reach the disk
    /// before acknowledging the COMMIT (there is nothing to lose): after a
    /// crash it may be unknown to recovery although its client saw the
    /// COMMIT acknowledged.
    changed_nothing: bool,
}

/// The failures each operation may end with (as in tests/tests/concurrency.rs),
/// plus what the crash itself causes: anything else is a bug.
fn expected_failure(op: &str, e: &PgErr) -> bool {
    let out_of_stock = e.code == "23514" && e.message.starts_with("insufficient stock for");
    // lock_timeout; our backend terminated, or the server crashed, or is
    // shutting down or starting up
    let common = matches!(e.code.as_str(), "55P03" | "57P01" | "57P02" | "57P03");
    common
        || match op {
            "place" => out_of_stock,
            "pay ok" => out_of_stock || e.code == "55000" || e.code == "22023",
            "pay fail" => e.code == "55000" || e.code == "22023",
            "cancel" => e.code == "55000",
            _ => false,
        }
}

fn is_disconnect(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::PoolClosed | sqlx::Error::PoolTimedOut)
        || (e.as_database_error().is_none() && e.to_string().contains("connection"))
}

fn random_items(rng: &mut SmallRng) -> serde_json::Value {
    let lines = rng.gen_range(1..=3);
    let items: Vec<serde_json::Value> = (0..lines)
        .map(|_| {
            let sku = if rng.gen_bool(0.2) {
                format!("H-{}", rng.gen_range(1..=HOT_SKUS))
            } else {
                format!("N-{}", rng.gen_range(1..=NORMAL_SKUS))
            };
            json!({"sku": sku, "qty": rng.gen_range(1..=3)})
        })
        .collect();
    serde_json::Value::Array(items)
}

/// One client's transaction: `pg_current_xact_id()`, the operation, COMMIT.
/// Returns the record (when a transaction id was obtained) and the order id
/// a placed order got, or an unexpected error.
async fn run_op(
    conn: &mut PgConnection,
    round: usize,
    op: Op,
    items: &serde_json::Value,
    hold: &str,
    rng: &mut SmallRng,
) -> (Option<Record>, Option<(i64, i64)>, Option<String>, bool) {
    // (record, placed (order, total), unexpected error, connection lost)
    let name = op.name();
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) if is_disconnect(&e) => return (None, None, None, true),
        Err(e) => {
            return match pg_err(&e) {
                Some(pe) if expected_failure(name, &pe) => (None, None, None, true),
                _ => (None, None, Some(format!("{name}: BEGIN: {e}")), true),
            }
        }
    };
    let xid: String = match sqlx::query_scalar("SELECT pg_current_xact_id()::text").fetch_one(&mut *tx).await {
        Ok(x) => x,
        Err(e) if is_disconnect(&e) => return (None, None, None, true),
        Err(e) => {
            return match pg_err(&e) {
                Some(pe) if expected_failure(name, &pe) => (None, None, None, true),
                _ => (None, None, Some(format!("{name}: pg_current_xact_id(): {e}")), true),
            }
        }
    };
    let mut record = Record { round, op: op.clone(), xid, fate: Fate::NotCommitted, status: None, changed_nothing: false };
    let mut placed = None;
    let result: Result<(), sqlx::Error> = match &op {
        Op::Place { customer, key } => sqlx::query_as::<_, (i64, i64)>(
            "SELECT order_id, total_cents FROM storefront.place_order($1, $2, $3, $4::interval)",
        )
        .bind(customer)
        .bind(items)
        .bind(key)
        .bind(hold)
        .fetch_one(&mut *tx)
        .await
        .map(|r| placed = Some(r)),
        Op::Pay { order, provider_ref, succeeded, .. } => {
            // now and then a wrong amount (22023), as in the stress test
            let total: Result<i64, _> = sqlx::query_scalar("SELECT total_cents FROM storefront.orders WHERE order_id = $1")
                .bind(order)
                .fetch_one(&mut *tx)
                .await;
            match total {
                Ok(total) => {
                    let amount = if rng.gen_bool(0.02) { total + 1 } else { total };
                    sqlx::query("SELECT storefront.record_payment($1, $2, $3, $4)")
                        .bind(order)
                        .bind(amount)
                        .bind(succeeded)
                        .bind(provider_ref)
                        .execute(&mut *tx)
                        .await
                        .map(|_| ())
                }
                Err(e) => Err(e),
            }
        }
        Op::Cancel { order } => {
            sqlx::query("SELECT storefront.cancel_order($1, 'crash test')").bind(order).execute(&mut *tx).await.map(|_| ())
        }
        Op::Expire => sqlx::query_scalar::<_, i32>("SELECT storefront.expire_reservations(now(), 50)")
            .fetch_one(&mut *tx)
            .await
            .map(|expired| record.changed_nothing = expired == 0),
        Op::Restock => {
            let sku = if rng.gen_bool(0.3) {
                format!("H-{}", rng.gen_range(1..=HOT_SKUS))
            } else {
                format!("N-{}", rng.gen_range(1..=NORMAL_SKUS))
            };
            sqlx::query("SELECT storefront.restock($1, $2)")
                .bind(sku)
                .bind(rng.gen_range(5..40))
                .execute(&mut *tx)
                .await
                .map(|_| ())
        }
    };
    if let Err(e) = result {
        // COMMIT is never sent: the transaction cannot have committed
        let lost = is_disconnect(&e);
        let unexpected = match pg_err(&e) {
            Some(pe) if expected_failure(name, &pe) => None,
            None if lost => None,
            _ => Some(format!("{name}: {e}")),
        };
        let lost = lost || tx.rollback().await.is_err();
        return (Some(record), None, unexpected, lost);
    }
    match tx.commit().await {
        Ok(()) => {
            record.fate = Fate::Acked;
            (Some(record), placed, None, false)
        }
        Err(e) => {
            // COMMIT went out; the answer did not come back (or the server
            // refused it while going down): recovery decides
            record.fate = Fate::InDoubt;
            let unexpected = match pg_err(&e) {
                Some(pe) if expected_failure(name, &pe) => None,
                None if is_disconnect(&e) => None,
                _ => Some(format!("{name}: COMMIT: {e}")),
            };
            (Some(record), None, unexpected, true)
        }
    }
}

/// One client for one round: random operations on its own connection
/// until the connection is lost (the crash) or `stop` is set.
async fn client(
    c: usize,
    round: usize,
    stop: Arc<AtomicBool>,
    mine: Vec<(i64, i64)>,
) -> (Vec<Record>, Vec<(i64, i64)>, Vec<String>, BTreeMap<String, usize>) {
    let customer = c as i64 + 1;
    let mut rng = SmallRng::seed_from_u64((round * 1000 + c) as u64);
    let mut mine = mine;
    let mut records = Vec::new();
    let mut unexpected = Vec::new();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let opts = PgConnectOptions::from_str(&url(DB)).unwrap().application_name("sf-crash");
    let Ok(mut conn) = PgConnection::connect_with(&opts).await else {
        unexpected.push(format!("client {c} could not connect at the start of round {round}"));
        return (records, mine, unexpected, tally);
    };
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let roll = rng.gen_range(0..100);
        let op = if roll < 40 || mine.is_empty() {
            Op::Place { customer, key: format!("r{round}-c{c}-{i}") }
        } else if roll < 68 {
            let (order, _) = mine[rng.gen_range(0..mine.len())];
            Op::Pay { order, provider_ref: format!("psp-r{round}-c{c}-{i}"), succeeded: roll < 60 }
        } else if roll < 78 {
            let (order, _) = mine.swap_remove(rng.gen_range(0..mine.len()));
            Op::Cancel { order }
        } else if roll < 92 {
            Op::Expire
        } else {
            Op::Restock
        };
        let items = random_items(&mut rng);
        let hold = if rng.gen_bool(0.2) { "150 milliseconds" } else { "15 minutes" };
        let name = op.name();
        let fut = run_op(&mut conn, round, op, &items, hold, &mut rng);
        let (record, placed, bad, lost) = match tokio::time::timeout(Duration::from_secs(60), fut).await {
            Ok(r) => r,
            Err(_) => {
                unexpected.push(format!("client {c}: {name} took over 60 s"));
                break;
            }
        };
        let outcome = match (&record, &bad, lost) {
            (_, Some(_), _) => "UNEXPECTED",
            (Some(r), None, _) if r.fate == Fate::Acked => "committed",
            (Some(r), None, _) if r.fate == Fate::InDoubt => "in doubt",
            (_, None, true) => "connection lost",
            _ => "rolled back",
        };
        *tally.entry(format!("{name}: {outcome}")).or_insert(0) += 1;
        if let Some(r) = record {
            records.push(r);
        }
        if let Some(p) = placed {
            mine.push(p);
        }
        if let Some(b) = bad {
            unexpected.push(b);
        }
        if lost {
            break;
        }
    }
    (records, mine, unexpected, tally)
}

/// Every record against what recovery says: the fate, the transaction's
/// status after recovery, and the effect, must agree; and nothing exists
/// that no committed transaction made.
async fn verify(db: &PgPool, records: &mut [Record]) {
    // each transaction's status, asked once, right after the recovery that
    // followed its round and before any new transaction can reuse the id
    // of one that never reached the WAL
    let xids: Vec<String> = records.iter().filter(|r| r.status.is_none()).map(|r| r.xid.clone()).collect();
    let statuses: Vec<(String, String)> = sqlx::query_as(
        "SELECT x, CASE WHEN x::xid8 >= pg_snapshot_xmax(pg_current_snapshot()) THEN 'never logged'
                        ELSE pg_xact_status(x::xid8) END
         FROM unnest($1::text[]) x",
    )
    .bind(&xids)
    .fetch_all(db)
    .await
    .expect("pg_xact_status");
    let status: BTreeMap<String, String> = statuses.into_iter().collect();
    for r in records.iter_mut().filter(|r| r.status.is_none()) {
        r.status = Some(status.get(&r.xid).cloned().unwrap_or_else(|| "unknown".into()));
    }

    let orders: Vec<(i64, String)> =
        sqlx::query_as("SELECT customer_id, idempotency_key FROM storefront.orders WHERE idempotency_key IS NOT NULL")
            .fetch_all(db)
            .await
            .unwrap();
    let all_orders: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.orders").fetch_one(db).await.unwrap();
    assert_eq!(all_orders as usize, orders.len(), "an order without the idempotency key its client sent");
    let orders: BTreeMap<String, i64> = orders.into_iter().map(|(c, k)| (k, c)).collect();
    let payments: Vec<(String, bool)> =
        sqlx::query_as("SELECT provider_ref, succeeded FROM storefront.payment").fetch_all(db).await.unwrap();
    let payments: BTreeMap<String, bool> = payments.into_iter().collect();
    let cancelled: Vec<i64> = sqlx::query_scalar("SELECT order_id FROM storefront.orders WHERE status = 'cancelled'")
        .fetch_all(db)
        .await
        .unwrap();

    let mut problems = Vec::new();
    let mut committed_keys = std::collections::BTreeSet::new();
    let mut committed_refs = std::collections::BTreeSet::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in records.iter() {
        let st = r.status.clone().unwrap_or_default();
        *counts.entry(format!("{:?} -> {st}", r.fate)).or_insert(0) += 1;
        let committed = match (r.fate, st.as_str()) {
            (Fate::Acked, "committed") => true,
            // acknowledged without a flush: see Record::changed_nothing
            (Fate::Acked, "aborted" | "never logged") if r.changed_nothing => false,
            (Fate::NotCommitted, "aborted" | "never logged") => false,
            (Fate::InDoubt, "committed") => true,
            (Fate::InDoubt, "aborted" | "never logged") => false,
            (fate, st) => {
                problems.push(format!("round {} {:?}: the client saw {fate:?}, recovery says {st}", r.round, r.op));
                continue;
            }
        };
        let present = match &r.op {
            Op::Place { customer, key } => {
                if committed {
                    committed_keys.insert(key.clone());
                }
                match orders.get(key) {
                    Some(c) if c == customer => Some(true),
                    Some(c) => {
                        problems.push(format!("order {key} belongs to customer {c}, not {customer}"));
                        Some(true)
                    }
                    None => Some(false),
                }
            }
            Op::Pay { provider_ref, succeeded, .. } => {
                if committed {
                    committed_refs.insert(provider_ref.clone());
                }
                match payments.get(provider_ref) {
                    Some(s) if s == succeeded => Some(true),
                    Some(s) => {
                        problems.push(format!("payment {provider_ref} has succeeded = {s}, sent {succeeded}"));
                        Some(true)
                    }
                    None => Some(false),
                }
            }
            // each order is cancelled at most once, by its own client
            Op::Cancel { order } => Some(cancelled.contains(order)),
            Op::Expire | Op::Restock => None,
        };
        if let Some(present) = present {
            if present != committed {
                problems.push(format!(
                    "round {} {:?} ({:?}, {st}): its effect is {}",
                    r.round,
                    r.op,
                    r.fate,
                    if present { "present" } else { "missing" }
                ));
            }
        }
    }
    for key in orders.keys() {
        if !committed_keys.contains(key) {
            problems.push(format!("order {key} exists, but no transaction that sent it committed"));
        }
    }
    for provider_ref in payments.keys() {
        if !committed_refs.contains(provider_ref) {
            problems.push(format!("payment {provider_ref} exists, but no transaction that sent it committed"));
        }
    }
    eprintln!("crash: {} transactions checked: {counts:?}", records.len());
    assert!(problems.is_empty(), "{} disagreements after recovery:\n{}", problems.len(), problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_nine_under_order_load_loses_no_commit_and_keeps_every_invariant() {
    let cluster = Cluster::init(cluster_dir());
    let _stop = StopOnDrop(cluster.clone());
    cluster.start();
    let admin = pool("postgres", 1).await;
    admin.execute(format!("CREATE DATABASE {DB}").as_str()).await.unwrap();
    admin.close().await;
    let setup = pool(DB, 2).await;
    setup
        .execute(
            format!(
                "CREATE EXTENSION storefront CASCADE;
                 SELECT storefront.register_customer('c' || n || '@example.com', 'pw', 'C' || n) FROM generate_series(1, {CLIENTS}) n;
                 SELECT storefront.upsert_product('N-' || n, 'Normal ' || n, 100 + n) FROM generate_series(1, {NORMAL_SKUS}) n;
                 SELECT storefront.restock('N-' || n, 300) FROM generate_series(1, {NORMAL_SKUS}) n;
                 SELECT storefront.upsert_product('H-' || n, 'Hot ' || n, 999) FROM generate_series(1, {HOT_SKUS}) n;
                 SELECT storefront.restock('H-' || n, 400) FROM generate_series(1, {HOT_SKUS}) n;
                 SELECT storefront.set_hot_stock('H-' || n, 4) FROM generate_series(1, {HOT_SKUS}) n;"
            )
            .as_str(),
        )
        .await
        .expect("store set-up on the crash cluster");
    setup.close().await;

    let mut records: Vec<Record> = Vec::new();
    let mut mine: Vec<Vec<(i64, i64)>> = vec![Vec::new(); CLIENTS];
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut rng = SmallRng::seed_from_u64(28819);
    // the postmaster alone, everything at once, the postmaster alone
    for (round, everything) in [false, true, false].into_iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (c, orders) in mine.iter_mut().enumerate() {
            let orders = std::mem::take(orders);
            tasks.push(tokio::spawn(client(c, round, stop.clone(), orders)));
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2500..4000))).await;
        let killed = tokio::task::spawn_blocking({
            let cluster = cluster.clone();
            move || cluster.kill(everything)
        })
        .await
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        let mut unexpected = Vec::new();
        let before = records.len();
        for (c, t) in tasks.into_iter().enumerate() {
            let (recs, orders, bad, counts) = t.await.unwrap();
            records.extend(recs);
            mine[c] = orders;
            unexpected.extend(bad);
            for (k, v) in counts {
                *tally.entry(k).or_insert(0) += v;
            }
        }
        eprintln!(
            "crash round {round}: killed {killed} process(es) ({}), {} transactions",
            if everything { "the postmaster and all its processes" } else { "the postmaster" },
            records.len() - before
        );
        assert!(unexpected.is_empty(), "unexpected errors in round {round}: {unexpected:#?}");
        assert!(records.len() - before > 200, "round {round} ran only {} transactions", records.len() - before);

        // crash recovery, then the exact check over every round so far
        cluster.start();
        let db = pool(DB, 2).await;
        verify(&db, &mut records).await;
        assert_invariants(&db).await;
        db.close().await;
    }
    eprintln!("crash: outcomes by operation: {tally:#?}");
    for op in ["place", "pay ok", "pay fail", "cancel", "expire", "restock"] {
        assert!(tally.get(&format!("{op}: committed")).copied().unwrap_or(0) > 0, "no committed {op}");
    }
    assert!(
        records.iter().any(|r| r.fate != Fate::Acked),
        "no transaction was caught by a crash: the kills came between transactions"
    );

    // after the sweeper drains every hold, still consistent
    let db = pool(DB, 2).await;
    loop {
        let n: i32 = sqlx::query_scalar("SELECT storefront.expire_reservations(now() + interval '1 hour', 10000)")
            .fetch_one(&db)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
    }
    assert_invariants(&db).await;
    db.close().await;
    cluster.stop();
}

