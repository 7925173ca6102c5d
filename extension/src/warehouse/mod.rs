//! The warehouse: a generic SCD Type 2 merge (`scd2_upsert`) and the
//! pure parts of the incremental loader. The star schema, the loader and
//! the reports are SQL (sql/warehouse.sql); the planning of a merge is in
//! `scd2.rs` (pure), this file only reads the catalog and runs the plan.

pub mod load;
pub mod scd2;

use crate::args::RegClass;
use crate::errors::{report, Kind, StoreError, StoreResult};
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use scd2::{Col, Deletes, Index, Late, Plan, Rel, Request, TypeFacts};
use std::collections::HashMap;

/// Merge `source` into the SCD Type 2 table `target`: new keys get a first
/// version, keys whose tracked columns changed get a new version (the
/// current one is closed where the new one starts), unchanged keys stay as
/// they are; see the book's reference page for every rule.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn scd2_upsert(
    target: Option<RegClass>,
    source: Option<RegClass>,
    key_columns: Option<Vec<Option<String>>>,
    tracked_columns: Option<Vec<Option<String>>>,
    as_of: default!(Option<TimestampWithTimeZone>, "now()"),
    changed_at_column: default!(Option<&str>, "NULL"),
    deletes: default!(Option<&str>, "'ignore'"),
    late_changes: default!(Option<&str>, "'split'"),
) -> Result<
    TableIterator<'static, (name!(inserted, i64), name!(versioned, i64), name!(unchanged, i64), name!(closed, i64))>,
    ErrorReport,
> {
    let r = upsert_inner(target, source, key_columns, tracked_columns, as_of, changed_at_column, deletes, late_changes);
    report(r).map(|(a, b, c, d)| TableIterator::new(vec![(a, b, c, d)]))
}

#[allow(clippy::too_many_arguments)]
fn upsert_inner(
    target: Option<RegClass>,
    source: Option<RegClass>,
    key_columns: Option<Vec<Option<String>>>,
    tracked_columns: Option<Vec<Option<String>>>,
    as_of: Option<TimestampWithTimeZone>,
    changed_at_column: Option<&str>,
    deletes: Option<&str>,
    late_changes: Option<&str>,
) -> StoreResult<(i64, i64, i64, i64)> {
    let target = target.ok_or_else(|| StoreError::null("target"))?.0;
    let source = source.ok_or_else(|| StoreError::null("source"))?.0;
    let key_columns = key_columns.ok_or_else(|| StoreError::null("key_columns"))?;
    let tracked_columns = tracked_columns.ok_or_else(|| StoreError::null("tracked_columns"))?;
    let as_of = as_of.ok_or_else(|| StoreError::null("as_of"))?;
    if !as_of.is_finite() {
        return Err(StoreError::new(Kind::DatetimeOverflow, "as_of must be a finite time"));
    }
    let req = Request {
        key_columns: &key_columns,
        tracked_columns: &tracked_columns,
        changed_at_column,
        deletes: Deletes::parse(deletes)?,
        late: Late::parse(late_changes)?,
    };
    Spi::connect_mut(|client| {
        let t = relation(client, target)?;
        let s = relation(client, source)?;
        let facts = PgFacts::load(client, &t)?;
        let plan = scd2::plan(&req, &t, &s, &facts)?;
        // one merge per target at a time; readers never wait (the lock
        // wait is bounded by the function's lock_timeout: 55P03)
        client.update(format!("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", t.sql).as_str(), None, &[])?;
        run(client, &plan, &req, as_of)
    })
}

/// Check the source, then merge: fast path, slow path, deletes.
fn run(client: &mut SpiClient<'_>, plan: &Plan, req: &Request<'_>, as_of: TimestampWithTimeZone) -> StoreResult<(i64, i64, i64, i64)> {
    let args: [DatumWithOid; 1] = [as_of.into()];
    // ------------------------------------------------------------ checks
    let row = client.select(plan.validate.as_str(), Some(1), &args)?.first();
    let n_source: i64 = row.get(1)?.unwrap_or(0);
    let key_names: Vec<String> = req.key_columns.iter().flatten().cloned().collect();
    for (i, k) in key_names.iter().enumerate() {
        let nulls: i64 = row.get(2 + i)?.unwrap_or(0);
        if nulls > 0 {
            return Err(scd2::null_key_error(&plan.source_display, k, nulls));
        }
    }
    if let Some(c) = req.changed_at_column {
        let base = 2 + key_names.len();
        let nulls: i64 = row.get(base)?.unwrap_or(0);
        if nulls > 0 {
            return Err(scd2::null_time_error(&plan.source_display, c, nulls));
        }
        let infinite: i64 = row.get(base + 1)?.unwrap_or(0);
        if infinite > 0 {
            return Err(StoreError::new(Kind::DatetimeOverflow, format!("change times of source \"{}\" must be finite", plan.source_display))
                .detail(format!("{infinite} row(s) have an infinite \"{c}\".")));
        }
        let later: i64 = row.get(base + 2)?.unwrap_or(0);
        if later > 0 {
            return Err(StoreError::invalid(format!("source \"{}\" has changes after as_of", plan.source_display))
                .detail(format!("{later} row(s) have \"{c}\" later than as_of; a batch cannot change the future."))
                .hint("Pass a later as_of, or leave those rows for a later batch."));
        }
    }
    if let Some(dups) = &plan.duplicates {
        let mut found = Vec::new();
        for r in client.select(dups.as_str(), None, &args)? {
            found.push(r.get::<String>(1)?.unwrap_or_default());
        }
        if !found.is_empty() {
            return Err(scd2::duplicate_error(&plan.source_display, &found, req.changed_at_column.is_some()));
        }
    }

    // --------------------------------------------------------- fast path
    drop_stage(client)?;
    // a statement creating a table takes no parameters: as_of as a literal
    let as_of_text: String = client.select("SELECT $1::timestamptz::text", Some(1), &args)?.first().get(1)?.unwrap_or_default();
    let stage = plan.stage.replace("$1::timestamptz", &format!("{}::timestamptz", scd2::literal(&as_of_text)));
    // without JIT: the plan counts the history probe of keys without a
    // current version as if it ran for every source row, which puts a
    // merge of a large source far above jit_above_cost; compiling its
    // expressions then took longer (0.6 s of a 1M-row merge) than they
    // save. Without hash joins when both sides are btree-indexed on the
    // key (see scd2::plan). The caller's settings are restored after the
    // statement; set_config(.., true) also reverts with an aborted
    // (sub)transaction.
    let mut settings = vec!["jit"];
    if plan.merge_join {
        settings.push("enable_hashjoin");
    }
    let mut saved: Vec<(&str, Option<String>)> = Vec::new();
    for name in settings {
        let was: Option<String> = client.select("SELECT pg_catalog.current_setting($1)", Some(1), &[name.into()])?.first().get(1)?;
        client.select("SELECT pg_catalog.set_config($1, 'off', true)", Some(1), &[name.into()])?;
        saved.push((name, was));
    }
    client.update(stage.as_str(), None, &[])?;
    for (name, was) in saved {
        if let Some(was) = was {
            client.select("SELECT pg_catalog.set_config($1, $2, true)", Some(1), &[name.into(), was.as_str().into()])?;
        }
    }
    let closes_done = client.update(plan.close.as_str(), None, &[])?.len() as i64;
    let rows_inserted = client.update(plan.insert.as_str(), None, &[])?.len() as i64;
    let row = client.select(plan.tally.as_str(), Some(1), &[])?.first();
    let mut inserted: i64 = row.get(1)?.unwrap_or(0);
    let versions: i64 = row.get(2)?.unwrap_or(0);
    let closes_expected: i64 = row.get(3)?.unwrap_or(0);
    let late_rows: i64 = row.get(4)?.unwrap_or(0);
    drop_stage(client)?;
    if closes_expected != closes_done || rows_inserted != versions {
        return Err(concurrent(&plan.target_display, closes_expected + versions, closes_done + rows_inserted));
    }
    let mut versioned = versions - inserted;
    let mut unchanged = n_source - versions - late_rows;

    // --------------------------------------------------------- slow path
    if late_rows > 0 {
        let mut keys: Vec<Vec<String>> = Vec::new();
        for r in client.select(plan.late_keys.as_str(), None, &args)? {
            let k: Vec<Option<String>> = r.get(1)?.unwrap_or_default();
            keys.push(k.into_iter().map(Option::unwrap_or_default).collect());
        }
        if req.late == Late::Reject && !keys.is_empty() {
            let mut lines = Vec::new();
            for k in keys.iter().take(6) {
                lines.push(late_line(client, plan, k, as_of)?);
            }
            return Err(scd2::late_error(&plan.target_display, &lines));
        }
        let mut slow_rows = 0;
        for k in &keys {
            let times: Vec<TimestampWithTimeZone> = {
                let key_arg: [DatumWithOid; 3] = [k.clone().into(), as_of.into(), as_of.into()];
                let mut v = Vec::new();
                for r in client.select(plan.key_times.as_str(), None, &key_arg)? {
                    if let Some(ts) = r.get::<TimestampWithTimeZone>(1)? {
                        v.push(ts);
                    }
                }
                v
            };
            for ts in times {
                slow_rows += 1;
                match apply_row(client, plan, k, ts, as_of)? {
                    Outcome::Unchanged => unchanged += 1,
                    Outcome::Versioned => versioned += 1,
                    Outcome::Inserted => inserted += 1,
                }
            }
        }
        // rows of late keys that the covering versions already matched
        unchanged += late_rows - slow_rows;
    }

    // ----------------------------------------------------------- deletes
    let mut closed = 0;
    if let Some(sql) = &plan.deletes {
        let row = client.update(sql.as_str(), Some(1), &args)?.first();
        closed = row.get::<i64>(1)?.unwrap_or(0);
        let tombstones: i64 = row.get(2)?.unwrap_or(0);
        if req.deletes == Deletes::Version && tombstones != closed {
            return Err(concurrent(&plan.target_display, closed, tombstones));
        }
    }
    Ok((inserted, versioned, unchanged.max(0), closed))
}

/// Drop the staging table of an earlier call in this transaction.
fn drop_stage(client: &mut SpiClient<'_>) -> StoreResult<()> {
    let exists = client
        .select("SELECT to_regclass($1) IS NOT NULL", Some(1), &[scd2::STAGE.into()])?
        .first()
        .get::<bool>(1)?
        .unwrap_or(false);
    if exists {
        client.update(format!("DROP TABLE {}", scd2::STAGE).as_str(), None, &[])?;
    }
    Ok(())
}

fn concurrent(target: &str, expected: i64, got: i64) -> StoreError {
    StoreError::new(Kind::SerializationFailure, format!("could not serialize access due to a concurrent change of \"{target}\""))
        .detail(format!("The merge should have changed {expected} row(s) but changed {got}."))
        .hint("Retry the call in a new transaction.")
}

enum Outcome {
    Unchanged,
    Versioned,
    Inserted,
}

/// One source row of a late key, against the history as it is now.
fn apply_row(
    client: &mut SpiClient<'_>,
    plan: &Plan,
    key: &[String],
    ts: TimestampWithTimeZone,
    as_of: TimestampWithTimeZone,
) -> StoreResult<Outcome> {
    let key: Vec<String> = key.to_vec();
    let args = |aux: Option<TimestampWithTimeZone>, flag: bool| -> [DatumWithOid<'static>; 5] {
        [key.clone().into(), ts.into(), as_of.into(), aux.into(), flag.into()]
    };
    let cover = client.select(plan.cover.as_str(), Some(1), &args(None, false))?;
    let cover = if cover.is_empty() {
        None
    } else {
        let r = cover.first();
        Some((
            r.get::<TimestampWithTimeZone>(1)?,
            r.get::<TimestampWithTimeZone>(2)?,
            r.get::<bool>(3)?.unwrap_or(false),
            r.get::<bool>(4)?.unwrap_or(false),
            r.get::<bool>(5)?.unwrap_or(false),
        ))
    };
    let one = |client: &mut SpiClient<'_>, sql: &str, a: [DatumWithOid<'static>; 5]| -> StoreResult<()> {
        let n = client.update(sql, None, &a)?.len() as i64;
        if n != 1 {
            return Err(concurrent(&plan.target_display, 1, n));
        }
        Ok(())
    };
    match cover {
        Some((_, _, _, false, true)) => Ok(Outcome::Unchanged),
        Some((Some(from), _, _, _, _)) if from.into_inner() == ts.into_inner() => match &plan.correct {
            Some(sql) => {
                one(client, sql, args(None, false))?;
                Ok(Outcome::Versioned)
            }
            None => Ok(Outcome::Unchanged),
        },
        Some((from, to, current, _, _)) => {
            one(client, &plan.split_close, args(from, false))?;
            one(client, &plan.insert_row, args(to, current))?;
            Ok(Outcome::Versioned)
        }
        None => {
            let next: Option<TimestampWithTimeZone> = client
                .select(plan.next_start.as_str(), Some(1), &args(None, false))?
                .first()
                .get(1)?;
            let current = next.is_none();
            let to = next.unwrap_or_else(TimestampWithTimeZone::positive_infinity);
            one(client, &plan.insert_row, args(Some(to), current))?;
            Ok(Outcome::Inserted)
        }
    }
}

/// "Key (id)=(3) changes at ..., before its current version (from ...)."
fn late_line(client: &mut SpiClient<'_>, plan: &Plan, key: &[String], as_of: TimestampWithTimeZone) -> StoreResult<String> {
    let a: [DatumWithOid; 3] = [key.to_vec().into(), as_of.into(), as_of.into()];
    let first: Option<TimestampWithTimeZone> = client.select(plan.key_times.as_str(), Some(1), &a)?.first().get(1)?;
    let first_text: Option<String> = match first {
        Some(ts) => {
            let t: [DatumWithOid; 1] = [ts.into()];
            client.select("SELECT $1::timestamptz::text", Some(1), &t)?.first().get(1)?
        }
        None => None,
    };
    let a: [DatumWithOid; 1] = [key.to_vec().into()];
    let current = client.select(plan.current_start.as_str(), Some(1), &a)?;
    let current: Option<String> = if current.is_empty() { None } else { current.first().get(1)? };
    let key_text = format!("Key {}=({})", plan.key_list, key.join(", "));
    Ok(match current {
        Some(c) => format!("{key_text} changes at {}, before its current version (from {c}).", first_text.unwrap_or_default()),
        None => format!("{key_text} changes at {}, inside its closed history.", first_text.unwrap_or_default()),
    })
}

/// A relation's name, kind, columns and plain indexes; 42P01 when the OID
/// names none.
fn relation(client: &SpiClient<'_>, oid: pg_sys::Oid) -> StoreResult<Rel> {
    let a: [DatumWithOid; 1] = [oid.into()];
    let head = client.select(
        "SELECT format('%I.%I', n.nspname, c.relname), c.relname::text, c.relkind::text
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        Some(1),
        &a,
    )?;
    if head.is_empty() {
        return Err(StoreError::new(Kind::UndefinedTable, format!("relation with OID {} does not exist", oid.to_u32())));
    }
    let head = head.first();
    let sql: String = head.get(1)?.unwrap_or_default();
    let display: String = head.get(2)?.unwrap_or_default();
    let kind: String = head.get(3)?.unwrap_or_default();
    let mut columns = Vec::new();
    for r in client.select(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.atttypid, a.atttypmod, a.attnotnull,
                a.atthasdef, a.attidentity <> '', a.attgenerated <> ''
         FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        None,
        &a,
    )? {
        columns.push(Col {
            name: r.get(1)?.unwrap_or_default(),
            type_sql: r.get(2)?.unwrap_or_default(),
            type_oid: r.get::<pg_sys::Oid>(3)?.map(|o| o.to_u32()).unwrap_or(0),
            typmod: r.get(4)?.unwrap_or(-1),
            not_null: r.get(5)?.unwrap_or(false),
            has_default: r.get(6)?.unwrap_or(false),
            identity: r.get(7)?.unwrap_or(false),
            generated: r.get(8)?.unwrap_or(false),
        });
    }
    let mut indexes = Vec::new();
    for r in client.select(
        "SELECT i.indisunique AND i.indimmediate,
                array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
                      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o),
                (SELECT m.amname = 'btree' FROM pg_class x JOIN pg_am m ON m.oid = x.relam WHERE x.oid = i.indexrelid)
         FROM pg_index i
         WHERE i.indrelid = $1 AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indisvalid",
        None,
        &a,
    )? {
        let unique: bool = r.get(1)?.unwrap_or(false);
        let cols: Vec<Option<String>> = r.get(2)?.unwrap_or_default();
        let ordered: bool = r.get(3)?.unwrap_or(false);
        indexes.push(Index { columns: cols.into_iter().flatten().collect(), unique, ordered });
    }
    Ok(Rel { sql, display, kind: kind.chars().next().unwrap_or(' '), columns, indexes })
}

/// Type facts from PostgreSQL: assignment casts (can_coerce_type) and each
/// target column type's equality operator (the type cache), qualified.
struct PgFacts {
    eq: HashMap<u32, Option<String>>,
}

impl PgFacts {
    fn load(client: &SpiClient<'_>, target: &Rel) -> StoreResult<PgFacts> {
        let mut eq = HashMap::new();
        for c in &target.columns {
            if eq.contains_key(&c.type_oid) {
                continue;
            }
            // SAFETY: a type that exists (it is a column's); the type cache
            // entry lives for the backend
            let op = unsafe {
                let entry = pg_sys::lookup_type_cache(pg_sys::Oid::from(c.type_oid), pg_sys::TYPECACHE_EQ_OPR as i32);
                if entry.is_null() {
                    pg_sys::InvalidOid
                } else {
                    (*entry).eq_opr
                }
            };
            let name = if op == pg_sys::InvalidOid {
                None
            } else {
                let a: [DatumWithOid; 1] = [op.into()];
                client
                    .select(
                        "SELECT format('OPERATOR(%I.%s)', n.nspname, o.oprname)
                         FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace WHERE o.oid = $1",
                        Some(1),
                        &a,
                    )?
                    .first()
                    .get::<String>(1)?
            };
            eq.insert(c.type_oid, name);
        }
        Ok(PgFacts { eq })
    }
}

impl TypeFacts for PgFacts {
    fn assignable(&self, from: u32, to: u32) -> bool {
        let (from, to) = (pg_sys::Oid::from(from), pg_sys::Oid::from(to));
        // SAFETY: plain catalog lookups on two type OIDs
        unsafe { pg_sys::can_coerce_type(1, &from, &to, pg_sys::CoercionContext::COERCION_ASSIGNMENT) }
    }
    fn equality(&self, type_oid: u32) -> Option<String> {
        self.eq.get(&type_oid).cloned().flatten()
    }
}
