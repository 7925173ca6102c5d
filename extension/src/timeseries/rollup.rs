//! Rollups (downsampling), like TimescaleDB's continuous aggregates:
//! buckets of a source table materialized up to a watermark, refreshed
//! incrementally, re-aggregated where late, updated or deleted source rows
//! invalidated them, stackable (1 minute -> 1 hour -> 1 day) and exact,
//! because every stored aggregate composes: counts and sums add, minima and
//! maxima take the min and max, averages are kept as sum + count.
//!
//! This file holds the pure part — parsing aggregate specs and generating
//! the SQL of a rollup — and the SPI part that runs it. Metadata lives in
//! storefront.rollup and storefront.rollup_invalidation (sql/rollups.sql).

use super::bucket::{self, Plan, Width};
use crate::errors::{Kind, StoreError, StoreResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFn {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agg {
    pub f: AggFn,
    pub col: Option<String>,
}

/// A quoted SQL identifier (always quoted, so keywords are safe too).
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A quoted SQL string literal (standard_conforming_strings).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn ident_ok(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 48
}

/// "count", "sum(col)", "min(col)", "max(col)", "avg(col)".
pub fn parse_agg(spec: &str) -> StoreResult<Agg> {
    let s = spec.trim().to_ascii_lowercase();
    let bad = || {
        StoreError::invalid(format!("invalid aggregate \"{spec}\""))
            .hint("Use count, sum(column), min(column), max(column) or avg(column).")
    };
    if s == "count" || s == "count(*)" {
        return Ok(Agg { f: AggFn::Count, col: None });
    }
    let (name, rest) = s.split_once('(').ok_or_else(bad)?;
    let col = rest.strip_suffix(')').ok_or_else(bad)?.trim();
    if !ident_ok(col) {
        return Err(bad());
    }
    let f = match name.trim() {
        "sum" => AggFn::Sum,
        "min" => AggFn::Min,
        "max" => AggFn::Max,
        "avg" => AggFn::Avg,
        _ => return Err(bad()),
    };
    Ok(Agg { f, col: Some(col.to_string()) })
}

pub fn normalize_name(name: &str) -> StoreResult<String> {
    if ident_ok(name) {
        Ok(name.to_string())
    } else {
        Err(StoreError::invalid(format!("invalid rollup name \"{name}\""))
            .detail("A rollup name has 1 to 48 lower-case letters, digits or underscores, and starts with a letter or underscore."))
    }
}

/// A stored column: its name and how it aggregates from the raw source and
/// from a finer rollup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub name: String,
    pub raw: String,
    pub stacked: String,
}

/// The stored columns for a list of aggregates (always `n`, the row count;
/// each column once).
pub fn stored_columns(aggs: &[Agg]) -> Vec<Stored> {
    let mut out = vec![Stored { name: "n".into(), raw: "count(*)::bigint".into(), stacked: "sum(n)::bigint".into() }];
    let mut push = |name: String, raw: String, stacked: String| {
        if !out.iter().any(|s| s.name == name) {
            out.push(Stored { name, raw, stacked });
        }
    };
    for a in aggs {
        let Some(c) = &a.col else { continue };
        let q = ident(c);
        match a.f {
            AggFn::Count => {}
            AggFn::Sum => push(format!("sum_{c}"), format!("sum({q})"), format!("sum(sum_{c})")),
            AggFn::Min => push(format!("min_{c}"), format!("min({q})"), format!("min(min_{c})")),
            AggFn::Max => push(format!("max_{c}"), format!("max({q})"), format!("max(max_{c})")),
            AggFn::Avg => {
                push(format!("sum_{c}"), format!("sum({q})"), format!("sum(sum_{c})"));
                push(format!("n_{c}"), format!("count({q})::bigint"), format!("sum(n_{c})::bigint"));
            }
        }
    }
    out
}

/// Finalized columns of the view beyond the stored ones: averages.
pub fn final_columns(aggs: &[Agg]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for a in aggs {
        if let (AggFn::Avg, Some(c)) = (a.f, &a.col) {
            let name = format!("avg_{c}");
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, format!("sum_{c} / nullif(n_{c}, 0)")));
            }
        }
    }
    out
}

/// Everything needed to generate a rollup's SQL.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub schema: String,
    /// the source relation, qualified and quoted
    pub source: String,
    /// for a stacked rollup: the source rollup's real-time view
    pub source_view: Option<String>,
    pub time_col: String,
    pub width: Width,
    pub groups: Vec<String>,
    pub aggs: Vec<Agg>,
}

impl Spec {
    pub fn stacked(&self) -> bool {
        self.source_view.is_some()
    }
    pub fn table(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&format!("{}_buckets", self.name)))
    }
    pub fn view(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }
    /// The width as an SQL interval literal.
    pub fn width_sql(&self) -> String {
        format!("{}::interval", literal(&self.width.to_string()))
    }
    fn group_by(&self) -> String {
        (1..=self.groups.len() + 1).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
    }
    fn stored(&self) -> Vec<Stored> {
        stored_columns(&self.aggs)
    }

    /// SELECT of the buckets of [lo, hi) (parameters $1, $2) from `from`,
    /// with the time expression `time` (raw column, or `bucket`).
    fn aggregate_from(&self, from: &str, time: &str, cond: &str) -> String {
        let t = ident(time);
        let mut cols = vec![format!("storefront.rollup_bucket({}, {t}) AS bucket", self.width_sql())];
        cols.extend(self.groups.iter().map(|g| ident(g)));
        for s in self.stored() {
            let expr = if self.stacked() { s.stacked } else { s.raw };
            cols.push(format!("{expr} AS {}", ident(&s.name)));
        }
        format!("SELECT {} FROM {from} WHERE {cond} GROUP BY {}", cols.join(", "), self.group_by())
    }

    fn source_time(&self) -> &str {
        if self.stacked() {
            "bucket"
        } else {
            &self.time_col
        }
    }

    /// The buckets of [$1, $2), computed from the materialized source.
    pub fn select_range_sql(&self) -> String {
        let t = ident(self.source_time());
        self.aggregate_from(&self.source, self.source_time(), &format!("{t} >= $1 AND {t} < $2"))
    }

    /// CREATE TABLE for the materialized buckets (types inferred from the
    /// aggregate query itself) with its primary key.
    pub fn create_table_sql(&self) -> Vec<String> {
        let t = ident(self.source_time());
        let probe = self.aggregate_from(&self.source, self.source_time(), &format!("{t} IS NULL AND false"));
        let pk: Vec<String> =
            std::iter::once("bucket".to_string()).chain(self.groups.iter().map(|g| ident(g))).collect();
        vec![
            format!("CREATE TABLE {} AS {probe} WITH NO DATA", self.table()),
            format!("ALTER TABLE {} ALTER COLUMN bucket SET NOT NULL", self.table()),
            format!(
                "CREATE UNIQUE INDEX {} ON {} ({})",
                ident(&format!("{}_buckets_key", self.name)),
                self.table(),
                pk.join(", ")
            ),
        ]
    }

    /// The real-time view: materialized buckets below the watermark, plus
    /// the source's not-yet-materialized tail aggregated on the fly.
    pub fn create_view_sql(&self) -> String {
        let wm = format!("storefront.rollup_watermark({})", literal(&self.name));
        let stored = self.stored();
        let mut cols = vec!["bucket".to_string()];
        cols.extend(self.groups.iter().map(|g| ident(g)));
        cols.extend(stored.iter().map(|s| ident(&s.name)));
        let col_list = cols.join(", ");
        let (tail_from, tail_time) = match &self.source_view {
            Some(v) => (v.as_str(), "bucket"),
            None => (self.source.as_str(), self.time_col.as_str()),
        };
        let tail = self.aggregate_from(tail_from, tail_time, &format!("{} >= {wm}", ident(tail_time)));
        let mut outer = vec![col_list.clone()];
        outer.extend(final_columns(&self.aggs).into_iter().map(|(n, e)| format!("{e} AS {}", ident(&n))));
        format!(
            "CREATE VIEW {} AS SELECT {} FROM (SELECT {col_list} FROM {} WHERE bucket < {wm} UNION ALL {tail}) r",
            self.view(),
            outer.join(", "),
            self.table()
        )
    }
}

/// The bucket range [start of lo's bucket, end of hi's bucket) that a
/// change to source times [lo, hi] invalidates. Total: any stored times,
/// infinite or at the edges of the timestamp range, give a range (widened
/// to -infinity / infinity where a bucket edge would leave the range), so
/// no source row can make a refresh fail.
pub fn invalidated_range(plan: Plan, w: Width, lo: i64, hi: i64) -> (i64, i64) {
    use bucket::{END_TIMESTAMP, MIN_TIMESTAMP, NOBEGIN, NOEND};
    let a = if lo <= MIN_TIMESTAMP || lo >= END_TIMESTAMP {
        if lo >= END_TIMESTAMP { bucket_start_saturating(plan, END_TIMESTAMP - 1) } else { NOBEGIN }
    } else {
        bucket_start_saturating(plan, lo)
    };
    let end = if hi < MIN_TIMESTAMP {
        // only -infinity rows: everything before the first real time
        MIN_TIMESTAMP
    } else if hi >= END_TIMESTAMP {
        NOEND
    } else {
        let b = bucket_start_saturating(plan, hi);
        let next = match plan {
            Plan::Fixed(p) => b.checked_add(p).ok_or(bucket::BucketError::OutOfRange),
            Plan::Months(_) => bucket::add_interval(b, w),
        };
        match next {
            Ok(n) if n < END_TIMESTAMP => n,
            _ => NOEND,
        }
    };
    (a.min(end), end)
}

/// The bucket holding a valid timestamp; -infinity if that bucket would
/// start before the timestamp range.
fn bucket_start_saturating(plan: Plan, t: i64) -> i64 {
    match bucket::bucket_ts(plan, t, None) {
        Ok(b) if b >= bucket::MIN_TIMESTAMP => b,
        _ => bucket::NOBEGIN,
    }
}

/// Merge overlapping or touching ranges, sorted.
pub fn merge_ranges(mut r: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    r.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Can a rollup of width `w` be computed exactly from one of width `src`?
/// Every coarse bucket must be a union of whole fine buckets (both use the
/// default origins).
pub fn composes(w: Plan, src: Plan) -> bool {
    match (w, src) {
        (Plan::Fixed(a), Plan::Fixed(b)) => a % b == 0 && (bucket::DEFAULT_ORIGIN % b == bucket::DEFAULT_ORIGIN % a % b),
        (Plan::Months(a), Plan::Months(b)) => a % b == 0,
        // month buckets start at midnight on the 1st: fine buckets must
        // divide a day and be aligned to midnight
        (Plan::Months(_), Plan::Fixed(b)) => bucket::USECS_PER_DAY % b == 0,
        (Plan::Fixed(_), Plan::Months(_)) => false,
    }
}

pub fn not_found(name: &str) -> StoreError {
    StoreError::new(Kind::UndefinedObject, format!("rollup \"{name}\" does not exist"))
}

// ------------------------------------------------------------------ SPI --

use crate::errors::report;
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// A rollup's row in storefront.rollup.
struct Meta {
    name: String,
    source: String,
    source_rollup: Option<String>,
    time_col: String,
    width: Width,
    groups: Vec<String>,
    aggs: Vec<String>,
    schema: String,
    watermark: i64,
}

const META_COLS: &str = "name, source, source_rollup, time_column, bucket_width, group_columns, aggregates, \
                         target_schema, watermark";

fn read_meta(row: &pgrx::spi::SpiHeapTupleData<'_>) -> StoreResult<Meta> {
    let iv: Interval = row.get(5)?.ok_or_else(|| StoreError::internal("rollup without width"))?;
    let wm: TimestampWithTimeZone = row.get(9)?.ok_or_else(|| StoreError::internal("rollup without watermark"))?;
    Ok(Meta {
        name: row.get(1)?.unwrap_or_default(),
        source: row.get(2)?.unwrap_or_default(),
        source_rollup: row.get(3)?,
        time_col: row.get(4)?.unwrap_or_default(),
        width: Width::new(iv.months(), iv.days(), iv.micros()),
        groups: row.get::<Vec<String>>(6)?.unwrap_or_default(),
        aggs: row.get::<Vec<String>>(7)?.unwrap_or_default(),
        schema: row.get(8)?.unwrap_or_default(),
        watermark: wm.into_inner(),
    })
}

fn load(client: &mut SpiClient<'_>, name: &str, lock: &str) -> StoreResult<Meta> {
    let sql = format!("SELECT {META_COLS} FROM storefront.rollup WHERE name = $1 {lock}");
    let t = client.update(sql.as_str(), Some(1), &[name.into()])?;
    if t.is_empty() {
        return Err(not_found(name));
    }
    let row = t.first().get_heap_tuple()?.ok_or_else(|| not_found(name))?;
    read_meta(&row)
}

fn spec_of(client: &mut SpiClient<'_>, m: &Meta) -> StoreResult<Spec> {
    let aggs = m.aggs.iter().map(|a| parse_agg(a)).collect::<StoreResult<Vec<_>>>()?;
    let source_view = match &m.source_rollup {
        Some(src) => {
            let s = load(client, src, "")?;
            Some(format!("{}.{}", ident(&s.schema), ident(&s.name)))
        }
        None => None,
    };
    Ok(Spec {
        name: m.name.clone(),
        schema: m.schema.clone(),
        source: m.source.clone(),
        source_view,
        time_col: m.time_col.clone(),
        width: m.width,
        groups: m.groups.clone(),
        aggs,
    })
}

fn plan_of(w: Width) -> StoreResult<Plan> {
    bucket::plan(w).map_err(|e| StoreError::invalid(e.to_string()).detail(format!("The width given was {w}.")))
}

fn ts_arg(v: i64) -> StoreResult<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(v).map_err(|_| StoreError::new(Kind::DatetimeOverflow, "timestamp out of range"))
}

/// Column name -> type name of a relation's live columns.
fn columns(client: &mut SpiClient<'_>, rel: pgrx::pg_sys::Oid) -> StoreResult<Vec<(String, String)>> {
    let t = client.update(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
         WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        None,
        &[rel.into()],
    )?;
    let mut out = Vec::new();
    for row in t {
        out.push((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()));
    }
    Ok(out)
}

fn undefined_column(col: &str, rel: &str) -> StoreError {
    StoreError::new(Kind::UndefinedColumn, format!("column \"{col}\" of relation {rel} does not exist"))
}

#[allow(clippy::too_many_arguments)]
fn create_rollup_inner(
    name: Option<&str>,
    source: Option<pgrx::pg_sys::Oid>,
    time_column: Option<&str>,
    bucket_width: Option<Interval>,
    group_columns: Option<Vec<Option<String>>>,
    aggregates: Option<Vec<Option<String>>>,
    schema: Option<&str>,
) -> StoreResult<String> {
    let name = normalize_name(name.ok_or_else(|| StoreError::null("name"))?)?;
    let source = source.ok_or_else(|| StoreError::null("source"))?;
    let iv = bucket_width.ok_or_else(|| StoreError::null("bucket width"))?;
    let width = Width::new(iv.months(), iv.days(), iv.micros());
    let plan = plan_of(width)?;
    let schema = schema.ok_or_else(|| StoreError::null("schema"))?.to_string();
    if schema.is_empty() || schema.len() > 63 || schema.starts_with("pg_") {
        return Err(StoreError::invalid(format!("invalid schema name \"{}\"", crate::orders::items::clip(&schema, 63)))
            .detail("A rollup's schema name has 1 to 63 bytes and does not start with \"pg_\"."));
    }
    let groups: Vec<String> = group_columns.unwrap_or_default().into_iter().flatten().collect();
    let agg_specs: Vec<String> = aggregates.unwrap_or_else(|| vec![Some("count".into())]).into_iter().flatten().collect();
    let aggs = agg_specs.iter().map(|a| parse_agg(a)).collect::<StoreResult<Vec<_>>>()?;
    let agg_specs: Vec<String> = aggs
        .iter()
        .map(|a| match (&a.f, &a.col) {
            (AggFn::Count, _) => "count".to_string(),
            (f, Some(c)) => format!("{}({c})", format!("{f:?}").to_lowercase()),
            (f, None) => format!("{f:?}").to_lowercase(),
        })
        .collect();

    Spi::connect_mut(|client| {
        // the source relation (a regclass: resolved, or 42P01, by the caller)
        let t = client.update(
            "SELECT c.oid, format('%I.%I', n.nspname, c.relname) FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            Some(1),
            &[source.into()],
        )?;
        if t.is_empty() {
            return Err(StoreError::new(Kind::UndefinedTable, format!("relation with OID {} does not exist", source.to_u32())));
        }
        let row = t.first();
        let src_oid: pgrx::pg_sys::Oid = row.get(1)?.ok_or_else(|| StoreError::internal("regclass without oid"))?;
        let src_name: String = row.get(2)?.unwrap_or_default();

        // a rollup's view or bucket table as source: stacked
        let t = client.update(
            "SELECT name FROM storefront.rollup
             WHERE format('%I.%I', target_schema, name) = $1 OR format('%I.%I', target_schema, name || '_buckets') = $1",
            Some(1),
            &[src_name.as_str().into()],
        )?;
        let source_rollup: Option<String> = if t.is_empty() { None } else { t.first().get(1)? };

        let cols = columns(client, src_oid)?;
        let has = |c: &str| cols.iter().find(|(n, _)| n == c).map(|(_, t)| t.clone());
        let (stored_source, time_col, source_view) = match &source_rollup {
            Some(src) => {
                let s = load(client, src, "")?;
                let src_plan = plan_of(s.width)?;
                if !composes(plan, src_plan) {
                    return Err(StoreError::invalid(format!(
                        "rollup \"{name}\" cannot be computed exactly from rollup \"{src}\""
                    ))
                    .detail(format!(
                        "Buckets of {} are not whole unions of buckets of {}.",
                        width, s.width
                    )));
                }
                let src_stored: Vec<String> = stored_columns(
                    &s.aggs.iter().map(|a| parse_agg(a)).collect::<StoreResult<Vec<_>>>()?,
                )
                .into_iter()
                .map(|c| c.name)
                .collect();
                for need in stored_columns(&aggs) {
                    if !src_stored.contains(&need.name) {
                        return Err(StoreError::invalid(format!(
                            "rollup \"{src}\" does not keep \"{}\", which \"{name}\" needs",
                            need.name
                        ))
                        .hint("Add the aggregate to the finer rollup, or aggregate the raw source."));
                    }
                }
                for g in &groups {
                    if !s.groups.contains(g) {
                        return Err(undefined_column(g, &src_name));
                    }
                }
                let table = format!("{}.{}", ident(&s.schema), ident(&format!("{}_buckets", s.name)));
                let view = format!("{}.{}", ident(&s.schema), ident(&s.name));
                (table, "bucket".to_string(), Some(view))
            }
            None => {
                let time_col = time_column.ok_or_else(|| StoreError::null("time column"))?.to_string();
                match has(&time_col) {
                    None => return Err(undefined_column(&time_col, &src_name)),
                    Some(t) if t != "timestamp with time zone" => {
                        return Err(StoreError::invalid(format!("time column \"{time_col}\" is {t}"))
                            .detail("A rollup's time column must be timestamp with time zone."))
                    }
                    Some(_) => {}
                }
                for c in groups.iter().chain(aggs.iter().filter_map(|a| a.col.as_ref())) {
                    if has(c).is_none() {
                        return Err(undefined_column(c, &src_name));
                    }
                }
                (src_name.clone(), time_col, None)
            }
        };

        let spec = Spec {
            name: name.clone(),
            schema: schema.clone(),
            source: stored_source.clone(),
            source_view,
            time_col: time_col.clone(),
            width,
            groups: groups.clone(),
            aggs: aggs.clone(),
        };
        let inserted = client.update(
            "INSERT INTO storefront.rollup (name, source, source_rollup, time_column, bucket_width, group_columns,
                                            aggregates, target_schema)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING RETURNING 1",
            None,
            &[
                name.as_str().into(),
                stored_source.as_str().into(),
                source_rollup.clone().into(),
                time_col.as_str().into(),
                iv.into(),
                groups.clone().into(),
                agg_specs.into(),
                schema.as_str().into(),
            ],
        )?;
        if inserted.is_empty() {
            return Err(StoreError::new(Kind::Unique, format!("rollup \"{name}\" already exists")));
        }
        let schema_exists = !client
            .update("SELECT 1 FROM pg_namespace WHERE nspname = $1", Some(1), &[schema.as_str().into()])?
            .is_empty();
        if !schema_exists {
            client.update(format!("CREATE SCHEMA {}", ident(&schema)).as_str(), None, &[])?;
        }
        for ddl in spec.create_table_sql() {
            client.update(ddl.as_str(), None, &[])?;
        }
        client.update(spec.create_view_sql().as_str(), None, &[])?;

        // raw sources log late changes through statement-level triggers
        if source_rollup.is_none() {
            ensure_triggers(client, &stored_source, &time_col)?;
        }
        Ok(spec.view())
    })
}

/// Define a rollup of `source` in buckets of `bucket_width`, grouped by
/// `group_columns`, keeping `aggregates` (count, sum(c), min(c), max(c),
/// avg(c)). Creates `<schema>.<name>_buckets` (the materialized buckets)
/// and the real-time view `<schema>.<name>`; returns the view's name.
#[pg_extern(volatile, parallel_unsafe)]
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
    report(create_rollup_inner(name, source.map(|r| r.0), time_column, bucket_width, group_columns, aggregates, schema))
}

/// Create the statement-level triggers that log late changes of a raw
/// source, where missing. Returns true when any was missing (changes since
/// may not have been logged).
fn ensure_triggers(client: &mut SpiClient<'_>, source: &str, time_col: &str) -> StoreResult<bool> {
    let mut created = false;
    for (op, refs) in [
        ("insert", "REFERENCING NEW TABLE AS new_rows"),
        ("update", "REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows"),
        ("delete", "REFERENCING OLD TABLE AS old_rows"),
    ] {
        let trig = format!("storefront_rollup_{op}_{time_col}");
        let exists = !client
            .update(
                "SELECT 1 FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2",
                Some(1),
                &[source.into(), trig.as_str().into()],
            )?
            .is_empty();
        if !exists {
            client.update(
                format!(
                    "CREATE TRIGGER {} AFTER {} ON {source} {refs} FOR EACH STATEMENT \
                     EXECUTE FUNCTION storefront.rollup_invalidate({})",
                    ident(&trig),
                    op.to_uppercase(),
                    literal(time_col)
                )
                .as_str(),
                None,
                &[],
            )?;
            created = true;
        }
    }
    Ok(created)
}

fn refresh_inner(name: Option<&str>, upto: Option<TimestampWithTimeZone>) -> StoreResult<i64> {
    let name = name.ok_or_else(|| StoreError::null("name"))?;
    let upto = upto.ok_or_else(|| StoreError::null("upto"))?.into_inner();
    Spi::connect_mut(|client| {
        let m = load(client, name, "FOR NO KEY UPDATE")?;
        let spec = spec_of(client, &m)?;
        let plan = plan_of(m.width)?;
        let bucket_of = |t: i64| bucket::bucket_ts(plan, t, None).map_err(|e| StoreError::invalid(e.to_string()));

        // how far: complete buckets before `upto`, and not past a finer source
        let mut new_wm = if bucket::is_finite(upto) { bucket_of(upto)? } else { upto };
        if let Some(src) = &m.source_rollup {
            let s = load(client, src, "FOR SHARE")?;
            // stored: saturate rather than fail
            let src_wm = if bucket::is_finite(s.watermark) { bucket_start_saturating(plan, s.watermark) } else { s.watermark };
            new_wm = new_wm.min(src_wm);
        }
        // nothing before the source's retention horizon is re-aggregated
        let policy = match &m.source_rollup {
            Some(src) => src.clone(),
            None => "event".to_string(),
        };
        let horizon: Option<TimestampWithTimeZone> = if m.source_rollup.is_some() || m.source == "storefront.event" {
            client
                .update("SELECT horizon FROM storefront.retention_policy WHERE relation = $1", Some(1), &[policy.as_str().into()])?
                .into_iter()
                .next()
                .and_then(|r| r.get(1).ok().flatten())
        } else {
            None
        };
        let horizon = horizon.map(|h| h.into_inner()).unwrap_or(i64::MIN);
        // the first bucket whose source rows are all still there
        // (a stored value: saturating arithmetic, so it cannot fail)
        let first_whole = if !bucket::is_finite(horizon) {
            horizon
        } else {
            let b = bucket_start_saturating(plan, horizon);
            if b == horizon {
                b
            } else {
                invalidated_range(plan, m.width, horizon, horizon).1
            }
        };

        let mut ranges = Vec::new();
        let t = client.update(
            "DELETE FROM storefront.rollup_invalidation WHERE rollup_name = $1 RETURNING lo, hi",
            None,
            &[name.into()],
        )?;
        for row in t {
            let (lo, hi): (Option<TimestampWithTimeZone>, Option<TimestampWithTimeZone>) = (row.get(1)?, row.get(2)?);
            if let (Some(lo), Some(hi)) = (lo, hi) {
                let (a, b) = invalidated_range(plan, m.width, lo.into_inner().max(horizon), hi.into_inner());
                let (a, b) = (a.max(first_whole), b.min(m.watermark));
                if a < b {
                    ranges.push((a, b));
                }
            }
        }
        // a raw source whose triggers went missing (a restored dump does not
        // carry triggers on extension tables) may have changed unlogged:
        // re-arm them and re-aggregate everything materialized
        if m.source_rollup.is_none() && ensure_triggers(client, &m.source, &m.time_col)? && m.watermark > first_whole {
            ranges.push((first_whole, m.watermark));
        }
        let ranges = merge_ranges(ranges);

        let table = spec.table();
        let insert = format!("INSERT INTO {table} {}", spec.select_range_sql());
        let delete = format!("DELETE FROM {table} WHERE bucket >= $1 AND bucket < $2");
        let mut written = 0i64;
        for &(lo, hi) in &ranges {
            let args = [ts_arg(lo)?.into(), ts_arg(hi)?.into()];
            client.update(delete.as_str(), None, &args)?;
            written += client.update(insert.as_str(), None, &args)?.len() as i64;
        }
        if new_wm > m.watermark {
            let args = [ts_arg(m.watermark)?.into(), ts_arg(new_wm)?.into()];
            written += client.update(insert.as_str(), None, &args)?.len() as i64;
            client.update(
                "UPDATE storefront.rollup SET watermark = $2, refreshed_at = now() WHERE name = $1",
                None,
                &[name.into(), ts_arg(new_wm)?.into()],
            )?;
        } else {
            client.update("UPDATE storefront.rollup SET refreshed_at = now() WHERE name = $1", None, &[name.into()])?;
        }
        // coarser rollups built on this one must re-read what was redone
        for &(lo, hi) in &ranges {
            client.update(
                "INSERT INTO storefront.rollup_invalidation (rollup_name, lo, hi)
                 SELECT r.name, $2, $3 - interval '1 microsecond' FROM storefront.rollup r
                 WHERE r.source_rollup = $1 AND $2 < r.watermark",
                None,
                &[name.into(), ts_arg(lo)?.into(), ts_arg(hi)?.into()],
            )?;
        }
        Ok(written)
    })
}

/// Materialize complete buckets up to `upto` and re-aggregate invalidated
/// ones; returns the number of buckets written.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(@extschema@, pg_temp)]
fn refresh_rollup(name: Option<&str>, upto: default!(Option<TimestampWithTimeZone>, "now()")) -> Result<i64, ErrorReport> {
    report(refresh_inner(name, upto))
}

fn drop_inner(name: Option<&str>) -> StoreResult<bool> {
    let name = name.ok_or_else(|| StoreError::null("name"))?;
    Spi::connect_mut(|client| {
        let m = load(client, name, "FOR UPDATE")?;
        let deps = client.update("SELECT name FROM storefront.rollup WHERE source_rollup = $1", None, &[name.into()])?;
        if !deps.is_empty() {
            let dep: String = deps.first().get(1)?.unwrap_or_default();
            return Err(StoreError::new(Kind::DependentObjects, format!("cannot drop rollup \"{name}\": rollup \"{dep}\" is built on it"))
                .hint("Drop the coarser rollup first."));
        }
        let spec = spec_of(client, &m)?;
        client.update(format!("DROP VIEW IF EXISTS {}", spec.view()).as_str(), None, &[])?;
        client.update(format!("DROP TABLE IF EXISTS {}", spec.table()).as_str(), None, &[])?;
        client.update("DELETE FROM storefront.retention_policy WHERE relation = $1", None, &[name.into()])?;
        client.update("DELETE FROM storefront.rollup WHERE name = $1", None, &[name.into()])?;
        if m.source_rollup.is_none() {
            let others = client.update(
                "SELECT 1 FROM storefront.rollup WHERE source = $1 AND time_column = $2 AND source_rollup IS NULL",
                Some(1),
                &[m.source.as_str().into(), m.time_col.as_str().into()],
            )?;
            if others.is_empty() {
                for op in ["insert", "update", "delete"] {
                    client.update(
                        format!("DROP TRIGGER IF EXISTS {} ON {}", ident(&format!("storefront_rollup_{op}_{}", m.time_col)), m.source)
                            .as_str(),
                        None,
                        &[],
                    )?;
                }
            }
        }
        Ok(true)
    })
}

/// Drop a rollup: its view, bucket table, policies and (when no other
/// rollup needs them) the source's triggers.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(@extschema@, pg_temp)]
fn drop_rollup(name: Option<&str>) -> Result<bool, ErrorReport> {
    report(drop_inner(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(stacked: bool) -> Spec {
        Spec {
            name: "orders_hourly".into(),
            schema: "analytics".into(),
            source: if stacked { "analytics.orders_minutely_buckets".into() } else { "storefront.orders".into() },
            source_view: stacked.then(|| "analytics.orders_minutely".into()),
            time_col: "placed_at".into(),
            width: Width::new(0, 0, 3_600_000_000),
            groups: vec!["currency".into()],
            aggs: vec![
                parse_agg("count").unwrap(),
                parse_agg("sum(total_cents)").unwrap(),
                parse_agg("avg(total_cents)").unwrap(),
                parse_agg("max(total_cents)").unwrap(),
            ],
        }
    }

    #[test]
    fn aggregates_parse() {
        assert_eq!(parse_agg(" COUNT(*) ").unwrap(), Agg { f: AggFn::Count, col: None });
        assert_eq!(parse_agg("avg(total_cents)").unwrap(), Agg { f: AggFn::Avg, col: Some("total_cents".into()) });
        for bad in ["median(x)", "sum()", "sum(x", "sum(x; drop table y)", "sum(\"x\")", "count(x)"] {
            assert!(parse_agg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(normalize_name("orders_hourly").is_ok());
        assert!(normalize_name("Orders").is_err());
        assert!(normalize_name("1x").is_err());
        assert!(normalize_name("a;b").is_err());
    }

    #[test]
    fn stored_columns_compose() {
        let s = stored_columns(&spec(false).aggs);
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["n", "sum_total_cents", "n_total_cents", "max_total_cents"]);
        assert_eq!(s[1].raw, "sum(\"total_cents\")");
        assert_eq!(s[1].stacked, "sum(sum_total_cents)");
        assert_eq!(s[2].stacked, "sum(n_total_cents)::bigint");
        assert_eq!(final_columns(&spec(false).aggs), vec![("avg_total_cents".to_string(), "sum_total_cents / nullif(n_total_cents, 0)".to_string())]);
    }

    #[test]
    fn generated_sql() {
        let raw = spec(false);
        assert_eq!(
            raw.select_range_sql(),
            "SELECT storefront.rollup_bucket('01:00:00'::interval, \"placed_at\") AS bucket, \"currency\", count(*)::bigint AS \"n\", \
             sum(\"total_cents\") AS \"sum_total_cents\", count(\"total_cents\")::bigint AS \"n_total_cents\", \
             max(\"total_cents\") AS \"max_total_cents\" FROM storefront.orders WHERE \"placed_at\" >= $1 AND \"placed_at\" < $2 GROUP BY 1, 2"
        );
        let ddl = raw.create_table_sql();
        assert!(ddl[0].starts_with("CREATE TABLE \"analytics\".\"orders_hourly_buckets\" AS SELECT"));
        assert!(ddl[0].ends_with("WITH NO DATA"));
        assert_eq!(
            ddl[2],
            "CREATE UNIQUE INDEX \"orders_hourly_buckets_key\" ON \"analytics\".\"orders_hourly_buckets\" (bucket, \"currency\")"
        );
        let view = raw.create_view_sql();
        assert!(view.contains(
            "FROM \"analytics\".\"orders_hourly_buckets\" WHERE bucket < storefront.rollup_watermark('orders_hourly') UNION ALL"
        ));
        assert!(view.contains("FROM storefront.orders WHERE \"placed_at\" >= storefront.rollup_watermark('orders_hourly')"));
        assert!(view.contains("sum_total_cents / nullif(n_total_cents, 0) AS \"avg_total_cents\""));

        let stacked = spec(true);
        assert!(stacked.select_range_sql().contains("sum(n)::bigint AS \"n\""));
        assert!(stacked
            .select_range_sql()
            .contains("FROM analytics.orders_minutely_buckets WHERE \"bucket\" >= $1 AND \"bucket\" < $2"));
        assert!(stacked
            .create_view_sql()
            .contains("FROM analytics.orders_minutely WHERE \"bucket\" >= storefront.rollup_watermark"));
    }

    #[test]
    fn ranges() {
        let h = 3_600_000_000;
        let w = Width::new(0, 0, h);
        let (a, b) = invalidated_range(Plan::Fixed(h), w, h + 5, 3 * h + 1);
        assert_eq!((a, b), (h, 4 * h));
        assert_eq!(merge_ranges(vec![(5, 7), (1, 3), (2, 4), (7, 9), (20, 30)]), vec![(1, 4), (5, 9), (20, 30)]);
    }

    /// No stored time can make the range arithmetic fail: infinities and
    /// the edges of the timestamp range widen the range instead.
    #[test]
    fn ranges_are_total() {
        use bucket::{END_TIMESTAMP, MIN_TIMESTAMP, NOBEGIN, NOEND};
        let h = 3_600_000_000;
        for plan in [Plan::Fixed(h), Plan::Fixed(7 * bucket::USECS_PER_DAY), Plan::Months(1), Plan::Months(12)] {
            let w = match plan {
                Plan::Fixed(p) => Width::new(0, 0, p),
                Plan::Months(m) => Width::new(m, 0, 0),
            };
            assert_eq!(invalidated_range(plan, w, NOBEGIN, NOBEGIN), (NOBEGIN, MIN_TIMESTAMP));
            assert_eq!(invalidated_range(plan, w, NOBEGIN, NOEND), (NOBEGIN, NOEND));
            assert_eq!(invalidated_range(plan, w, END_TIMESTAMP - 1, NOEND).1, NOEND);
            let (a, b) = invalidated_range(plan, w, MIN_TIMESTAMP, END_TIMESTAMP - 1);
            assert!(a <= MIN_TIMESTAMP && b == NOEND, "{plan:?}");
            let (a, b) = invalidated_range(plan, w, 0, 0);
            assert!(a <= 0 && b > 0);
        }
    }

    #[test]
    fn which_widths_compose() {
        let (m, h, d, w) = (60_000_000, 3_600_000_000, bucket::USECS_PER_DAY, 7 * bucket::USECS_PER_DAY);
        assert!(composes(Plan::Fixed(h), Plan::Fixed(m)));
        assert!(composes(Plan::Fixed(d), Plan::Fixed(h)));
        assert!(composes(Plan::Fixed(w), Plan::Fixed(d)));
        assert!(!composes(Plan::Fixed(h), Plan::Fixed(7 * m)));
        assert!(composes(Plan::Months(1), Plan::Fixed(d)));
        assert!(!composes(Plan::Months(1), Plan::Fixed(w)));
        assert!(composes(Plan::Months(12), Plan::Months(3)));
        assert!(!composes(Plan::Fixed(d), Plan::Months(1)));
    }
}
