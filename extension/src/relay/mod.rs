//! How order events reach listeners: the `storefront.event_delivery`
//! setting, and the background worker that relays queued events
//! (`start_event_relay`). The queue and the relay function are SQL
//! (`sql/relay.sql`); the book page is `reference/relay.md`.

use crate::errors::{report, Kind, StoreError};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, SignalWakeFlags};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use pgrx::pg_sys::panic::ErrorReport;
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

fn running_worker() -> Result<Option<i32>, StoreError> {
    Ok(Spi::get_one::<i32>("SELECT min(p) FROM storefront.relay_worker_pids() p")?)
}

fn start(interval_ms: Option<i32>) -> Result<i32, StoreError> {
    let interval = check_interval(interval_ms)?;
    if let Some(pid) = running_worker()? {
        return Ok(pid);
    }
    let db = unsafe { pg_sys::MyDatabaseId };
    let worker = BackgroundWorkerBuilder::new(WORKER_TYPE)
        .set_type(WORKER_TYPE)
        .set_library("storefront")
        .set_function("storefront_event_relay_main")
        .set_argument(db.into_datum())
        .set_extra(&interval.to_string())
        .enable_spi_access()
        // a relay that fails (say, the extension was dropped under it) is
        // started again after 5 s; one that is told to stop is not
        .set_restart_time(Some(Duration::from_secs(5)))
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

/// The relay worker: connect to the database it was started for, claim the
/// relay role there, and every interval send what is queued.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn storefront_event_relay_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = unsafe { pg_sys::Oid::from_datum(arg, false) };
    BackgroundWorker::connect_worker_to_spi_by_oid(db, None);
    let interval = BackgroundWorker::get_extra().parse::<u64>().unwrap_or(10).max(1);

    let claimed = BackgroundWorker::transaction(|| {
        // A worker gets the database's settings, and a database's default
        // search_path may put a schema that others can create objects in
        // (public) before pg_catalog; the worker runs as a superuser, so
        // every name it looks up must resolve in pg_catalog first.
        Spi::run("SET search_path = pg_catalog, pg_temp")?;
        Spi::get_one_with_args::<bool>("SELECT pg_catalog.pg_try_advisory_lock($1)", &[WORKER_LOCK.into()])
    });
    if !matches!(claimed, Ok(Some(true))) {
        // another relay serves this database
        return;
    }
    while BackgroundWorker::wait_latch(Some(Duration::from_millis(interval))) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        // one transaction per tick: find the relay function, run it. An
        // error here ends the process with exit code 1; the postmaster
        // starts it again after the restart time.
        let present = BackgroundWorker::transaction(|| {
            let present = Spi::get_one::<bool>(
                "SELECT pg_catalog.to_regprocedure('storefront.relay_order_events(integer)') IS NOT NULL",
            );
            if matches!(present, Ok(Some(true))) {
                let _ = Spi::get_one::<i32>("SELECT storefront.relay_order_events()");
            }
            present
        });
        if !matches!(present, Ok(Some(true))) {
            // the extension is gone from this database: stop for good
            return;
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
}
