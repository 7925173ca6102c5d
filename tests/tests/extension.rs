//! CREATE / DROP / CREATE, and a pg_dump round trip of a store with data.

use sqlx::Executor;
use storefront_tests::*;

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

#[tokio::test]
async fn create_drop_create() {
    let pool = fresh_db("sf_ext_cycle").await;
    let objects = "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'storefront'::regnamespace)
                        + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'storefront'::regnamespace)
                        + (SELECT count(*) FROM pg_type WHERE typnamespace = 'storefront'::regnamespace)";
    let first = count(&pool, objects).await;
    assert!(first > 40, "only {first} objects installed");
    pool.execute("SELECT storefront.upsert_product('CYCLE-1', 'Cycle', 100)").await.unwrap();

    pool.execute("DROP EXTENSION storefront").await.unwrap();
    // PostgreSQL creates the control file's schema before running the
    // script, so the schema itself is not a member: it stays, empty.
    assert_eq!(count(&pool, objects).await, 0, "DROP EXTENSION left objects behind");
    let leftovers = count(
        &pool,
        "SELECT count(*) FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid WHERE e.extname = 'storefront'",
    )
    .await;
    assert_eq!(leftovers, 0);
    // with event partitions made at run time, DROP EXTENSION takes them too
    pool.execute("CREATE EXTENSION storefront; SELECT storefront.ensure_event_partitions();").await.unwrap();
    pool.execute("DROP EXTENSION storefront").await.unwrap();
    assert_eq!(count(&pool, objects).await, 0, "DROP EXTENSION left event partitions behind");

    pool.execute("CREATE EXTENSION storefront").await.unwrap();
    assert_eq!(count(&pool, objects).await, first, "second CREATE installs the same objects");
    assert_eq!(count(&pool, "SELECT count(*) FROM storefront.sku").await, 0, "old data came back");
    assert_eq!(count(&pool, "SELECT count(*) FROM storefront.location").await, 1);
    assert_invariants(&pool).await;
}

#[tokio::test]
async fn extension_reports_its_version_and_schema() {
    let pool = fresh_db("sf_ext_version").await;
    let (version, schema, relocatable): (String, String, bool) = sqlx::query_as(
        "SELECT extversion, extnamespace::regnamespace::text, extrelocatable FROM pg_extension WHERE extname = 'storefront'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(version, extension_version());
    assert_eq!(schema, "storefront");
    assert!(!relocatable);
}

/// The control file's `schema = storefront` with `relocatable = false`:
/// PostgreSQL creates the schema before the script runs and records the
/// extension as depending on it (a normal dependency), so the schema cannot
/// also be a member (that would be a loop): ALTER EXTENSION ... ADD SCHEMA
/// is refused with 55000 and changes nothing, and DROP EXTENSION leaves the
/// schema, empty.
#[tokio::test]
async fn extension_schema_is_not_a_member() {
    let pool = fresh_db("sf_ext_schema").await;
    // (and on btree_gist, which it requires; the warehouse's own schema,
    // storefront_dw, is created by the script and is a member)
    let dependencies = "SELECT d.deptype::text, d.refclassid::regclass::text,
                               CASE WHEN d.refclassid = 'pg_extension'::regclass
                                    THEN (SELECT r.extname::text FROM pg_extension r WHERE r.oid = d.refobjid)
                                    ELSE d.refobjid::regnamespace::text END
                        FROM pg_depend d JOIN pg_extension e ON d.classid = 'pg_extension'::regclass AND d.objid = e.oid
                        WHERE e.extname = 'storefront' ORDER BY 1, 2, 3";
    let membership = "SELECT count(*) FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
                      WHERE e.extname = 'storefront' AND d.deptype = 'e' AND d.classid = 'pg_namespace'::regclass
                        AND d.objid = 'storefront'::regnamespace";
    // the rollups' default schema, made by the install script, is a member
    let rollups_schema = "SELECT count(*) FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
                          WHERE e.extname = 'storefront' AND d.deptype = 'e' AND d.classid = 'pg_namespace'::regclass
                            AND d.objid = 'storefront_rollups'::regnamespace";
    assert_eq!(count(&pool, rollups_schema).await, 1);
    let before: Vec<(String, String, String)> = sqlx::query_as(dependencies).fetch_all(&pool).await.unwrap();
    assert_eq!(
        before,
        [
            ("n".to_string(), "pg_extension".to_string(), "btree_gist".to_string()),
            ("n".to_string(), "pg_namespace".to_string(), "storefront".to_string())
        ]
    );
    assert_eq!(count(&pool, membership).await, 0);

    let err = pool.execute("ALTER EXTENSION storefront ADD SCHEMA storefront").await.expect_err("ADD SCHEMA must fail");
    let pe = pg_err(&err).expect("a database error");
    assert_eq!(pe.code, "55000", "{pe:?}");
    assert_eq!(
        pe.message,
        "cannot add schema \"storefront\" to extension \"storefront\" because the schema contains the extension"
    );
    let after: Vec<(String, String, String)> = sqlx::query_as(dependencies).fetch_all(&pool).await.unwrap();
    assert_eq!(after, before, "the refused ALTER EXTENSION changed the dependencies");
    assert_eq!(count(&pool, membership).await, 0);

    // so DROP SCHEMA without CASCADE is refused while the extension is there,
    // and DROP EXTENSION leaves the schema behind, empty
    let err = pool.execute("DROP SCHEMA storefront").await.expect_err("the extension depends on its schema");
    assert_eq!(sqlstate(&err).as_deref(), Some("2BP01"));
    pool.execute("DROP EXTENSION storefront").await.unwrap();
    let left: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'storefront'),
                (SELECT count(*) FROM pg_class WHERE relnamespace = 'storefront'::regnamespace)
              + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'storefront'::regnamespace)
              + (SELECT count(*) FROM pg_type WHERE typnamespace = 'storefront'::regnamespace)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, (1, 0), "DROP EXTENSION leaves the schema, empty");
    let rollups_left: i64 = count(&pool, "SELECT count(*) FROM pg_namespace WHERE nspname = 'storefront_rollups'").await;
    assert_eq!(rollups_left, 0, "DROP EXTENSION drops the rollups' schema, a member");
}

/// pg_dump of a database with store data restores into an empty database
/// with the same rows, and identity sequences continue after the restore.
#[tokio::test]
async fn dump_and_restore_round_trip() {
    let pool = fresh_db("sf_dump_src").await;
    pool.execute(
        "SELECT storefront.add_location('east', 'East');
         SELECT storefront.upsert_product('DUMP-1', 'Dump Tee', 1500, 'USD', 'Apparel/Tees');
         SELECT storefront.upsert_product('DUMP-2', 'Dump Mug', 900, 'EUR');
         SELECT storefront.restock('DUMP-1', 5);
         SELECT storefront.restock('DUMP-2', 3, 'east');
         SELECT storefront.register_customer('dump@example.com', 'pw', 'Dump Customer');
         SELECT order_id FROM storefront.place_order(1, '[{\"sku\": \"DUMP-1\", \"qty\": 2}]', 'dump-key');
         SELECT storefront.ensure_event_partitions('1 day', '2 days', '2026-05-10');
         SELECT storefront.track_events(ARRAY['page_view', 'add_to_cart'],
                                        ARRAY['2026-05-09 10:00+00', '2026-05-09 11:30+00']::timestamptz[]);
         SELECT storefront.create_rollup('ev_hourly', 'storefront.event', 'at', '1 hour', '{kind}', '{count}', 'dumped');
         SELECT storefront.refresh_rollup('ev_hourly', '2026-05-10');",
    )
    .await
    .unwrap();
    let before = digest(&pool).await;
    pool.close().await;

    let dump = std::process::Command::new("pg_dump")
        .args(["--format=custom", "-d", &db_url("sf_dump_src"), "-f", "/tmp/storefront-test.dump"])
        .status()
        .expect("pg_dump");
    assert!(dump.success(), "pg_dump failed");
    let target = empty_db("sf_dump_dst").await;
    target.close().await;
    let restore = std::process::Command::new("pg_restore")
        .args(["--exit-on-error", "-d", &db_url("sf_dump_dst"), "/tmp/storefront-test.dump"])
        .status()
        .expect("pg_restore");
    assert!(restore.success(), "pg_restore failed");
    let _ = std::fs::remove_file("/tmp/storefront-test.dump");

    let restored = connect("sf_dump_dst", 2).await;
    assert_eq!(digest(&restored).await, before, "restored data differs");
    // partitions, the rollup's buckets and its real-time view came back
    let (events, buckets, view): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM storefront.event_p20260509),
                (SELECT count(*) FROM dumped.ev_hourly_buckets),
                (SELECT sum(n)::bigint FROM dumped.ev_hourly)",
    )
    .fetch_one(&restored)
    .await
    .expect("partitions and rollup restored");
    assert_eq!((events, buckets, view), (2, 2, 2));
    // pg_dump does not carry triggers on extension tables: the first refresh
    // re-arms them and re-aggregates, so a late event from before it counts
    restored.execute("SELECT storefront.track_event('page_view', '2026-05-09 10:30+00')").await.unwrap();
    restored.execute("SELECT storefront.refresh_rollup('ev_hourly', '2026-05-10')").await.unwrap();
    let counted: i64 = sqlx::query_scalar("SELECT sum(n)::bigint FROM dumped.ev_hourly_buckets").fetch_one(&restored).await.unwrap();
    assert_eq!(counted, 3);
    restored.execute("SELECT storefront.track_event('page_view', '2026-05-09 10:40+00')").await.unwrap();
    let logged: i64 = sqlx::query_scalar("SELECT coalesce(sum(n), 0)::bigint FROM dumped.ev_hourly_deltas").fetch_one(&restored).await.unwrap();
    assert_eq!(logged, 1, "the re-armed trigger captures late events");
    // identity sequences were dumped too: new rows do not collide
    restored
        .execute(
            "SELECT storefront.upsert_product('DUMP-3', 'After restore', 100);
             SELECT storefront.register_customer('after@example.com', 'pw', 'After');",
        )
        .await
        .expect("inserts after restore");
    assert_invariants(&restored).await;
    let authed: Option<i64> = sqlx::query_scalar("SELECT storefront.authenticate('dump@example.com', 'pw')")
        .fetch_one(&restored)
        .await
        .unwrap();
    assert!(authed.is_some(), "restored customer can sign in");
}

/// CREATE EXTENSION refuses a storefront schema that another role owns or
/// may create objects in, and changes nothing; a superuser's empty schema
/// (what CREATE EXTENSION makes, or pg_restore) is fine.
#[tokio::test]
async fn create_extension_refuses_a_schema_another_role_controls() {
    let pool = empty_db("sf_ext_hostile_schema").await;
    pool.execute(
        "CREATE EXTENSION btree_gist;
         DROP ROLE IF EXISTS sf_schema_squatter;
         CREATE ROLE sf_schema_squatter;
         GRANT CREATE ON DATABASE sf_ext_hostile_schema TO sf_schema_squatter;",
    )
    .await
    .unwrap();
    let refused = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            pool.execute(sql).await.unwrap();
            let err = pool.execute("CREATE EXTENSION storefront").await.expect_err("a schema another role controls");
            let pe = pg_err(&err).unwrap();
            assert_eq!(pe.code, "42501", "{sql}: {pe:?}");
            assert_eq!(pe.message, "schema \"storefront\" is not safe for extension storefront");
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_extension WHERE extname = 'storefront'")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(n, 0, "{sql}: nothing installed");
        }
    };
    // owned by another role
    refused("SET ROLE sf_schema_squatter; CREATE SCHEMA storefront; RESET ROLE;").await;
    // a superuser's schema where another role may create objects
    refused("DROP SCHEMA storefront; CREATE SCHEMA storefront; GRANT CREATE ON SCHEMA storefront TO sf_schema_squatter;").await;
    // CREATE taken back, but a function of that role is still there
    refused(
        "SET ROLE sf_schema_squatter;
         CREATE FUNCTION storefront.btrim(character) RETURNS text LANGUAGE sql AS 'SELECT 1::text';
         RESET ROLE;
         REVOKE CREATE ON SCHEMA storefront FROM sf_schema_squatter;",
    )
    .await;
    // a superuser's empty schema, as pg_restore makes it before CREATE EXTENSION
    pool.execute("DROP SCHEMA storefront CASCADE; CREATE SCHEMA storefront;").await.unwrap();
    pool.execute("CREATE EXTENSION storefront").await.expect("a superuser's empty schema");
    pool.execute("DROP EXTENSION storefront; DROP SCHEMA storefront; REVOKE ALL ON DATABASE sf_ext_hostile_schema FROM sf_schema_squatter;")
        .await
        .unwrap();
    pool.close().await;
    let admin = connect("postgres", 1).await;
    admin.execute("DROP DATABASE sf_ext_hostile_schema WITH (FORCE)").await.unwrap();
    admin.execute("DROP ROLE sf_schema_squatter").await.unwrap();
}
