//! Rollups (downsampling), like TimescaleDB's continuous aggregates:
//! buckets of a source table materialized up to a watermark, stackable
//! (1 minute -> 1 hour -> 1 day) and exact, with a refresh whose cost
//! follows what changed rather than the span it covers.
//!
//! - `spec.rs`: the pure part (aggregate specs, every generated statement,
//!   the bucket arithmetic of dirty ranges), unit-tested without a database.
//! - `ddl.rs`: create, drop, repair; the capture triggers on the source.
//! - `capture.rs`: the statement triggers that record late changes.
//! - `refresh.rs`: advancing the watermark, merging deltas, rebuilding
//!   dirty buckets (and those whose retractions do not compose),
//!   invalidation and retention of buckets.
//!
//! How late data is handled. Rows at or after a rollup's watermark are its
//! tail: the next refresh aggregates them by time range, so ingesting them
//! costs nothing beyond a look at the watermark. A row inserted behind the
//! watermark is aggregated at once, per bucket and group, into a delta row
//! of `<name>_deltas`, and its bucket is queued clean in
//! `storefront.rollup_pending`; the refresh folds the deltas into their
//! buckets (counts and sums add, minima and maxima compose). An update or
//! delete behind the watermark is recorded the same way, as a retraction
//! of the old rows (negative counts and sums, the retracted extremes) and
//! the new rows; the refresh folds it in, and re-aggregates a bucket from
//! the source only when a retraction may not compose (an extreme that may
//! have left, a floating-point sum, a sum that may have become NULL). A
//! TRUNCATE queues the buckets it empties dirty, re-aggregated likewise.
//!
//! Locks, always in this order:
//! 1. the rollup's advisory lock (`lock_rollup`): writers to a source take
//!    it shared for every rollup of that source (in name order) before
//!    reading watermarks, and hold it to commit; advancing a watermark
//!    takes it exclusively, so no writer decides on a watermark that is
//!    about to move. It is a heavyweight lock: a waiting refresh queues
//!    ahead of later writers instead of starving.
//! 2. rows of `storefront.rollup_pending`: writers upsert them in bucket
//!    order; refreshes claim them with `FOR UPDATE SKIP LOCKED`, never
//!    waiting, so two refreshes work on disjoint buckets side by side.
//! 3. the bucket and delta tables, written only under a claimed bucket or
//!    the exclusive advisory lock.
//! A refresh advances first and works on pending buckets second, so it
//! never waits for the advisory lock while holding claimed buckets.
//!
//! Security: every statement that reads a source or writes a rollup's
//! tables runs as the owner of its bucket table, in a security-restricted
//! operation with a pinned search_path (`AsOwner`), as REFRESH
//! MATERIALIZED VIEW does; a trigger the owner puts on its tables never
//! runs with the privileges of whoever called the refresh or wrote to the
//! source.

pub mod capture;
pub mod ddl;
pub mod refresh;
pub mod spec;

use crate::errors::{report, Kind, StoreError, StoreResult};
use crate::timeseries::bucket::{self, Plan, Width};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use spec::{ident, not_found, parse_agg, Spec};

/// Runs what follows as `owner`, in a security-restricted operation with
/// `search_path = pg_catalog, pg_temp`, until dropped (or until the
/// transaction or subtransaction aborts, which restores both by itself).
pub struct AsOwner {
    user: pg_sys::Oid,
    context: i32,
    nest: i32,
}

impl AsOwner {
    pub fn enter(owner: pg_sys::Oid) -> AsOwner {
        let mut user = pg_sys::InvalidOid;
        let mut context = 0i32;
        // SAFETY: plain reads and writes of backend globals, as
        // RefreshMatViewByOid does around its queries
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::SetUserIdAndSecContext(
                owner,
                context | (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION) as i32,
            );
            let nest = pg_sys::NewGUCNestLevel();
            pg_sys::set_config_option(
                c"search_path".as_ptr(),
                c"pg_catalog, pg_temp".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
            AsOwner { user, context, nest }
        }
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        // SAFETY: restores what `enter` saved. While an error unwinds, the
        // (sub)transaction abort pops the GUC level itself.
        unsafe {
            if !std::thread::panicking() {
                pg_sys::AtEOXact_GUC(true, self.nest);
            }
            pg_sys::SetUserIdAndSecContext(self.user, self.context);
        }
    }
}

/// Run `f` as `owner` (see `AsOwner`).
pub fn as_owner<T>(owner: pg_sys::Oid, f: impl FnOnce() -> StoreResult<T>) -> StoreResult<T> {
    let _guard = AsOwner::enter(owner);
    f()
}

/// The first key of the rollups' advisory locks: the bytes of "SFRL".
const LOCK_SPACE: u32 = 0x5346_524c;

/// A stable 32-bit hash of a rollup name (FNV-1a), the second lock key.
pub fn name_key(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// Take a rollup's advisory lock to the end of the transaction: shared
/// (writers of its source) or exclusive (advancing its watermark). Waits
/// like any heavyweight lock: in queue order, under lock_timeout, with
/// deadlock detection.
pub fn lock_rollup(name: &str, exclusive: bool) {
    // SAFETY: builds an advisory LOCKTAG as SET_LOCKTAG_ADVISORY does and
    // takes it as pg_advisory_xact_lock(int4, int4) would
    unsafe {
        let tag = pg_sys::LOCKTAG {
            locktag_field1: pg_sys::MyDatabaseId.to_u32(),
            locktag_field2: LOCK_SPACE,
            locktag_field3: name_key(name),
            locktag_field4: 2,
            locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
            locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
        };
        let mode = if exclusive { pg_sys::ExclusiveLock } else { pg_sys::ShareLock };
        pg_sys::LockAcquire(&tag, mode as pg_sys::LOCKMODE, false, false);
    }
}

/// Does this transaction read through one snapshot (REPEATABLE READ or
/// SERIALIZABLE)?
pub fn uses_transaction_snapshot() -> bool {
    // SAFETY: reads a backend global
    unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 }
}

/// A rollup's row in storefront.rollup, with what its statements need.
#[derive(Debug, Clone)]
pub struct Meta {
    pub name: String,
    pub source_oid: pg_sys::Oid,
    /// the source, qualified and quoted; None when it no longer exists
    pub source_name: Option<String>,
    pub source_rollup: Option<String>,
    /// the finer rollup's real-time view, for a stacked rollup
    pub source_view: Option<String>,
    pub time_col: String,
    pub width: Width,
    pub groups: Vec<String>,
    pub aggs: Vec<String>,
    pub schema: String,
    pub watermark: i64,
    /// the owner of the bucket table; None when it no longer exists
    pub owner: Option<pg_sys::Oid>,
    /// the source's retention horizon (rows before it were dropped)
    pub horizon: Option<i64>,
}

const META_SQL: &str = "
SELECT r.name, r.source::oid, r.source_rollup, r.time_column, r.bucket_width, r.group_columns, r.aggregates,
       r.target_schema, r.watermark,
       (SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = r.source),
       (SELECT pg_catalog.format('%I.%I', f.target_schema, f.name) FROM storefront.rollup f WHERE f.name = r.source_rollup),
       (SELECT c.relowner FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = r.target_schema AND c.relname = r.name || '_buckets' AND c.relkind = 'r'),
       (SELECT p.horizon FROM storefront.retention_policy p
          WHERE p.relation = coalesce(r.source_rollup,
                                      CASE WHEN r.source = 'storefront.event'::pg_catalog.regclass THEN 'event' END))
FROM storefront.rollup r WHERE r.name = $1";

fn read_meta(row: &pgrx::spi::SpiHeapTupleData<'_>) -> StoreResult<Meta> {
    let iv: Interval = row.get(5)?.ok_or_else(|| StoreError::internal("rollup without width"))?;
    let wm: TimestampWithTimeZone = row.get(9)?.ok_or_else(|| StoreError::internal("rollup without watermark"))?;
    Ok(Meta {
        name: row.get(1)?.unwrap_or_default(),
        source_oid: row.get(2)?.unwrap_or(pg_sys::InvalidOid),
        source_rollup: row.get(3)?,
        time_col: row.get(4)?.unwrap_or_default(),
        width: Width::new(iv.months(), iv.days(), iv.micros()),
        groups: row.get::<Vec<String>>(6)?.unwrap_or_default(),
        aggs: row.get::<Vec<String>>(7)?.unwrap_or_default(),
        schema: row.get(8)?.unwrap_or_default(),
        watermark: wm.into_inner(),
        source_name: row.get(10)?,
        source_view: row.get(11)?,
        owner: row.get(12)?,
        horizon: row.get::<TimestampWithTimeZone>(13)?.map(|h| h.into_inner()),
    })
}

/// Load a rollup (a fresh snapshot in READ COMMITTED: SPI update()).
pub fn load(client: &mut SpiClient<'_>, name: &str) -> StoreResult<Meta> {
    let t = client.update(META_SQL, Some(1), &[name.into()])?;
    if t.is_empty() {
        return Err(not_found(name));
    }
    let row = t.first().get_heap_tuple()?.ok_or_else(|| not_found(name))?;
    read_meta(&row)
}

impl Meta {
    pub fn stacked(&self) -> bool {
        self.source_rollup.is_some()
    }
    pub fn plan(&self) -> StoreResult<Plan> {
        plan_of(self.width)
    }
    pub fn owner(&self) -> StoreResult<pg_sys::Oid> {
        self.owner.ok_or_else(|| {
            StoreError::new(
                Kind::UndefinedTable,
                format!("relation {}.{}_buckets of rollup \"{}\" does not exist", ident(&self.schema), self.name, self.name),
            )
            .hint("Drop the rollup with drop_rollup() and create it again.")
        })
    }
    /// The rollup's statements; reading the source needs it to exist.
    pub fn spec(&self) -> StoreResult<Spec> {
        let mut spec = self.own_spec()?;
        spec.source = self.source_name.clone().ok_or_else(|| {
            StoreError::new(
                Kind::UndefinedTable,
                format!("the source of rollup \"{}\" (OID {}) no longer exists", self.name, self.source_oid.to_u32()),
            )
            .hint("Drop the rollup with drop_rollup().")
        })?;
        Ok(spec)
    }

    /// The statements on the rollup's own tables only (retention works
    /// after the source is gone).
    pub fn own_spec(&self) -> StoreResult<Spec> {
        let aggs = self.aggs.iter().map(|a| parse_agg(a)).collect::<StoreResult<Vec<_>>>()?;
        Ok(Spec {
            name: self.name.clone(),
            schema: self.schema.clone(),
            source: String::new(),
            source_view: self.source_view.clone(),
            time_col: self.time_col.clone(),
            width: self.width,
            groups: self.groups.clone(),
            aggs,
        })
    }
}

pub fn plan_of(w: Width) -> StoreResult<Plan> {
    bucket::plan(w).map_err(|e| StoreError::invalid(e.to_string()).detail(format!("The width given was {w}.")))
}

pub fn ts_arg(v: i64) -> StoreResult<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(v).map_err(|_| StoreError::new(Kind::DatetimeOverflow, "timestamp out of range"))
}

pub fn ts_args(v: &[i64]) -> StoreResult<Vec<TimestampWithTimeZone>> {
    v.iter().map(|&t| ts_arg(t)).collect()
}

/// Bucket starts from an array column (NULL elements skipped).
pub fn ts_vec(v: Option<Vec<Option<TimestampWithTimeZone>>>) -> Vec<i64> {
    v.unwrap_or_default().into_iter().flatten().map(|t| t.into_inner()).collect()
}

// ------------------------------------------------------------ the API --

/// Define a rollup of `source` in buckets of `bucket_width`, grouped by
/// `group_columns`, keeping `aggregates` (count, sum(c), min(c), max(c),
/// avg(c)). Creates `<schema>.<name>_buckets` (the materialized buckets),
/// `<name>_deltas` (late inserts not merged yet), the real-time view
/// `<schema>.<name>` and the Grafana-shaped view `<name>_series`, all owned
/// by the calling role; returns the real-time view's name.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn create_rollup(
    name: Option<&str>,
    source: Option<crate::args::RegClass>,
    time_column: Option<&str>,
    bucket_width: Option<Interval>,
    group_columns: default!(Option<Vec<Option<String>>>, "'{}'"),
    aggregates: default!(Option<Vec<Option<String>>>, "'{count}'"),
    schema: default!(Option<&str>, "'storefront_rollups'"),
) -> Result<String, ErrorReport> {
    report(ddl::create(ddl::CreateArgs {
        name,
        source: source.map(|r| r.0),
        time_column,
        bucket_width,
        group_columns,
        aggregates,
        schema,
    }))
}

/// Materialize complete buckets up to `upto`, then fold in late inserts
/// and re-aggregate buckets that late updates and deletes touched; returns
/// the number of bucket rows written. Runs in the caller's transaction.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn refresh_rollup(
    name: Option<&str>,
    upto: default!(Option<TimestampWithTimeZone>, "now()"),
) -> Result<i64, ErrorReport> {
    report(refresh::refresh(name, upto.map(|t| t.into_inner())))
}

/// Drop a rollup: its views, tables, queued buckets, retention policy and
/// (when no other rollup needs them) the capture triggers on its source.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn drop_rollup(name: Option<&str>) -> Result<bool, ErrorReport> {
    report(ddl::drop(name))
}

/// Queue every bucket of a rollup that source times in [from_time,
/// to_time) fall in for re-aggregation at the next refresh (after changes
/// the capture triggers cannot see: ATTACH or DETACH PARTITION, writes
/// with triggers disabled). Returns the number of buckets queued.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn invalidate_rollup(
    name: Option<&str>,
    from_time: default!(Option<TimestampWithTimeZone>, "'-infinity'"),
    to_time: default!(Option<TimestampWithTimeZone>, "'infinity'"),
) -> Result<i64, ErrorReport> {
    report(refresh::invalidate(name, from_time.map(|t| t.into_inner()), to_time.map(|t| t.into_inner())))
}

/// One maintenance step: advance a rollup's watermark to `upto` (its own
/// transaction under CALL run_maintenance()). Returns bucket rows written.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn rollup_advance(name: Option<&str>, upto: default!(Option<TimestampWithTimeZone>, "now()")) -> Result<i64, ErrorReport> {
    report(refresh::advance_step(name, upto.map(|t| t.into_inner())))
}

/// One maintenance step: claim up to `batch` queued buckets of a rollup
/// (skipping those another refresh holds), merge or rebuild them. Returns
/// the number of buckets claimed.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn rollup_pending_step(name: Option<&str>, batch: default!(Option<i32>, "1000")) -> Result<i64, ErrorReport> {
    report(refresh::pending_step(name, batch))
}

/// Retention of a rollup: delete its buckets (and queued work) before
/// `cutoff`, as the rollup's owner. Returns the bucket rows deleted.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn rollup_drop_buckets(name: Option<&str>, cutoff: Option<TimestampWithTimeZone>) -> Result<i64, ErrorReport> {
    report(refresh::drop_buckets(name, cutoff.map(|t| t.into_inner())))
}

/// Bring a rollup's run-time objects up to this version: delta table,
/// bucket key, views, capture triggers. Used by upgrades; safe to repeat.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn rollup_repair(name: Option<&str>) -> Result<bool, ErrorReport> {
    report(ddl::repair(name))
}

/// Put the capture triggers on a new partition of a rollup source (used
/// by ensure_event_partitions); true when it needed them.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn rollup_arm(relation: Option<crate::args::RegClass>) -> Result<bool, ErrorReport> {
    report(ddl::arm_new_relation(relation.map(|r| r.0)))
}

/// Start of CALL run_maintenance(): refuses a transaction block (the
/// procedure commits between steps) and returns the run's id.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn maintenance_begin() -> Result<i64, ErrorReport> {
    // SAFETY: reads backend state
    if unsafe { pg_sys::IsTransactionBlock() } {
        return Err(StoreError::new(Kind::ActiveSqlTransaction, "run_maintenance cannot run inside a transaction block")
            .detail("It commits after each step, so that no step holds locks for the whole run.")
            .hint("CALL it on its own, or use refresh_rollup() inside a transaction.")
            .into());
    }
    report(Spi::connect_mut(|client| {
        client.update(
            "DELETE FROM storefront.maintenance_log WHERE finished_at < pg_catalog.now() - interval '30 days'",
            None,
            &[],
        )?;
        let t = client.update("SELECT pg_catalog.nextval('storefront.maintenance_run_seq')", Some(1), &[])?;
        t.first().get::<i64>(1)?.ok_or_else(|| StoreError::internal("nextval returned NULL"))
    }))
}

/// The capture trigger of rollup sources (see capture.rs).
#[pg_trigger]
fn rollup_capture<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, PgHeapTupleError> {
    if let Err(e) = capture::run(trigger) {
        ErrorReport::from(e).report(pgrx::PgLogLevel::ERROR);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lock_keys_are_stable() {
        // FNV-1a of "" and "a" (the published test vectors)
        assert_eq!(super::name_key(""), 0x811c_9dc5);
        assert_eq!(super::name_key("a"), 0xe40c_292c);
    }
}
