//! Refreshing a rollup: advance the watermark over the tail, then work
//! through queued buckets (fold deltas into clean ones, re-aggregate dirty
//! ones and the clean ones whose retractions do not compose), then queue
//! the coarser rollups' buckets that changed with them.
//!
//! `refresh_rollup()` does it all in the caller's transaction (inside a
//! transaction block or a function too). `CALL run_maintenance()` runs the
//! same steps (`rollup_advance`, then `rollup_pending_step` in batches),
//! each in its own transaction, so no step holds a lock for long.
//!
//! Why READ COMMITTED only: a writer decides "tail or late" on the
//! watermark it reads after taking the rollup's lock; the advance reads the
//! tail after taking the lock exclusively. Each needs a snapshot taken
//! after its lock, which REPEATABLE READ does not give.

use super::capture::queue;
use super::ddl::arm_tree;
use super::spec::{bucket_start_saturating, dirty_ranges, first_whole_bucket, Spec};
use super::{as_owner, load, lock_rollup, ts_arg, ts_args, ts_vec, uses_transaction_snapshot, Meta};
use crate::errors::{Kind, StoreError, StoreResult};
use crate::timeseries::bucket;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::collections::BTreeSet;

/// Buckets claimed per batch by refresh_rollup().
const BATCH: i64 = 1000;

fn check_isolation() -> StoreResult<()> {
    if uses_transaction_snapshot() {
        return Err(StoreError::new(Kind::FeatureNotSupported, "refreshing a rollup requires READ COMMITTED")
            .detail("Under REPEATABLE READ or SERIALIZABLE the refresh would read a snapshot older than the changes it must account for.")
            .hint("Run it in a READ COMMITTED transaction."));
    }
    Ok(())
}

fn count(client: &mut SpiClient<'_>, sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> StoreResult<i64> {
    let t = client.update(sql, Some(1), args)?;
    Ok(if t.is_empty() { 0 } else { t.first().get::<i64>(1)?.unwrap_or(0) })
}

fn array(client: &mut SpiClient<'_>, sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> StoreResult<Vec<i64>> {
    let t = client.update(sql, Some(1), args)?;
    if t.is_empty() {
        return Ok(Vec::new());
    }
    Ok(ts_vec(t.first().get::<Vec<Option<TimestampWithTimeZone>>>(1)?))
}

pub fn refresh(name: Option<&str>, upto: Option<i64>) -> StoreResult<i64> {
    let name = name.ok_or_else(|| StoreError::null("name"))?;
    let upto = upto.ok_or_else(|| StoreError::null("upto"))?;
    check_isolation()?;
    Spi::connect_mut(|client| {
        let mut written = advance(client, name, upto)?;
        loop {
            let (claimed, w) = work(client, name, BATCH)?;
            written += w;
            if claimed < BATCH {
                break;
            }
        }
        Ok(written)
    })
}

pub fn advance_step(name: Option<&str>, upto: Option<i64>) -> StoreResult<i64> {
    let name = name.ok_or_else(|| StoreError::null("name"))?;
    let upto = upto.ok_or_else(|| StoreError::null("upto"))?;
    check_isolation()?;
    Spi::connect_mut(|client| advance(client, name, upto))
}

pub fn pending_step(name: Option<&str>, batch: Option<i32>) -> StoreResult<i64> {
    let name = name.ok_or_else(|| StoreError::null("name"))?;
    let batch = batch.ok_or_else(|| StoreError::null("batch"))?;
    if !(1..=100_000).contains(&batch) {
        return Err(StoreError::invalid("batch must be between 1 and 100000").detail(format!("The batch given was {batch}.")));
    }
    check_isolation()?;
    Spi::connect_mut(|client| Ok(work(client, name, batch as i64)?.0))
}

/// The capture triggers must be on every relation of a raw source's tree
/// (a restored dump lacks them on extension tables; a new partition of a
/// user's table starts without them). Where they were missing, changes
/// went unseen: the whole source when the source itself lacked them (every
/// materialized bucket and every bucket with rows is queued dirty), else
/// the rows now in the re-armed relations.
fn ensure_capture(client: &mut SpiClient<'_>, m: &Meta) -> StoreResult<()> {
    if m.stacked() || m.source_name.is_none() {
        return Ok(());
    }
    let armed = arm_tree(client, m.source_oid)?;
    for (rel, rel_name) in armed {
        // every raw rollup of a source above this relation missed changes
        let t = client.update(
            "WITH RECURSIVE up(rel) AS (
                 SELECT $1::pg_catalog.oid
                 UNION
                 SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid = up.rel
             )
             SELECT r.name FROM storefront.rollup r
             WHERE r.source_rollup IS NULL AND r.source::pg_catalog.oid IN (SELECT rel FROM up) ORDER BY r.name",
            None,
            &[rel.into()],
        )?;
        let mut names = Vec::new();
        for row in t {
            names.push(row.get::<String>(1)?.unwrap_or_default());
        }
        for n in names {
            let r = load(client, &n)?;
            if r.watermark == i64::MIN {
                continue;
            }
            let spec = r.spec()?;
            let buckets = if rel == r.source_oid {
                let plan = r.plan()?;
                let sql = spec.invalidate_sql();
                as_owner(r.owner()?, || {
                    array(
                        client,
                        &sql,
                        &[
                            ts_arg(bucket::NOBEGIN)?.into(),
                            ts_arg(bucket::NOEND)?.into(),
                            ts_arg(r.watermark)?.into(),
                            ts_arg(bucket_start_saturating(plan, bucket::NOBEGIN))?.into(),
                        ],
                    )
                })?
            } else {
                let owner_row = client.update("SELECT relowner FROM pg_catalog.pg_class WHERE oid = $1", Some(1), &[rel.into()])?;
                let Some(owner) = owner_row.first().get::<pg_sys::Oid>(1)? else { continue };
                let sql = spec.touched_buckets_sql(&[rel_name.as_str()]);
                as_owner(owner, || array(client, &sql, &[ts_arg(r.watermark)?.into()]))?
            };
            queue(client, &n, &buckets, true)?;
        }
    }
    Ok(())
}

/// Materialize the buckets between the watermark and `upto` (for a
/// stacked rollup, no further than the finer rollup's watermark).
fn advance(client: &mut SpiClient<'_>, name: &str, upto: i64) -> StoreResult<i64> {
    let m = load(client, name)?;
    let plan = m.plan()?;
    ensure_capture(client, &m)?;
    let mut target = bucket_start_saturating(plan, upto);
    if let Some(fine) = &m.source_rollup {
        let f = load(client, fine)?;
        target = target.min(bucket_start_saturating(plan, f.watermark));
    }
    if target <= m.watermark {
        return Ok(0);
    }
    // writers of the source finish deciding on the old watermark first;
    // later ones wait and see the new one
    lock_rollup(name, true);
    let m = load(client, name)?;
    if target <= m.watermark {
        return Ok(0);
    }
    let spec = m.spec()?;
    let sql = spec.advance_sql();
    let written = as_owner(m.owner()?, || {
        count(client, &sql, &[ts_arg(m.watermark)?.into(), ts_arg(target)?.into()])
    })?;
    let t = client.update(
        "UPDATE storefront.rollup SET watermark = $2, refreshed_at = pg_catalog.now() WHERE name = $1 RETURNING 1",
        None,
        &[name.into(), ts_arg(target)?.into()],
    )?;
    if t.len() != 1 {
        return Err(StoreError::new(Kind::SerializationFailure, format!("rollup \"{name}\" was dropped concurrently")));
    }
    Ok(written)
}

/// Claim queued buckets. The locking subquery is a CTE, run exactly once:
/// as the inner side of a semi join it would be rescanned per outer row,
/// each rescan skipping only other sessions' locks, and claim them all.
const CLAIM: &str = "
WITH claim AS MATERIALIZED (
    SELECT q.bucket FROM storefront.rollup_pending q WHERE q.rollup_name = $1
    ORDER BY q.bucket LIMIT $2 FOR UPDATE SKIP LOCKED
)
DELETE FROM storefront.rollup_pending p USING claim
WHERE p.rollup_name = $1 AND p.bucket = claim.bucket
RETURNING p.bucket, p.dirty";

/// Claim up to `batch` queued buckets and bring them up to date; returns
/// (buckets claimed, bucket rows written).
fn work(client: &mut SpiClient<'_>, name: &str, batch: i64) -> StoreResult<(i64, i64)> {
    let m = load(client, name)?;
    let mut claimed: Vec<(i64, bool)> = Vec::new();
    for row in client.update(CLAIM, None, &[name.into(), batch.into()])? {
        let b: Option<TimestampWithTimeZone> = row.get(1)?;
        let dirty: bool = row.get(2)?.unwrap_or(true);
        if let Some(b) = b {
            claimed.push((b.into_inner(), dirty));
        }
    }
    if claimed.is_empty() {
        return Ok((0, 0));
    }
    claimed.sort_unstable();
    let n = claimed.len() as i64;
    let plan = m.plan()?;
    let spec: Spec = m.spec()?;
    // buckets before the source's retention horizon lost rows to it: never
    // re-aggregated (that would erase them), only merged
    let first_whole = first_whole_bucket(plan, m.width, m.horizon);
    let live: Vec<(i64, bool)> = claimed.into_iter().filter(|(b, _)| *b < m.watermark).collect();
    let mut rebuild: Vec<i64> = live.iter().filter(|(b, d)| *d && *b >= first_whole).map(|(b, _)| *b).collect();
    let merge: Vec<i64> = live.iter().filter(|(b, d)| !*d || *b < first_whole).map(|(b, _)| *b).collect();
    let owner = m.owner()?;
    let mut written = 0;
    if !merge.is_empty() && !m.stacked() {
        // deltas first: the buckets whose retractions do not compose come
        // back, to be re-aggregated with the dirty ones
        let sql = spec.merge_sql();
        let (w, redo, retracted) = as_owner(owner, || {
            let t = client.update(sql.as_str(), Some(1), &[ts_args(&merge)?.into(), ts_arg(first_whole)?.into()])?;
            if t.is_empty() {
                return Ok((0, Vec::new(), 0));
            }
            let row = t.first();
            Ok((
                row.get::<i64>(1)?.unwrap_or(0),
                ts_vec(row.get::<Vec<Option<TimestampWithTimeZone>>>(2)?),
                row.get::<i64>(3)?.unwrap_or(0),
            ))
        })?;
        written += w;
        // only a retraction brings a group's count to zero
        if retracted > 0 {
            let sql = spec.prune_sql();
            as_owner(owner, || count(client, &sql, &[ts_args(&merge)?.into()]))?;
        }
        rebuild.extend(redo);
        rebuild.sort_unstable();
        rebuild.dedup();
    }
    if !rebuild.is_empty() {
        let ranges = dirty_ranges(plan, m.width, &rebuild);
        let lo: Vec<i64> = ranges.iter().map(|r| r.0).collect();
        let hi: Vec<i64> = ranges.iter().map(|r| r.1).collect();
        let indexed = {
            let t = client.update(spec.time_index_sql().as_str(), Some(1), &[m.source_oid.into()])?;
            !t.is_empty() && t.first().get::<bool>(1)?.unwrap_or(false)
        };
        let sql = spec.rebuild_sql(indexed);
        written += as_owner(owner, || {
            count(client, &sql, &[ts_args(&lo)?.into(), ts_args(&hi)?.into(), ts_args(&rebuild)?.into()])
        })?;
    }
    let changed: Vec<i64> = live.iter().map(|(b, _)| *b).collect();
    propagate(client, name, &changed)?;
    Ok((n, written))
}

/// Coarser rollups built on this one re-read the buckets that changed
/// (those behind their watermark are queued dirty).
fn propagate(client: &mut SpiClient<'_>, name: &str, changed: &[i64]) -> StoreResult<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let t = client.update("SELECT name FROM storefront.rollup WHERE source_rollup = $1 ORDER BY name", None, &[name.into()])?;
    let mut children = Vec::new();
    for row in t {
        children.push(row.get::<String>(1)?.unwrap_or_default());
    }
    for child in children {
        lock_rollup(&child, false);
        let c = load(client, &child)?;
        let plan = c.plan()?;
        let coarse: BTreeSet<i64> =
            changed.iter().map(|&b| bucket_start_saturating(plan, b)).filter(|&b| b < c.watermark).collect();
        let coarse: Vec<i64> = coarse.into_iter().collect();
        queue(client, &child, &coarse, true)?;
    }
    Ok(())
}

pub fn invalidate(name: Option<&str>, from: Option<i64>, to: Option<i64>) -> StoreResult<i64> {
    let name = name.ok_or_else(|| StoreError::null("name"))?;
    let from = from.ok_or_else(|| StoreError::null("from_time"))?;
    let to = to.ok_or_else(|| StoreError::null("to_time"))?;
    if from >= to {
        return Ok(0);
    }
    Spi::connect_mut(|client| {
        let m = load(client, name)?;
        if m.watermark == i64::MIN {
            return Ok(0);
        }
        let plan = m.plan()?;
        let spec = m.spec()?;
        let sql = spec.invalidate_sql();
        let buckets = as_owner(m.owner()?, || {
            array(
                client,
                &sql,
                &[
                    ts_arg(bucket_start_saturating(plan, from))?.into(),
                    ts_arg(to)?.into(),
                    ts_arg(m.watermark)?.into(),
                    ts_arg(from)?.into(),
                ],
            )
        })?;
        queue(client, name, &buckets, true)?;
        Ok(buckets.len() as i64)
    })
}

pub fn drop_buckets(name: Option<&str>, cutoff: Option<i64>) -> StoreResult<i64> {
    let name = name.ok_or_else(|| StoreError::null("name"))?;
    let cutoff = cutoff.ok_or_else(|| StoreError::null("cutoff"))?;
    Spi::connect_mut(|client| {
        let m = load(client, name)?;
        let spec = m.own_spec()?;
        let sql = spec.drop_buckets_sql();
        let n = as_owner(m.owner()?, || count(client, &sql, &[ts_arg(cutoff)?.into()]))?;
        client.update(
            "DELETE FROM storefront.rollup_pending WHERE rollup_name = $1 AND bucket < $2",
            None,
            &[name.into(), ts_arg(cutoff)?.into()],
        )?;
        Ok(n)
    })
}
