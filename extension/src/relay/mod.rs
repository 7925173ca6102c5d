//! How order events reach listeners: the `storefront.event_delivery`
//! setting, and the background worker that relays queued events
//! (`start_event_relay`, or the launcher when the library is preloaded:
//! `launcher.rs`). The queue and the relay function are SQL
//! (`sql/relay.sql`); the book page is `reference/relay.md`.

pub mod launcher;

use crate::errors::{report, Kind, StoreError};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, SignalWakeFlags};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::pg_sys::PgTryBuilder;
use pgrx::prelude::*;
use std::time::Duration;

/// Where a status change's event goes.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Delivery {
    /// `pg_notify` in the changing transaction, delivered at its commit.
    #[name = c"notify"]
    Notify,
    /// Appended to `order_event_queue`; a relay sends it after the commit.
    #[name = c"relay"]
    Relay,
}

pub static EVENT_DELIVERY: GucSetting<Delivery> = GucSetting::<Delivery>::new(Delivery::Notify);

/// The background worker's type, as `pg_stat_activity.backend_type` shows it.
pub const WORKER_TYPE: &str = "storefront event relay";

/// Session advisory lock a relay worker holds for its database: the bytes
/// of "sfworker". A second worker for the same database exits at once.
const WORKER_LOCK: i64 = 8_315_465_082_530_915_698;

/// Bounds of the worker's wake-up interval, in milliseconds.
pub const MIN_INTERVAL_MS: i32 = 1;
pub const MAX_INTERVAL_MS: i32 = 60_000;

pub fn init() {
    GucRegistry::define_enum_guc(
        c"storefront.event_delivery",
        c"How order status events reach LISTENers on storefront_order_events.",
        c"notify: pg_notify in the changing transaction, delivered at its commit (PostgreSQL serializes the commits of notifying transactions). relay: the event is queued in storefront.order_event_queue and a relay (start_event_relay() or relay_order_events()) sends it with NOTIFY after the commit, in batches.",
        &EVENT_DELIVERY,
        GucContext::Suset,
        GucFlags::default(),
    );
    launcher::init();
}

/// The delivery mode in effect for this call.
pub fn delivery() -> Delivery {
    EVENT_DELIVERY.get()
}

/// Check the interval a caller asked for (pure).
pub fn check_interval(ms: Option<i32>) -> Result<i32, StoreError> {
    match ms {
        Some(ms) if (MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms) => Ok(ms),
        other => Err(StoreError::invalid(format!(
            "relay interval must be between {MIN_INTERVAL_MS} and {MAX_INTERVAL_MS} milliseconds"
        ))
        .detail(format!(
            "The interval given was {}.",
            other.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into())
        ))),
    }
}

/// Start the relay worker for the current database, or return the one
/// already running; returns its process id.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn start_event_relay(interval_ms: default!(Option<i32>, 10)) -> Result<i32, ErrorReport> {
    report(start(interval_ms))
}

/// The relay worker for database `db`, sending every `interval_ms`.
///
/// The postmaster never restarts it (`BGW_NEVER_RESTART`): an error in one
/// round is logged and the worker carries on, so it only ends when told to
/// (SIGTERM: `stop_event_relay()`, `DROP DATABASE ... WITH (FORCE)`,
/// shutdown), when the extension is not installed in `db`, or with the
/// server. A restarted worker would try to connect to `db` again, and once
/// `db` is dropped that fails at every restart, for good. The launcher
/// (`launcher.rs`) starts a new relay where one is wanted and none runs.
pub(crate) fn worker_builder(db: pg_sys::Oid, interval_ms: i32) -> BackgroundWorkerBuilder {
    BackgroundWorkerBuilder::new(WORKER_TYPE)
        .set_type(WORKER_TYPE)
        .set_library("storefront")
        .set_function("storefront_event_relay_main")
        .set_argument(db.into_datum())
        .set_extra(&interval_ms.to_string())
        .enable_spi_access()
        .set_restart_time(None)
}

fn running_worker() -> Result<Option<i32>, StoreError> {
    Ok(Spi::get_one::<i32>("SELECT min(p) FROM storefront.relay_worker_pids() p")?)
}

fn start(interval_ms: Option<i32>) -> Result<i32, StoreError> {
    let interval = check_interval(interval_ms)?;
    if let Some(pid) = running_worker()? {
        return Ok(pid);
    }
    let db = unsafe { pg_sys::MyDatabaseId };
    let worker = worker_builder(db, interval)
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .map_err(|_| {
            StoreError::new(Kind::InsufficientResources, "could not start the event relay worker")
                .detail("No background worker slot is free.")
                .hint("Raise max_worker_processes, or run storefront.relay_order_events() from pg_cron instead.")
        })?;
    let pid = match worker.wait_for_startup() {
        Ok(pid) => pid,
        Err(BackgroundWorkerStatus::PostmasterDied) => return Err(StoreError::internal("postmaster died")),
        Err(status) => {
            return Err(StoreError::new(Kind::InsufficientResources, "the event relay worker did not start")
                .detail(format!("Its status is {status:?}."))
                .hint("The server log says why."))
        }
    };
    // Return once the worker has connected to this database, so that
    // event_relay_status() and stop_event_relay() see it from now on. A
    // worker that finds another relay serving the database exits; then
    // that one is the answer.
    for _ in 0..200 {
        let (connected, any) = Spi::get_two_with_args::<bool, i32>(
            "SELECT coalesce(bool_or(p = $1), false), min(p) FROM storefront.relay_worker_pids() p",
            &[pid.into()],
        )?;
        if connected == Some(true) {
            return Ok(pid);
        }
        if let Some(other) = any {
            return Ok(other);
        }
        Spi::run("SELECT pg_catalog.pg_sleep(0.025)")?;
    }
    Err(StoreError::new(Kind::InsufficientResources, "the event relay worker did not connect")
        .detail(format!("Process {pid} started but did not connect to the database within 5 seconds."))
        .hint("The server log says why."))
}

/// Run `f`, catching an ERROR it raises: the transaction it was in (if any)
/// is rolled back and the error's message returned. For background
/// workers, where an uncaught ERROR ends the process.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Result<T, String> {
    PgTryBuilder::new(move || Ok(f()))
        .catch_others(|e| {
            // SAFETY: called in the worker's own process, outside any
            // PG_TRY of PostgreSQL's; a no-op when no transaction is open
            unsafe { pg_sys::AbortCurrentTransaction() };
            Err(match e {
                CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r.message().to_string(),
                CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
            })
        })
        .execute()
}

/// Pin the search path of a background worker's session. A worker gets the
/// database's settings, and a database's default search_path may put a
/// schema that others can create objects in (public) before pg_catalog;
/// the worker runs as a superuser, so every name it looks up must resolve
/// in pg_catalog first.
pub(crate) fn pin_search_path() -> Result<(), pgrx::spi::SpiError> {
    Spi::run("SET search_path = pg_catalog, pg_temp")
}

/// Pause after a failed round: 1 s, doubling up to a minute.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

/// What one round of the relay found.
enum Round {
    /// The extension is installed; queued events were sent.
    Sent,
    /// The extension is not installed in this database (any more).
    NoExtension,
}

/// The relay worker: connect to the database it was started for, claim the
/// relay role there, and every interval send what is queued.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn storefront_event_relay_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let Some(db) = (unsafe { pg_sys::Oid::from_datum(arg, false) }) else {
        return;
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    let interval = Duration::from_millis(BackgroundWorker::get_extra().parse::<u64>().unwrap_or(10).max(1));

    let claimed = guarded(|| {
        BackgroundWorker::transaction(|| {
            pin_search_path()?;
            Spi::get_one_with_args::<bool>("SELECT pg_catalog.pg_try_advisory_lock($1)", &[WORKER_LOCK.into()])
        })
    });
    match claimed {
        Ok(Ok(Some(true))) => {}
        Ok(_) => return, // another relay serves this database
        Err(message) => {
            pgrx::log!("storefront event relay: could not start: {message}");
            return;
        }
    }
    let mut failures = 0u32;
    let mut wait = interval;
    loop {
        // a cancel request (pg_cancel_backend) raises an ERROR at the
        // wait's interrupt check: it ends the round, not the worker
        match guarded(|| BackgroundWorker::wait_latch(Some(wait))) {
            Ok(true) | Err(_) => {}
            Ok(false) => return, // SIGTERM, or the postmaster died
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        // one transaction per round: find the relay function, run it
        let round = guarded(|| {
            BackgroundWorker::transaction(|| -> Result<Round, pgrx::spi::SpiError> {
                let present = Spi::get_one::<bool>(
                    "SELECT pg_catalog.to_regprocedure('storefront.relay_order_events(integer)') IS NOT NULL",
                )?;
                if present != Some(true) {
                    return Ok(Round::NoExtension);
                }
                Spi::get_one::<i32>("SELECT storefront.relay_order_events()")?;
                Ok(Round::Sent)
            })
        });
        match round {
            Ok(Ok(Round::Sent)) => {
                failures = 0;
                wait = interval;
            }
            Ok(Ok(Round::NoExtension)) => {
                pgrx::debug1!("storefront event relay: the extension is not installed in this database; exiting");
                return;
            }
            Ok(Err(e)) => {
                wait = backoff(failures);
                failures += 1;
                pgrx::log!("storefront event relay: {e}; retrying in {} s", wait.as_secs());
            }
            Err(message) => {
                wait = backoff(failures);
                failures += 1;
                pgrx::log!("storefront event relay: {message}; retrying in {} s", wait.as_secs());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_bounds() {
        assert_eq!(check_interval(Some(1)).ok(), Some(1));
        assert_eq!(check_interval(Some(60_000)).ok(), Some(60_000));
        assert!(check_interval(Some(0)).is_err());
        assert!(check_interval(Some(-5)).is_err());
        assert!(check_interval(Some(60_001)).is_err());
        assert!(check_interval(None).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let secs: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
