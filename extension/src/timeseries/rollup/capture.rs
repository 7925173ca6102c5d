//! The capture triggers of rollup sources: statement-level, with
//! transition tables, on the source and on every partition or child of it
//! (a write straight into a partition fires the partition's triggers, a
//! write through the parent fires the parent's; never both).
//!
//! Per statement, for every rollup of the written relation (its source is
//! the relation or an ancestor), in name order:
//! - take the rollup's advisory lock shared, then read its watermark;
//! - INSERT: inserted rows behind the watermark become delta rows (one per
//!   bucket and group) and their buckets are queued clean; when every row
//!   is at or past the watermark (the usual case) nothing more happens;
//! - UPDATE and DELETE: old rows behind the watermark are retracted and
//!   new rows behind it added, as delta rows (negative counts and sums, the
//!   retracted extremes), and their buckets queued clean; the refresh
//!   re-aggregates only those whose retractions do not compose (see
//!   `Spec::merge_sql`);
//! - TRUNCATE (before it runs): the buckets of every row behind the
//!   watermark are queued dirty.
//! Reads of the written rows and writes of the delta table run as the
//! rollup's owner (see `AsOwner`); queueing runs as the extension's owner.

use super::spec::Spec;
use super::{as_owner, lock_rollup, ts_arg, ts_vec, uses_transaction_snapshot};
use crate::errors::{StoreError, StoreResult};
use crate::spi_util::{plan, T};
use crate::timeseries::bucket::Width;
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::trigger_support::PgTriggerOperation;

/// The rollups whose source is `$1` or one of its ancestors, in name
/// order, with what capture needs.
const ROLLUPS_OF: &str = "
WITH RECURSIVE up(rel) AS (
    SELECT $1::pg_catalog.oid
    UNION
    SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid = up.rel
)
SELECT r.name, r.time_column, r.watermark, r.bucket_width, r.group_columns, r.aggregates, r.target_schema,
       (SELECT c.relowner FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = r.target_schema AND c.relname = r.name || '_buckets' AND c.relkind = 'r')
FROM storefront.rollup r
WHERE r.source_rollup IS NULL AND r.source::pg_catalog.oid IN (SELECT rel FROM up)
ORDER BY r.name";

const KEY_SHARE: &str = "SELECT 1 FROM storefront.rollup r WHERE r.name = $1 FOR KEY SHARE OF r";

/// Queue buckets of a rollup; a dirty mark wins over a clean one. Rows
/// are written in bucket order, so concurrent writers lock them in one
/// order.
pub const QUEUE: &str = "
INSERT INTO storefront.rollup_pending AS p (rollup_name, bucket, dirty)
SELECT $1, b, $3 FROM pg_catalog.unnest($2::timestamptz[]) AS b ORDER BY b
ON CONFLICT (rollup_name, bucket) DO UPDATE SET dirty = true WHERE excluded.dirty AND NOT p.dirty";

pub fn queue(client: &mut SpiClient<'_>, name: &str, buckets: &[i64], dirty: bool) -> StoreResult<()> {
    if buckets.is_empty() {
        return Ok(());
    }
    let args: Vec<TimestampWithTimeZone> = super::ts_args(buckets)?;
    let p = plan(client, QUEUE, &[T::TEXTOID, T::TIMESTAMPTZARRAYOID, T::BOOLOID])?;
    client.update(&*p, None, &[name.into(), args.into(), dirty.into()])?;
    Ok(())
}

struct Target {
    name: String,
    time_col: String,
    watermark: i64,
    owner: Option<pg_sys::Oid>,
    spec: Spec,
}

fn targets(client: &mut SpiClient<'_>, relid: pg_sys::Oid) -> StoreResult<Vec<Target>> {
    let p = plan(client, ROLLUPS_OF, &[T::OIDOID])?;
    let mut out = Vec::new();
    for row in client.update(&*p, None, &[relid.into()])? {
        let name: String = row.get(1)?.unwrap_or_default();
        let time_col: String = row.get(2)?.unwrap_or_default();
        let watermark = row.get::<TimestampWithTimeZone>(3)?.map(|t| t.into_inner()).unwrap_or(i64::MIN);
        let iv: Interval = row.get(4)?.ok_or_else(|| StoreError::internal("rollup without width"))?;
        let groups: Vec<String> = row.get(5)?.unwrap_or_default();
        let aggs: Vec<String> = row.get(6)?.unwrap_or_default();
        let schema: String = row.get(7)?.unwrap_or_default();
        let owner: Option<pg_sys::Oid> = row.get(8)?;
        let spec = Spec {
            name: name.clone(),
            schema,
            // capture reads transition tables, never the source by name
            source: String::new(),
            source_view: None,
            time_col: time_col.clone(),
            width: Width::new(iv.months(), iv.days(), iv.micros()),
            groups,
            aggs: aggs.iter().map(|a| super::spec::parse_agg(a)).collect::<StoreResult<Vec<_>>>()?,
        };
        out.push(Target { name, time_col, watermark, owner, spec });
    }
    Ok(out)
}

fn first_array(client: &mut SpiClient<'_>, sql: &str, wm: i64) -> StoreResult<Vec<i64>> {
    let t = client.update(sql, Some(1), &[ts_arg(wm)?.into()])?;
    if t.is_empty() {
        return Ok(Vec::new());
    }
    Ok(ts_vec(t.first().get::<Vec<Option<TimestampWithTimeZone>>>(1)?))
}

pub fn run(trigger: &pgrx::PgTrigger<'_>) -> StoreResult<()> {
    let relid = trigger.relid().map_err(|e| StoreError::internal(e.to_string()))?;
    let op = trigger.op().map_err(|e| StoreError::internal(e.to_string()))?;
    let rel_name = if matches!(op, PgTriggerOperation::Truncate) {
        let schema = trigger.table_schema().map_err(|e| StoreError::internal(e.to_string()))?;
        let table = trigger.table_name().map_err(|e| StoreError::internal(e.to_string()))?;
        format!("{}.{}", super::spec::ident(&schema), super::spec::ident(&table))
    } else {
        String::new()
    };
    Spi::connect_mut(|client| {
        // SAFETY: makes this trigger's transition tables visible to the
        // SPI connection just opened, as PL/pgSQL does
        unsafe {
            pg_sys::SPI_register_trigger_data(trigger.trigger_data() as *const pg_sys::TriggerData as *mut pg_sys::TriggerData);
        }
        let first = targets(client, relid)?;
        if first.is_empty() {
            return Ok(());
        }
        for t in &first {
            lock_rollup(&t.name, false);
        }
        if uses_transaction_snapshot() {
            // one snapshot for the whole transaction: a watermark moved
            // since it was taken makes this fail (40001) instead of deciding
            // on the old one
            let p = plan(client, KEY_SHARE, &[T::TEXTOID])?;
            for t in &first {
                client.update(&*p, None, &[t.name.as_str().into()])?;
            }
        }
        // the watermarks now (a new snapshot in READ COMMITTED), of the
        // rollups locked above; one created meanwhile starts at -infinity
        let locked: Vec<String> = first.into_iter().map(|t| t.name).collect();
        let now: Vec<Target> = targets(client, relid)?.into_iter().filter(|t| locked.contains(&t.name)).collect();

        match op {
            PgTriggerOperation::Insert => {
                // the earliest inserted time per time column decides
                let mut earliest: Vec<(String, Option<i64>)> = Vec::new();
                for t in &now {
                    if t.watermark == i64::MIN {
                        continue;
                    }
                    let Some(owner) = t.owner else { continue };
                    let min = match earliest.iter().find(|(c, _)| *c == t.time_col) {
                        Some((_, m)) => *m,
                        None => {
                            let sql = t.spec.min_time_sql();
                            let m = as_owner(owner, || {
                                let r = client.update(sql.as_str(), Some(1), &[])?;
                                Ok(if r.is_empty() { None } else { r.first().get::<TimestampWithTimeZone>(1)?.map(|v| v.into_inner()) })
                            })?;
                            earliest.push((t.time_col.clone(), m));
                            m
                        }
                    };
                    if !matches!(min, Some(m) if m < t.watermark) {
                        continue;
                    }
                    let sql = t.spec.capture_insert_sql();
                    let buckets = as_owner(owner, || first_array(client, &sql, t.watermark))?;
                    queue(client, &t.name, &buckets, false)?;
                }
            }
            PgTriggerOperation::Update | PgTriggerOperation::Delete => {
                let updated = matches!(op, PgTriggerOperation::Update);
                for t in &now {
                    if t.watermark == i64::MIN {
                        continue;
                    }
                    let Some(owner) = t.owner else { continue };
                    let sql = t.spec.capture_change_sql(updated);
                    let buckets = as_owner(owner, || first_array(client, &sql, t.watermark))?;
                    queue(client, &t.name, &buckets, false)?;
                }
            }
            PgTriggerOperation::Truncate => {
                // a truncated relation is read as its own owner (who may read
                // it and whose code is all it can run)
                let r = client.update("SELECT relowner FROM pg_catalog.pg_class WHERE oid = $1", Some(1), &[relid.into()])?;
                let rel_owner: Option<pg_sys::Oid> = if r.is_empty() { None } else { r.first().get::<pg_sys::Oid>(1)? };
                for t in &now {
                    if t.watermark == i64::MIN {
                        continue;
                    }
                    let Some(owner) = rel_owner.or(t.owner) else { continue };
                    let sql = t.spec.touched_buckets_sql(&[rel_name.as_str()]);
                    let buckets = as_owner(owner, || first_array(client, &sql, t.watermark))?;
                    queue(client, &t.name, &buckets, true)?;
                }
            }
        }
        Ok(())
    })
}
