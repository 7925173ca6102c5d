//! The relay launcher: with `storefront` in `shared_preload_libraries`, a
//! relay runs in every database that has the extension and relay mode,
//! from server start on, again after a restart and after a crash restart,
//! and never two in one database; none in a database without relay mode,
//! without the extension, that is a template or that refuses connections.
//! A database configured later gets one; a dropped database is not
//! reconnected to; `stop_event_relay()` stops a relay until the launcher's
//! next round unless relay mode is off; naptime 0 turns the launcher off;
//! and when the database the scheduler runs in is dropped, it moves.
//!
//! This runs on a private cluster (port 28821) made with PostgreSQL's
//! binaries (`STOREFRONT_PGBIN`, default the system's, whose library
//! directory holds the installed extension), never on the shared test
//! cluster: it preloads the library and restarts and crashes the server.

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Executor, PgPool};
use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};
use storefront_tests::*;

const PORT: u16 = 28821;
/// The launcher's naptime in this cluster, seconds (production: 10).
const NAPTIME: u64 = 1;

fn pgbin() -> PathBuf {
    PathBuf::from(std::env::var("STOREFRONT_PGBIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()))
}

struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<String, String> {
        as_postgres("pg_ctl", &[&["-D", self.data().to_str().unwrap_or_default()], args].concat())
    }

    fn init(dir: PathBuf) -> Cluster {
        let cluster = Cluster { dir };
        let _ = cluster.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&cluster.dir);
        std::fs::create_dir_all(&cluster.dir).expect("cluster directory");
        let chown = Command::new("chown").args(["postgres:postgres", cluster.dir.to_str().unwrap()]).status().unwrap();
        assert!(chown.success(), "chown the cluster directory to postgres");
        as_postgres(
            "initdb",
            &["-D", cluster.data().to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
        )
        .unwrap();
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {PORT}\nunix_socket_directories = '{}'\n\
             max_connections = 40\nshared_buffers = 64MB\nmax_worker_processes = 16\n\
             shared_preload_libraries = 'storefront'\nstorefront.relay_launcher_naptime = {NAPTIME}\n\
             log_min_messages = log\n",
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
        if let Err(e) = self.pg_ctl(&["-l", log.to_str().unwrap(), "-w", "-t", "60", "start"]) {
            panic!("{e}\nserver.log:\n{}", self.log());
        }
    }

    fn restart(&self) {
        let log = self.dir.join("server.log");
        if let Err(e) = self.pg_ctl(&["-l", log.to_str().unwrap(), "-m", "fast", "-w", "-t", "60", "restart"]) {
            panic!("{e}\nserver.log:\n{}", self.log());
        }
    }
}

/// Stops the cluster however the test ends.
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if self.0.join("postmaster.pid").exists() {
            let _ = as_postgres("pg_ctl", &["-D", self.0.to_str().unwrap_or_default(), "-m", "immediate", "-w", "stop"]);
        }
    }
}

fn as_postgres(tool: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("sudo")
        .arg("-u")
        .arg("postgres")
        .arg(pgbin().join(tool))
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

fn cluster_dir() -> PathBuf {
    private_cluster_dir("launcher")
}

fn url(db: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{PORT}/{db}")
}

/// A pool on `db`, once the server accepts connections (it may still be
/// recovering from a crash).
async fn pool(db: &str) -> PgPool {
    let opts = PgConnectOptions::from_str(&url(db)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.clone())
            .await
        {
            Ok(p) => return p,
            Err(e) if Instant::now() < deadline => {
                eprintln!("launcher cluster not ready ({db}): {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("connect to the launcher cluster ({db}): {e}"),
        }
    }
}

/// Relay workers by database, as pg_stat_activity shows them.
async fn relays(admin: &PgPool) -> Vec<(String, i32)> {
    sqlx::query_as(
        "SELECT datname::text, pid FROM pg_stat_activity WHERE backend_type = 'storefront event relay' ORDER BY 1, 2",
    )
    .fetch_all(admin)
    .await
    .unwrap()
}

/// The relay of `db`, once it runs (waiting up to 20 s).
async fn relay_of(admin: &PgPool, db: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mine: Vec<i32> = relays(admin).await.into_iter().filter(|(d, _)| d == db).map(|(_, p)| p).collect();
        assert!(mine.len() <= 1, "two relays in {db}: {mine:?}");
        if let Some(&pid) = mine.first() {
            return pid;
        }
        assert!(Instant::now() < deadline, "no relay started in {db} within 20 s; relays: {:?}", relays(admin).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After a round of the launcher to settle, and over `rounds` more, relays
/// run in the `want` databases only (each the same process throughout). A relay the scheduler starts in
/// `noext` (relay mode, no extension) exits at once, so it may be seen,
/// but never twice in a row 100 ms apart.
async fn only_relays_in(admin: &PgPool, want: &[&str], rounds: u64) {
    tokio::time::sleep(Duration::from_millis(NAPTIME * 1000 + 500)).await;
    let deadline = Instant::now() + Duration::from_secs(NAPTIME * rounds);
    let mut first: Option<Vec<(String, i32)>> = None;
    let mut probe_before: Vec<i32> = Vec::new();
    while Instant::now() < deadline {
        let now = relays(admin).await;
        let probes: Vec<i32> = now.iter().filter(|(d, _)| d == "noext").map(|(_, p)| *p).collect();
        assert!(probes.iter().all(|p| !probe_before.contains(p)), "a relay stays in noext: {now:?}");
        probe_before = probes;
        let lasting: Vec<(String, i32)> = now.into_iter().filter(|(d, _)| d != "noext").collect();
        let dbs: Vec<&str> = lasting.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(dbs, want, "relays running: {lasting:?}");
        match &first {
            None => first = Some(lasting),
            Some(f) => assert_eq!(f, &lasting, "relays changed"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An order in `db`, heard on storefront_order_events (relay mode).
async fn order_is_heard(db: &str, key: &str) {
    let shop = pool(db).await;
    let mut listener = PgListener::connect(&url(db)).await.unwrap();
    listener.listen("storefront_order_events").await.unwrap();
    let mode: String = sqlx::query_scalar("SHOW storefront.event_delivery").fetch_one(&shop).await.unwrap();
    assert_eq!(mode, "relay");
    let order: i64 = sqlx::query_scalar("SELECT order_id FROM storefront.place_order(1, '[{\"sku\": \"L-1\", \"qty\": 1}]', $1)")
        .bind(key)
        .fetch_one(&shop)
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .unwrap_or_else(|_| panic!("no event for order {order} in {db} within 10 s"))
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(event.payload()).unwrap();
    assert_eq!(event["order_id"], serde_json::json!(order));
    assert_eq!(event["status"], serde_json::json!("pending"));
    let queued: i64 = sqlx::query_scalar("SELECT queued FROM storefront.event_relay_status()").fetch_one(&shop).await.unwrap();
    assert_eq!(queued, 0);
    shop.close().await;
}

/// psql's output (stdout and stderr) for `sql` in `db`.
fn psql_at(db: &str, sql: &str) -> String {
    let out = Command::new("psql").args(["-X", "-d", &url(db), "-c", sql]).output().expect("psql on PATH");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

async fn status_pid(db: &str) -> Option<i32> {
    let p = pool(db).await;
    let pid = sqlx::query_scalar("SELECT relay_pid FROM storefront.event_relay_status()").fetch_one(&p).await.unwrap();
    p.close().await;
    pid
}

/// Log lines that would mean a worker kept trying a database it cannot use.
fn reconnect_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains("FATAL")
                && (l.contains("does not exist") || l.contains("not currently accepting connections") || l.contains("does not allow connections"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launcher_keeps_a_relay_in_every_database_in_relay_mode() {
    let cluster = Cluster::init(cluster_dir());
    let _stop = StopOnDrop(cluster.data());
    cluster.start();
    let admin = pool("postgres").await;
    for (db, relay_mode, extension, made) in [
        ("shop", true, true, None),
        ("plain", false, true, None),
        ("noext", true, false, None),
        ("tmpl", true, true, Some("IS_TEMPLATE true")),
        ("closed", true, true, Some("ALLOW_CONNECTIONS false")),
    ] {
        admin.execute(format!("CREATE DATABASE {db}").as_str()).await.unwrap();
        if extension {
            let p = pool(db).await;
            p.execute(
                "CREATE EXTENSION storefront CASCADE;
                 SELECT storefront.register_customer('l@example.com', 'pw', 'L');
                 SELECT storefront.upsert_product('L-1', 'Launch', 100);
                 SELECT storefront.restock('L-1', 1000);",
            )
            .await
            .unwrap();
            p.close().await;
        }
        // a template or closed database is one before relay mode is set
        // for it: set the other way round, a scheduler round in between
        // would rightly start a relay there, whose connection the ALTER
        // then refuses (one FATAL line in the log, not a retry loop)
        if let Some(made) = made {
            admin.execute(format!("ALTER DATABASE {db} {made}").as_str()).await.unwrap();
        }
        if relay_mode {
            admin.execute(format!("ALTER DATABASE {db} SET storefront.event_delivery = relay").as_str()).await.unwrap();
        }
    }

    // the launcher (no database) and its scheduler (in postgres)
    let want = [
        ("storefront relay launcher".to_string(), None),
        ("storefront relay scheduler".to_string(), Some("postgres".to_string())),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let workers: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT backend_type, datname::text FROM pg_stat_activity WHERE backend_type LIKE 'storefront relay %' ORDER BY 1",
        )
        .fetch_all(&admin)
        .await
        .unwrap();
        if workers == want {
            break;
        }
        assert!(Instant::now() < deadline, "launcher workers: {workers:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // a relay in shop only: not where relay mode is off, the extension is
    // missing, the database is a template or refuses connections
    let first = relay_of(&admin, "shop").await;
    assert_eq!(status_pid("shop").await, Some(first));
    assert_eq!(status_pid("plain").await, None);
    only_relays_in(&admin, &["shop"], 3).await;
    order_is_heard("shop", "before-restart").await;
    // start_event_relay() finds the launcher's relay
    let shop = pool("shop").await;
    let again: i32 = sqlx::query_scalar("SELECT storefront.start_event_relay()").fetch_one(&shop).await.unwrap();
    assert_eq!(again, first);
    shop.close().await;

    // a restart: the relay is back, and delivers
    admin.close().await;
    cluster.restart();
    let admin = pool("postgres").await;
    let after_restart = relay_of(&admin, "shop").await;
    assert_ne!(after_restart, first);
    assert_eq!(status_pid("shop").await, Some(after_restart));
    order_is_heard("shop", "after-restart").await;
    only_relays_in(&admin, &["shop"], 2).await;

    // stop_event_relay(): stopped until the launcher's next round while
    // relay mode is on (it says so)
    let said = psql_at("shop", "SELECT storefront.stop_event_relay();");
    assert!(said.contains(" t\n"), "{said}");
    assert!(said.contains("NOTICE:  the relay launcher starts a new relay"), "{said}");
    let restarted = relay_of(&admin, "shop").await;
    assert_ne!(restarted, after_restart);
    // with relay mode off, stopped for good
    admin.execute("ALTER DATABASE shop SET storefront.event_delivery = notify").await.unwrap();
    let said = psql_at("shop", "SELECT storefront.stop_event_relay();");
    assert!(said.contains(" t\n") && !said.contains("NOTICE"), "{said}");
    only_relays_in(&admin, &[], 3).await;
    // databases configured later get a relay at the next round
    admin.execute("ALTER DATABASE shop SET storefront.event_delivery = relay").await.unwrap();
    admin.execute("ALTER DATABASE plain SET storefront.event_delivery = relay").await.unwrap();
    relay_of(&admin, "shop").await;
    relay_of(&admin, "plain").await;
    order_is_heard("plain", "configured-later").await;

    // a crash (a relay killed with SIGKILL: the postmaster restarts every
    // process): the relays are back
    let victim = relay_of(&admin, "plain").await;
    admin.close().await;
    let kill = Command::new("kill").args(["-KILL", &victim.to_string()]).status().unwrap();
    assert!(kill.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let admin = pool("postgres").await;
    let shop_after_crash = relay_of(&admin, "shop").await;
    let plain_after_crash = relay_of(&admin, "plain").await;
    assert_ne!(plain_after_crash, victim);
    assert!(cluster.log().contains("terminating any other active server processes"), "no crash restart happened");
    order_is_heard("shop", "after-crash").await;
    assert!(shop_after_crash > 0);

    // DROP DATABASE: refused while a relay is connected, done WITH (FORCE);
    // nothing reconnects to it
    let err = admin.execute("DROP DATABASE plain").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("55006"), "{err}");
    admin.execute("DROP DATABASE plain WITH (FORCE)").await.unwrap();
    only_relays_in(&admin, &["shop"], 3).await;

    // naptime 0: the launcher starts nothing (a stopped relay stays
    // stopped); back on, the relay is back
    admin.execute("ALTER SYSTEM SET storefront.relay_launcher_naptime = 0").await.unwrap();
    admin.execute("SELECT pg_reload_conf()").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shop = pool("shop").await;
    let stopped: bool = sqlx::query_scalar("SELECT storefront.stop_event_relay()").fetch_one(&shop).await.unwrap();
    assert!(stopped);
    only_relays_in(&admin, &[], 3).await;
    let scheduler: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'storefront relay scheduler'")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!(scheduler, 0, "the scheduler runs with naptime 0");
    admin.execute("ALTER SYSTEM RESET storefront.relay_launcher_naptime").await.unwrap();
    admin.execute("SELECT pg_reload_conf()").await.unwrap();
    relay_of(&admin, "shop").await;

    // the scheduler's database dropped: it moves to another one
    admin.close().await;
    shop.execute("DROP DATABASE postgres WITH (FORCE)").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let moved = loop {
        let at: Option<String> = sqlx::query_scalar(
            "SELECT datname::text FROM pg_stat_activity WHERE backend_type = 'storefront relay scheduler'",
        )
        .fetch_optional(&shop)
        .await
        .unwrap()
        .flatten();
        if let Some(db) = at {
            break db;
        }
        assert!(Instant::now() < deadline, "no scheduler after its database was dropped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(moved, "postgres");
    let stopped: bool = sqlx::query_scalar("SELECT storefront.stop_event_relay()").fetch_one(&shop).await.unwrap();
    assert!(stopped);
    shop.close().await;
    order_is_heard("shop", "scheduler-moved").await;
    let shop = pool("shop").await;
    only_relays_in(&shop, &["shop"], 2).await;
    shop.close().await;

    // nothing tried a database it cannot use (dropped, template, closed)
    let log = cluster.log();
    let lines = reconnect_lines(&log);
    assert!(lines.is_empty(), "a worker kept trying an unusable database:\n{}", lines.join("\n"));
    cluster.pg_ctl(&["-m", "fast", "-w", "stop"]).unwrap();
    // a clean shutdown: every worker exited on its own
    let log = cluster.log();
    let tail: Vec<&str> = log.lines().rev().take_while(|l| !l.contains("received fast shutdown request")).collect();
    assert!(!tail.iter().any(|l| l.contains("storefront")), "{tail:#?}");
}
