//! Versioned upgrades, the way a DBA does them: install a released
//! version with its own library, load demo data (and run-time objects: a
//! rollup, a retention policy), put the new library in place, restart,
//! `ALTER EXTENSION storefront UPDATE`. Then the upgraded database must
//! describe exactly what a fresh install of the new version does (tables,
//! columns in order, constraints, indexes, functions with their bodies,
//! privileges, comments), every row must have survived, and every
//! invariant must hold.
//!
//! This runs in a private, relocated copy of the PostgreSQL installation
//! (the upgrade kit, made by scripts/test.sh), so swapping the library
//! touches no other cluster.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;
use storefront_tests::*;

/// The upgrade cluster's port (STOREFRONT_UPGRADE_PORT, default 28817).
fn port() -> u16 {
    std::env::var("STOREFRONT_UPGRADE_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(28817)
}

struct Kit {
    root: PathBuf,
}

impl Kit {
    fn bin(&self, tool: &str) -> PathBuf {
        self.root.join("pg/usr/lib/postgresql/15/bin").join(tool)
    }
    fn library(&self) -> PathBuf {
        self.root.join("pg/usr/lib/postgresql/15/lib/storefront.so")
    }
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    fn as_postgres(&self, tool: &str, args: &[&str]) {
        let out = Command::new("sudo")
            .arg("-u")
            .arg("postgres")
            .arg(self.bin(tool))
            .args(args)
            .output()
            .expect("run a PostgreSQL tool as postgres");
        assert!(
            out.status.success(),
            "{tool} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fn install_library(&self, from: &Path) {
        // a new file, not an overwrite: running backends map the old one
        let tmp = self.library().with_extension("so.new");
        std::fs::copy(from, &tmp).expect("copy library");
        std::fs::rename(&tmp, self.library()).expect("put library in place");
    }
    /// The control file a version shipped with (0.2.0 requires btree_gist,
    /// 0.1.0 did not).
    fn install_control(&self, from: &Path) {
        let to = self.root.join("pg/usr/share/postgresql/15/extension/storefront.control");
        std::fs::copy(from, to).expect("put control file in place");
    }
    fn initdb(&self) {
        let data = self.data();
        let _ = std::fs::remove_dir_all(&data);
        self.as_postgres(
            "initdb",
            &["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
        );
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             shared_buffers = 512MB\nwork_mem = 32MB\nmaintenance_work_mem = 512MB\nmax_wal_size = 4GB\n\
             fsync = off\nsynchronous_commit = off\nlog_min_messages = warning\n",
            port(),
            self.root.display()
        );
        let path = data.join("postgresql.conf");
        let mut all = std::fs::read_to_string(&path).unwrap();
        all.push_str(&conf);
        std::fs::write(&path, all).unwrap();
    }
    fn start(&self) {
        let log = self.root.join("server.log");
        self.as_postgres(
            "pg_ctl",
            &["-D", self.data().to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "start"],
        );
    }
    fn stop(&self) {
        self.as_postgres("pg_ctl", &["-D", self.data().to_str().unwrap(), "-m", "fast", "-w", "stop"]);
    }
}

async fn pool(db: &str) -> PgPool {
    let opts = PgConnectOptions::from_str(&format!("postgres://postgres@127.0.0.1:{}/{db}", port())).unwrap();
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(opts)
        .await
        .unwrap_or_else(|e| panic!("connect to the upgrade cluster ({db}): {e}"))
}

fn releases(kit: &Kit) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(kit.root.join("releases"))
        .expect("kit/releases")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_prefix("storefront-")?.strip_suffix(".so")?.to_string())
        })
        .collect();
    out.sort();
    out
}

/// Tables an upgrade retires, with what replaced them (checked below).
/// 0.2.0: rollup_invalidation's ranges become queued buckets (rollup_pending).
const RETIRED: &[&str] = &["rollup_invalidation"];

#[tokio::test]
async fn upgrades_keep_schema_rows_and_invariants() {
    let root = std::env::var("STOREFRONT_UPGRADE_KIT")
        .expect("STOREFRONT_UPGRADE_KIT is not set: run the tests through scripts/test.sh, which prepares the upgrade kit");
    let kit = Kit { root: PathBuf::from(root) };
    let current = extension_version();
    let versions = releases(&kit);
    assert!(!versions.is_empty(), "no released library in the kit");
    for from in versions {
        upgrade_from(&kit, &from, &current).await;
    }
}

async fn upgrade_from(kit: &Kit, from: &str, to: &str) {
    // the released version, with its own library and control file
    kit.install_library(&kit.root.join(format!("releases/storefront-{from}.so")));
    kit.install_control(&kit.root.join(format!("releases/storefront-{from}.control")));
    kit.initdb();
    kit.start();
    let admin = pool("postgres").await;
    admin.execute("CREATE DATABASE upgraded").await.unwrap();
    admin.execute("CREATE DATABASE fresh").await.unwrap();
    let old = pool("upgraded").await;
    old.execute(format!("CREATE EXTENSION storefront VERSION '{from}'").as_str()).await.unwrap();
    old.execute(
        "SELECT * FROM storefront.seed_demo_data(1);
         SELECT storefront.create_rollup('views_hourly', 'storefront.event', 'at', '1 hour', '{kind}', '{count}');
         SELECT storefront.refresh_rollup('views_hourly');
         SELECT storefront.set_retention('views_hourly', '400 days');
         -- late events the released version logs as invalidated ranges
         SELECT storefront.track_event('page_view', r.watermark - interval '30 days') FROM storefront.rollup r;
         SELECT storefront.track_event('add_to_cart', r.watermark - interval '3 days') FROM storefront.rollup r;",
    )
    .await
    .expect("demo data and run-time objects on the released version");
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.rollup_invalidation").fetch_one(&old).await.unwrap();
    assert_eq!(logged, 2, "the released version logged the late events");
    // roles set up by the released version's grant functions
    old.execute(
        "CREATE ROLE upgrade_app NOLOGIN; CREATE ROLE upgrade_analyst NOLOGIN;
         SELECT * FROM storefront.grant_app_role('upgrade_app');
         SELECT * FROM storefront.grant_analyst_role('upgrade_analyst');",
    )
    .await
    .expect("roles on the released version");
    assert_invariants(&old).await;
    let columns = table_columns(&old).await;
    let before = row_digest(&old, None).await;
    old.close().await;
    admin.close().await;

    // the new library, a restart, the update
    kit.stop();
    kit.install_library(&kit.root.join("storefront-current.so"));
    kit.install_control(&kit.root.join("storefront-current.control"));
    kit.start();
    let upgraded = pool("upgraded").await;
    // the new version requires btree_gist, and ALTER EXTENSION has no
    // CASCADE: PostgreSQL refuses the update, changing nothing, until the
    // DBA installs it
    let before_update = schema_fingerprint(&upgraded).await;
    let err = upgraded.execute("ALTER EXTENSION storefront UPDATE").await.expect_err("an update without btree_gist");
    let e = pg_err(&err).expect("a database error");
    assert_eq!(e.message, "required extension \"btree_gist\" is not installed", "{e:?}");
    assert_eq!(schema_fingerprint(&upgraded).await, before_update, "a refused update changed the schema");
    upgraded.execute("CREATE EXTENSION btree_gist").await.expect("CREATE EXTENSION btree_gist");
    upgraded.execute("ALTER EXTENSION storefront UPDATE").await.expect("ALTER EXTENSION storefront UPDATE");
    let version: String = sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'storefront'")
        .fetch_one(&upgraded)
        .await
        .unwrap();
    assert_eq!(version, to);

    // every row survived, every invariant holds
    let after = row_digest(&upgraded, Some(&columns)).await;
    for (table, was) in &before {
        if RETIRED.iter().any(|r| table.ends_with(&format!(".{r}"))) {
            assert_eq!(after.get(table), None, "{table} is retired by the upgrade from {from}");
            continue;
        }
        assert_eq!(after.get(table), Some(was), "rows of {table} changed in the upgrade from {from}");
    }
    // 0.1.0's logged ranges became queued buckets: the two late events' hours
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.rollup_pending WHERE rollup_name = 'views_hourly'")
        .fetch_one(&upgraded)
        .await
        .unwrap();
    assert!(queued >= 2, "the logged ranges were queued ({queued} buckets)");
    assert_invariants(&upgraded).await;

    // the released version's roles keep working under row-level security
    let kinds: Vec<(String, String)> =
        sqlx::query_as("SELECT role_name::text, kind FROM storefront.role_kind ORDER BY 1").fetch_all(&upgraded).await.unwrap();
    assert_eq!(
        kinds,
        [("upgrade_analyst".to_string(), "analyst".to_string()), ("upgrade_app".to_string(), "app".to_string())]
    );
    let mut analyst = upgraded.acquire().await.unwrap();
    analyst.execute("SET ROLE upgrade_analyst").await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.orders").fetch_one(&mut *analyst).await.unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.orders").fetch_one(&upgraded).await.unwrap();
    assert_eq!(seen, all, "an analyst of the released version sees every order after the upgrade");
    analyst.execute("RESET ROLE").await.unwrap();
    drop(analyst);

    // the same schema as a fresh install
    let fresh = pool("fresh").await;
    fresh.execute("CREATE EXTENSION storefront CASCADE").await.unwrap();
    let want = schema_fingerprint(&fresh).await;
    let got = schema_fingerprint(&upgraded).await;
    let missing: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the upgrade from {from} differs from a fresh install of {to}:\n\
         --- only in a fresh install ({}):\n{}\n--- only after the upgrade ({}):\n{}",
        missing.len(),
        missing.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n"),
        extra.len(),
        extra.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n")
    );

    // and the upgraded store works: orders, payments, maintenance, rollups
    upgraded
        .execute(
            "SELECT storefront.place_order(c.customer_id, jsonb_build_array(jsonb_build_object('sku', s.code, 'qty', 1)))
             FROM (SELECT customer_id FROM storefront.customer ORDER BY customer_id LIMIT 1) c,
                  (SELECT s.code FROM storefront.sku s JOIN storefront.inventory i USING (sku_id)
                   WHERE i.on_hand - i.reserved > 0 AND s.hot_slots = 0 ORDER BY s.sku_id LIMIT 1) s;
             SELECT storefront.refresh_rollup('views_hourly');",
        )
        .await
        .expect("the upgraded store works");
    // the rollup equals a direct aggregation of the events below its watermark
    let differences: i64 = sqlx::query_scalar(
        "WITH wm AS (SELECT watermark FROM storefront.rollup WHERE name = 'views_hourly'),
              direct AS (SELECT storefront.time_bucket('1 hour', at) AS bucket, kind, count(*) AS n
                         FROM storefront.event, wm WHERE at < wm.watermark GROUP BY 1, 2)
         SELECT count(*) FROM ((SELECT bucket, kind, n FROM storefront_rollups.views_hourly_buckets EXCEPT SELECT * FROM direct)
                               UNION ALL
                               (SELECT * FROM direct EXCEPT SELECT bucket, kind, n FROM storefront_rollups.views_hourly_buckets)) d",
    )
    .fetch_one(&upgraded)
    .await
    .unwrap();
    assert_eq!(differences, 0, "the upgraded rollup is exact after its refresh");
    upgraded.execute("CALL storefront.run_maintenance()").await.expect("maintenance runs on the upgraded store");
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.maintenance_report(1) WHERE NOT ok")
        .fetch_one(&upgraded)
        .await
        .unwrap();
    assert_eq!(failed, 0, "every maintenance step succeeds after the upgrade");
    assert_invariants(&upgraded).await;
    upgraded.close().await;
    fresh.close().await;
    kit.stop();
}
