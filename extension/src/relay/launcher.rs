//! The relay launcher: with `storefront` in `shared_preload_libraries`, a
//! relay runs in every database that wants one, from server start on and
//! after every restart, without anyone calling `start_event_relay()`.
//!
//! Two background workers share the job:
//!
//! - The launcher: a static worker that `_PG_init` registers while the
//!   library is preloaded. It connects to no database, so it never keeps
//!   one from being dropped or used as a template. It reads `pg_database`
//!   and keeps one scheduler running, in `postgres` when that database
//!   accepts connections, else in the oldest other database that does.
//!   When the scheduler's database is dropped (`WITH (FORCE)` ends the
//!   scheduler), the next one runs elsewhere.
//! - The scheduler: a dynamic worker. Every `storefront.relay_launcher_naptime`
//!   seconds it reads, from the shared catalogs, the databases that want a
//!   relay and have none running, and starts the relay worker
//!   (`storefront_event_relay_main`) in each. A database wants a relay when
//!   it accepts connections, is not a template, and relay mode is set for
//!   it (`ALTER DATABASE ... SET storefront.event_delivery = relay`), for a
//!   role (`ALTER ROLE ... [IN DATABASE ...] SET`), or server-wide
//!   (postgresql.conf, `ALTER SYSTEM`) and not turned off for the database.
//!
//! It also stops a relay in a database that became a template or stopped
//! accepting connections.
//!
//! The relay takes its database's relay lock, so there are never two relays
//! for a database (one that finds the lock taken exits), and it exits at
//! once when the extension is not installed there; the scheduler then
//! tries that database again after a pause that doubles up to 5 minutes.
//!
//! No worker is restarted by the postmaster except the launcher itself
//! (after 10 s, and at once after a crash restart); it starts a scheduler,
//! which starts the relays. So a dropped database is never reconnected to
//! in a loop: nothing is started for a database that is not in
//! `pg_database` any more, and a relay that finds its database gone exits
//! once and for all.
//!
//! `storefront.relay_launcher_naptime = 0` turns the launcher off: the
//! scheduler exits and no relay is started (running relays keep running);
//! set it back and reload to turn it on again.

use super::{guarded, pin_search_path, worker_builder, WORKER_TYPE};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use std::panic::AssertUnwindSafe;
use std::collections::HashMap;
use std::ffi::CStr;
use std::time::{Duration, Instant};

/// `storefront.relay_launcher_naptime`: seconds between the scheduler's
/// rounds; 0 turns the launcher off.
pub static NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(10);
pub const MAX_NAPTIME_S: i32 = 3600;

/// Background worker types, as `pg_stat_activity.backend_type` shows them.
pub const LAUNCHER_TYPE: &str = "storefront relay launcher";
pub const SCHEDULER_TYPE: &str = "storefront relay scheduler";

/// The relay interval of relays the launcher starts (start_event_relay's
/// default).
const RELAY_INTERVAL_MS: i32 = 10;

/// The longest pause before another try in a database whose relay exited.
const MAX_RETRY: Duration = Duration::from_secs(300);

pub fn init() {
    GucRegistry::define_int_guc(
        c"storefront.relay_launcher_naptime",
        c"Seconds between the relay launcher's looks for databases that want an event relay; 0 turns the launcher off.",
        c"With storefront in shared_preload_libraries, a launcher starts an event relay in every database where relay mode is in effect and the extension is installed, and looks again every this many seconds. 0: the launcher starts no relay (relays already running keep running).",
        &NAPTIME,
        0,
        MAX_NAPTIME_S,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    // SAFETY: read while the library loads; true only in the postmaster
    // loading shared_preload_libraries
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        BackgroundWorkerBuilder::new(LAUNCHER_TYPE)
            .set_type(LAUNCHER_TYPE)
            .set_library("storefront")
            .set_function("storefront_relay_launcher_main")
            // a database connection (to none: shared catalogs only), once
            // recovery has finished (a standby runs no relay)
            .enable_spi_access()
            // restarted 10 s after a failure; at once after a crash restart
            .set_restart_time(Some(Duration::from_secs(10)))
            .load();
    }
}

/// The naptime in effect, as a duration (None: the launcher is off).
fn naptime() -> Option<Duration> {
    let s = NAPTIME.get();
    (s > 0).then(|| Duration::from_secs(s.unsigned_abs().into()))
}

/// Pause before the next start in a database whose relay exited after
/// `failures` starts in a row: the naptime, doubling, at most 5 minutes.
pub fn retry_after(naptime: Duration, failures: u32) -> Duration {
    naptime.saturating_mul(1u32 << failures.min(16)).min(MAX_RETRY.max(naptime))
}

/// A database as pg_database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    pub oid: u32,
    pub name: String,
    pub allow_connections: bool,
    pub is_template: bool,
    /// -2: a database whose DROP DATABASE was interrupted (invalid)
    pub connection_limit: i32,
}

/// The database to run the scheduler in: `postgres` if it accepts
/// connections, else the oldest other one that does (pure).
pub fn scheduler_database(databases: &[Database]) -> Option<&Database> {
    let usable = |d: &&Database| {
        d.allow_connections && !d.is_template && d.connection_limit != pg_sys::DATCONNLIMIT_INVALID_DB
    };
    databases
        .iter()
        .filter(usable)
        .find(|d| d.name == "postgres")
        .or_else(|| databases.iter().filter(usable).min_by_key(|d| d.oid))
}

/// Every database in pg_database. Needs a transaction; reads only the
/// shared catalog, so it works without a database connection.
fn databases() -> Vec<Database> {
    let mut out = Vec::new();
    // SAFETY: a catalog heap scan in a transaction, as PostgreSQL's own
    // autovacuum launcher reads pg_database; every tuple is a
    // FormData_pg_database, read before the next systable_getnext
    unsafe {
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let scan = pg_sys::systable_beginscan(
            rel,
            pg_sys::InvalidOid,
            false,
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
        );
        loop {
            let tuple = pg_sys::systable_getnext(scan);
            if tuple.is_null() {
                break;
            }
            let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            if form.is_null() {
                continue;
            }
            let name = CStr::from_ptr((*form).datname.data.as_ptr()).to_string_lossy().into_owned();
            out.push(Database {
                oid: (*form).oid.to_u32(),
                name,
                allow_connections: (*form).datallowconn,
                is_template: (*form).datistemplate,
                connection_limit: (*form).datconnlimit,
            });
        }
        pg_sys::systable_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    }
    out
}

/// The scheduler the launcher started: its handle (in TopMemoryContext)
/// and when.
struct Scheduler {
    handle: *mut pg_sys::BackgroundWorkerHandle,
    database: String,
}

impl Scheduler {
    /// Still registered (starting or running)?
    fn alive(&self) -> bool {
        let mut pid: pg_sys::pid_t = 0;
        // SAFETY: the handle came from RegisterDynamicBackgroundWorker and
        // lives in TopMemoryContext until release()
        let status = unsafe { pg_sys::GetBackgroundWorkerPid(self.handle, &mut pid) };
        matches!(status, pg_sys::BgwHandleStatus::BGWH_STARTED | pg_sys::BgwHandleStatus::BGWH_NOT_YET_STARTED)
    }

    fn release(self) {
        // SAFETY: allocated by RegisterDynamicBackgroundWorker; not used again
        unsafe { pg_sys::pfree(self.handle.cast()) };
    }

    fn terminate(self) {
        // SAFETY: as in alive()
        unsafe { pg_sys::TerminateBackgroundWorker(self.handle) };
        self.release();
    }
}

/// Register the scheduler for `db`; its start and exit wake this process.
fn start_scheduler(db: &Database) -> Option<Scheduler> {
    let builder = BackgroundWorkerBuilder::new(SCHEDULER_TYPE)
        .set_type(SCHEDULER_TYPE)
        .set_library("storefront")
        .set_function("storefront_relay_scheduler_main")
        .set_argument(pg_sys::Oid::from(db.oid).into_datum())
        .enable_spi_access()
        .set_restart_time(None)
        .set_notify_pid(unsafe { pg_sys::MyProcPid });
    let mut worker: pg_sys::BackgroundWorker = (&builder).into();
    let mut handle: *mut pg_sys::BackgroundWorkerHandle = std::ptr::null_mut();
    // SAFETY: the handle is allocated in TopMemoryContext, which this
    // long-lived process keeps, and freed by Scheduler::release
    let registered = unsafe {
        PgMemoryContexts::TopMemoryContext.switch_to(|_| pg_sys::RegisterDynamicBackgroundWorker(&mut worker, &mut handle))
    };
    (registered && !handle.is_null()).then(|| Scheduler { handle, database: db.name.clone() })
}

/// The launcher's process: keep one scheduler running while the naptime is
/// not 0.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn storefront_relay_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // no database: pg_database is a shared catalog
    BackgroundWorker::connect_worker_to_spi(None, None);
    let mut scheduler: Option<Scheduler> = None;
    let mut last_start: Option<Instant> = None;
    let mut warned = false;
    loop {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if let Some(s) = scheduler.take() {
            if s.alive() {
                scheduler = Some(s);
            } else {
                s.release();
            }
        }
        let nap = naptime();
        // one start per naptime at most: a scheduler that cannot run (its
        // database went away under it) is tried again, elsewhere, later
        let due = last_start.is_none_or(|t| nap.is_some_and(|n| t.elapsed() >= n));
        if let (None, Some(_), true) = (&scheduler, nap, due) {
            match guarded(|| BackgroundWorker::transaction(databases)) {
                Ok(dbs) => match scheduler_database(&dbs) {
                    Some(db) => {
                        last_start = Some(Instant::now());
                        scheduler = start_scheduler(db);
                        match &scheduler {
                            Some(s) => pgrx::debug1!("storefront relay launcher: scheduler started in database \"{}\"", s.database),
                            None => pgrx::warning!(
                                "storefront relay launcher: could not start the relay scheduler: no background worker slot is free (max_worker_processes)"
                            ),
                        }
                        warned = false;
                    }
                    None if !warned => {
                        pgrx::warning!("storefront relay launcher: no database accepts connections; no relay is started");
                        warned = true;
                    }
                    None => {}
                },
                Err(message) => pgrx::log!("storefront relay launcher: {message}"),
            }
        }
        // woken by a reload (SIGHUP), the scheduler starting or exiting
        // (the postmaster's notification), or the timeout
        let wait = match (&scheduler, nap) {
            (_, None) => None,
            (None, Some(n)) => Some(n.saturating_sub(last_start.map(|t| t.elapsed()).unwrap_or_default()).max(Duration::from_millis(100))),
            (Some(_), Some(n)) => Some(n),
        };
        match guarded(|| BackgroundWorker::wait_latch(wait)) {
            Ok(true) | Err(_) => {}
            Ok(false) => break, // SIGTERM (shutdown, pg_terminate_backend), or the postmaster died
        }
    }
    if let Some(s) = scheduler {
        s.terminate();
    }
}

/// Which databases want a relay and whether one runs there. Run by the
/// scheduler with search_path pinned to pg_catalog (and every name
/// qualified all the same). Relay mode in effect for a database's sessions:
/// its own setting, else ALTER ROLE ALL's, else the configuration file's
/// (postgresql.conf, ALTER SYSTEM); or a role's own setting, which wins
/// over those for that role.
const WANTED_SQL: &str = "
WITH setting AS (
    SELECT s.setdatabase AS db, s.setrole AS role,
           pg_catalog.lower(pg_catalog.substr(c, pg_catalog.strpos(c, '=') + 1)) AS mode
    FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) AS c
    WHERE pg_catalog.lower(pg_catalog.split_part(c, '=', 1)) = 'storefront.event_delivery'
), server AS (
    SELECT coalesce((SELECT pg_catalog.lower(f.setting) FROM pg_catalog.pg_file_settings f
                     WHERE f.name = 'storefront.event_delivery' AND f.applied
                     ORDER BY f.seqno DESC LIMIT 1), 'notify') AS mode
)
SELECT d.oid, d.datname::text,
       EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
               WHERE a.datid = d.oid AND a.backend_type = $1) AS running
FROM pg_catalog.pg_database d
WHERE d.datallowconn AND NOT d.datistemplate AND d.datconnlimit <> -2
  AND (coalesce((SELECT s.mode FROM setting s WHERE s.db = d.oid AND s.role = 0),
                (SELECT s.mode FROM setting s WHERE s.db = 0 AND s.role = 0),
                (SELECT v.mode FROM server v)) = 'relay'
       OR EXISTS (SELECT 1 FROM setting s WHERE s.role <> 0 AND s.db IN (0, d.oid) AND s.mode = 'relay'))
ORDER BY d.oid";

/// Relays in databases that became templates or stopped taking
/// connections: a relay connected to a template keeps CREATE DATABASE ...
/// TEMPLATE from copying it, and one in a closed database keeps it from
/// emptying.
const UNWANTED_SQL: &str = "
SELECT d.datname::text, pg_catalog.pg_terminate_backend(a.pid)
FROM pg_catalog.pg_stat_activity a JOIN pg_catalog.pg_database d ON d.oid = a.datid
WHERE a.backend_type = $1 AND (d.datistemplate OR NOT d.datallowconn)";

/// The scheduler's memory of the relays it started that are not running.
#[derive(Debug, Default)]
pub struct Tries {
    /// database oid -> (last start, starts in a row that did not stay up)
    last: HashMap<u32, (Instant, u32)>,
}

impl Tries {
    /// Should a relay be started in `db` now, given whether one runs?
    pub fn due(&mut self, db: u32, running: bool, now: Instant, naptime: Duration) -> bool {
        if running {
            self.last.remove(&db);
            return false;
        }
        match self.last.get(&db) {
            None => true,
            Some(&(at, failures)) => now.duration_since(at) >= retry_after(naptime, failures.saturating_sub(1)),
        }
    }

    /// A relay was just started in `db`.
    pub fn started(&mut self, db: u32, now: Instant) {
        let failures = self.last.get(&db).map(|&(_, f)| f).unwrap_or(0);
        self.last.insert(db, (now, failures.saturating_add(1)));
    }

    /// Forget databases that no longer want a relay.
    pub fn retain(&mut self, wanted: &[u32]) {
        self.last.retain(|db, _| wanted.contains(db));
    }
}

/// One round of the scheduler: stop relays in templates and closed
/// databases, and start a relay in every database that wants one and has
/// none (and is not waiting for its next try).
fn schedule(tries: &mut Tries, naptime: Duration) -> Result<(), pgrx::spi::SpiError> {
    let stopped: Vec<Option<String>> = Spi::connect(|client| {
        client
            .select(UNWANTED_SQL, None, &[WORKER_TYPE.into()])?
            .map(|row| row.get::<String>(1))
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })?;
    for name in stopped.into_iter().flatten() {
        pgrx::log!("storefront relay scheduler: stopped the event relay of database \"{name}\": it is a template or does not allow connections");
    }
    let rows: Vec<(Option<pg_sys::Oid>, Option<String>, Option<bool>)> = Spi::connect(|client| {
        client
            .select(WANTED_SQL, None, &[WORKER_TYPE.into()])?
            .map(|row| Ok((row.get::<pg_sys::Oid>(1)?, row.get::<String>(2)?, row.get::<bool>(3)?)))
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })?;
    let now = Instant::now();
    let wanted: Vec<u32> = rows.iter().filter_map(|r| r.0.map(|o| o.to_u32())).collect();
    tries.retain(&wanted);
    for (oid, name, running) in rows {
        let (Some(oid), Some(name)) = (oid, name) else { continue };
        if !tries.due(oid.to_u32(), running.unwrap_or(false), now, naptime) {
            continue;
        }
        let first = !tries.last.contains_key(&oid.to_u32());
        tries.started(oid.to_u32(), now);
        match worker_builder(oid, RELAY_INTERVAL_MS).load_dynamic() {
            Ok(_) if first => pgrx::log!("storefront relay scheduler: starting the event relay for database \"{name}\""),
            Ok(_) => pgrx::debug1!("storefront relay scheduler: starting the event relay for database \"{name}\" again"),
            Err(_) => pgrx::warning!(
                "storefront relay scheduler: could not start the event relay for database \"{name}\": no background worker slot is free (max_worker_processes)"
            ),
        }
    }
    Ok(())
}

/// The scheduler's process, in the database the launcher chose: one round
/// every naptime; exits when the naptime is set to 0.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn storefront_relay_scheduler_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let Some(db) = (unsafe { pg_sys::Oid::from_datum(arg, false) }) else {
        return;
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    if let Err(message) = guarded(|| BackgroundWorker::transaction(pin_search_path)).and_then(|r| r.map_err(|e| e.to_string())) {
        pgrx::log!("storefront relay scheduler: {message}");
        return;
    }
    let mut tries = Tries::default();
    loop {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let Some(nap) = naptime() else {
            return; // the launcher is off
        };
        // on an error the round's bookkeeping may be half done: harmless
        let round = AssertUnwindSafe(&mut tries);
        match guarded(move || {
            let round = round;
            BackgroundWorker::transaction(move || {
                let round = round;
                schedule(round.0, nap)
            })
        }) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => pgrx::log!("storefront relay scheduler: {e}"),
            Err(message) => pgrx::log!("storefront relay scheduler: {message}"),
        }
        match guarded(|| BackgroundWorker::wait_latch(Some(nap))) {
            Ok(true) | Err(_) => {}
            Ok(false) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(oid: u32, name: &str) -> Database {
        Database { oid, name: name.into(), allow_connections: true, is_template: false, connection_limit: -1 }
    }

    #[test]
    fn scheduler_runs_in_postgres_else_the_oldest_usable_database() {
        let mut all = vec![db(1, "template1"), db(5, "postgres"), db(4, "template0"), db(16384, "shop")];
        all[0].is_template = true;
        all[2].is_template = true;
        all[2].allow_connections = false;
        assert_eq!(scheduler_database(&all).map(|d| d.name.as_str()), Some("postgres"));
        all[1].allow_connections = false;
        assert_eq!(scheduler_database(&all).map(|d| d.name.as_str()), Some("shop"));
        all.push(db(16000, "half_dropped"));
        all[4].connection_limit = -2;
        assert_eq!(scheduler_database(&all).map(|d| d.name.as_str()), Some("shop"));
        all[3].allow_connections = false;
        assert_eq!(scheduler_database(&all), None);
    }

    #[test]
    fn retries_double_from_the_naptime_up_to_five_minutes() {
        let n = Duration::from_secs(10);
        let secs: Vec<u64> = (0..7).map(|f| retry_after(n, f).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300]);
        // a naptime above the cap is the pause
        assert_eq!(retry_after(Duration::from_secs(600), 3), Duration::from_secs(600));
    }

    #[test]
    fn a_database_is_tried_again_later_each_time_its_relay_exits() {
        let n = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut tries = Tries::default();
        assert!(tries.due(7, false, t0, n));
        tries.started(7, t0);
        // its relay exited at once: not before one naptime
        assert!(!tries.due(7, false, t0 + Duration::from_secs(9), n));
        assert!(tries.due(7, false, t0 + Duration::from_secs(10), n));
        tries.started(7, t0 + Duration::from_secs(10));
        assert!(!tries.due(7, false, t0 + Duration::from_secs(29), n));
        assert!(tries.due(7, false, t0 + Duration::from_secs(30), n));
        // seen running: forgotten, so the next start (say after
        // stop_event_relay) is at the next round
        assert!(!tries.due(7, true, t0 + Duration::from_secs(40), n));
        assert!(tries.due(7, false, t0 + Duration::from_secs(41), n));
        // a database that no longer wants a relay is forgotten
        tries.started(8, t0);
        tries.retain(&[7]);
        assert!(tries.due(8, false, t0, n));
    }
}
