//! The pure part of rollups: aggregate specs, the stored columns and how
//! they compose, every statement a rollup runs (generated from its spec),
//! and the bucket arithmetic of dirty ranges. No PostgreSQL types here:
//! everything is unit-tested without a database.
//!
//! Every stored aggregate composes exactly: counts and sums add, minima and
//! maxima take the min and max, averages are kept as sum + count. That is
//! what lets a refresh fold late inserts into their buckets (a delta row
//! per bucket, merged) and build a coarse rollup from a finer one. Late
//! updates and deletes are retractions (negative counts and sums, the
//! retracted extremes): they compose too, except where `merge_sql` says,
//! and then the bucket is re-read.

use crate::errors::{Kind, StoreError, StoreResult};
use crate::timeseries::bucket::{self, Plan, Width};

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

impl Agg {
    /// The canonical spelling kept in storefront.rollup.aggregates.
    pub fn canonical(&self) -> String {
        match (self.f, &self.col) {
            (AggFn::Count, _) | (_, None) => "count".into(),
            (AggFn::Sum, Some(c)) => format!("sum({c})"),
            (AggFn::Min, Some(c)) => format!("min({c})"),
            (AggFn::Max, Some(c)) => format!("max({c})"),
            (AggFn::Avg, Some(c)) => format!("avg({c})"),
        }
    }
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
        StoreError::invalid(format!("invalid aggregate \"{}\"", crate::orders::items::clip(spec, 64)))
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
        Err(StoreError::invalid(format!("invalid rollup name \"{}\"", crate::orders::items::clip(name, 64)))
            .detail("A rollup name has 1 to 48 lower-case letters, digits or underscores, and starts with a letter or underscore."))
    }
}

/// How a stored column combines two partial aggregates of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// counts: never NULL
    Add,
    /// sums: NULL when no value was summed yet
    Sum,
    Min,
    Max,
}

/// A stored column: its name, how it aggregates from the raw source and
/// from partial aggregates (a finer rollup's buckets, or delta rows), and
/// how two partials of one bucket combine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub name: String,
    pub raw: String,
    pub stacked: String,
    pub combine: Combine,
}

impl Stored {
    /// `b.col` combined with `excluded.col` (ON CONFLICT DO UPDATE).
    pub fn combine_sql(&self) -> String {
        let c = ident(&self.name);
        match self.combine {
            Combine::Add => format!("{c} = b.{c} + excluded.{c}"),
            Combine::Sum => format!("{c} = coalesce(b.{c} + excluded.{c}, b.{c}, excluded.{c})"),
            Combine::Min => format!("{c} = least(b.{c}, excluded.{c})"),
            Combine::Max => format!("{c} = greatest(b.{c}, excluded.{c})"),
        }
    }
}

/// The stored columns for a list of aggregates (always `n`, the row count;
/// each column once).
pub fn stored_columns(aggs: &[Agg]) -> Vec<Stored> {
    let mut out = vec![Stored {
        name: "n".into(),
        raw: "count(*)::bigint".into(),
        stacked: "sum(n)::bigint".into(),
        combine: Combine::Add,
    }];
    let mut push = |name: String, raw: String, stacked: String, combine: Combine| {
        if !out.iter().any(|s| s.name == name) {
            out.push(Stored { name, raw, stacked, combine });
        }
    };
    for a in aggs {
        let Some(c) = &a.col else { continue };
        let q = ident(c);
        match a.f {
            AggFn::Count => {}
            AggFn::Sum => push(format!("sum_{c}"), format!("sum({q})"), format!("sum(sum_{c})"), Combine::Sum),
            AggFn::Min => push(format!("min_{c}"), format!("min({q})"), format!("min(min_{c})"), Combine::Min),
            AggFn::Max => push(format!("max_{c}"), format!("max({q})"), format!("max(max_{c})"), Combine::Max),
            AggFn::Avg => {
                push(format!("sum_{c}"), format!("sum({q})"), format!("sum(sum_{c})"), Combine::Sum);
                push(format!("n_{c}"), format!("count({q})::bigint"), format!("sum(n_{c})::bigint"), Combine::Add);
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

/// The value columns of the Grafana-shaped view, one per aggregate asked
/// for, in the order asked: (output name, column of the real-time view).
pub fn series_columns(aggs: &[Agg]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for a in aggs {
        let (name, col) = match (a.f, &a.col) {
            (AggFn::Count, _) | (_, None) => ("count".to_string(), "n".to_string()),
            (AggFn::Sum, Some(c)) => (format!("sum_{c}"), format!("sum_{c}")),
            (AggFn::Min, Some(c)) => (format!("min_{c}"), format!("min_{c}")),
            (AggFn::Max, Some(c)) => (format!("max_{c}"), format!("max_{c}")),
            (AggFn::Avg, Some(c)) => (format!("avg_{c}"), format!("avg_{c}")),
        };
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, col));
        }
    }
    out
}

/// Everything needed to generate a rollup's SQL.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub schema: String,
    /// the source relation, qualified and quoted: a raw table, or for a
    /// stacked rollup the finer rollup's bucket table
    pub source: String,
    /// for a stacked rollup: the finer rollup's real-time view
    pub source_view: Option<String>,
    /// the raw source's time column (`bucket` when stacked)
    pub time_col: String,
    pub width: Width,
    pub groups: Vec<String>,
    pub aggs: Vec<Agg>,
}

/// Transition tables of the capture triggers (see `capture.rs`).
pub const NEW_ROWS: &str = "storefront_new_rows";
pub const OLD_ROWS: &str = "storefront_old_rows";

impl Spec {
    pub fn stacked(&self) -> bool {
        self.source_view.is_some()
    }
    fn qualified(&self, suffix: &str) -> String {
        format!("{}.{}", ident(&self.schema), ident(&format!("{}{suffix}", self.name)))
    }
    /// The materialized buckets.
    pub fn table(&self) -> String {
        self.qualified("_buckets")
    }
    /// Partial aggregates of late inserts, per bucket, not merged yet.
    pub fn deltas(&self) -> String {
        self.qualified("_deltas")
    }
    /// The real-time view.
    pub fn view(&self) -> String {
        self.qualified("")
    }
    /// The Grafana-shaped view: time, values, labels.
    pub fn series_view(&self) -> String {
        self.qualified("_series")
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
    fn source_time(&self) -> &str {
        if self.stacked() {
            "bucket"
        } else {
            &self.time_col
        }
    }
    /// bucket, groups, stored columns: the column list of the bucket table.
    fn key_columns(&self) -> Vec<String> {
        std::iter::once("bucket".to_string()).chain(self.groups.iter().map(|g| ident(g))).collect()
    }
    fn all_columns(&self) -> Vec<String> {
        let mut cols = self.key_columns();
        cols.extend(self.stored().iter().map(|s| ident(&s.name)));
        cols
    }

    /// SELECT of buckets from `from` (time expression `time`), aggregating
    /// raw rows or, with `partial`, partial aggregates (stored columns).
    fn aggregate(&self, from: &str, time: &str, cond: &str, partial: bool) -> String {
        let t = ident(time);
        let mut cols = vec![format!("storefront.rollup_bucket({}, {t}) AS bucket", self.width_sql())];
        cols.extend(self.groups.iter().map(|g| ident(g)));
        for s in self.stored() {
            let expr = if partial { s.stacked } else { s.raw };
            cols.push(format!("{expr} AS {}", ident(&s.name)));
        }
        format!("SELECT {} FROM {from} WHERE {cond} GROUP BY {}", cols.join(", "), self.group_by())
    }

    /// The buckets of source times [$1, $2) computed from the source.
    pub fn select_range_sql(&self) -> String {
        let t = ident(self.source_time());
        self.aggregate(&self.source, self.source_time(), &format!("{t} >= $1 AND {t} < $2"), self.stacked())
    }

    /// Materialize the buckets of [$1, $2) (the watermark advancing);
    /// returns the number of bucket rows written.
    pub fn advance_sql(&self) -> String {
        format!(
            "WITH w AS (INSERT INTO {} ({}) {} RETURNING 1) SELECT count(*) FROM w",
            self.table(),
            self.all_columns().join(", "),
            self.select_range_sql()
        )
    }

    /// CREATE TABLE for the materialized buckets (types inferred from the
    /// aggregate query itself) and its key: one row per bucket and group,
    /// NULL groups included (NULLS NOT DISTINCT), which the merge's ON
    /// CONFLICT relies on.
    pub fn create_table_sql(&self) -> Vec<String> {
        let t = ident(self.source_time());
        let probe = self.aggregate(&self.source, self.source_time(), &format!("{t} IS NULL AND false"), self.stacked());
        vec![
            format!("CREATE TABLE {} AS {probe} WITH NO DATA", self.table()),
            format!("ALTER TABLE {} ALTER COLUMN bucket SET NOT NULL", self.table()),
            self.create_key_sql(),
        ]
    }

    pub fn key_index(&self) -> String {
        format!("{}_buckets_key", self.name)
    }

    pub fn create_key_sql(&self) -> String {
        format!(
            "CREATE UNIQUE INDEX {} ON {} ({}) NULLS NOT DISTINCT",
            ident(&self.key_index()),
            self.table(),
            self.key_columns().join(", ")
        )
    }

    /// The delta table has the bucket table's columns, and rows are
    /// partial aggregates, several per bucket and group until merged. Late
    /// updates and deletes write retractions there: negative counts and
    /// sums, `gone` (the rows retracted) and, per minimum and maximum, the
    /// extreme of the retracted values (`gone_min_<column>`,
    /// `gone_max_<column>`), which decides whether the bucket's extreme
    /// may have left with them.
    pub fn create_deltas_sql(&self) -> Vec<String> {
        let mut cols = vec!["b.*".to_string(), "NULL::bigint AS gone".to_string()];
        cols.extend(self.gone_columns().into_iter().map(|(g, s)| format!("b.{} AS {}", ident(&s.name), ident(&g))));
        vec![
            format!("CREATE TABLE {} AS SELECT {} FROM {} b WITH NO DATA", self.deltas(), cols.join(", "), self.table()),
            format!("CREATE INDEX {} ON {} (bucket)", ident(&format!("{}_deltas_bucket", self.name)), self.deltas()),
        ]
    }

    /// The retraction columns of the delta table beyond `gone`: one per
    /// stored minimum or maximum, with that stored column.
    fn gone_columns(&self) -> Vec<(String, Stored)> {
        self.stored()
            .into_iter()
            .filter(|s| matches!(s.combine, Combine::Min | Combine::Max))
            .map(|s| (format!("gone_{}", s.name), s))
            .collect()
    }

    /// The real-time view: materialized buckets below the watermark, plus
    /// the source's not-yet-materialized tail aggregated on the fly. Both
    /// read one snapshot, so a refresh committing meanwhile never makes a
    /// row count twice or not at all.
    pub fn create_view_sql(&self) -> String {
        let wm = format!("storefront.rollup_watermark({})", literal(&self.name));
        let col_list = self.all_columns().join(", ");
        let (tail_from, tail_time) = match &self.source_view {
            Some(v) => (v.as_str(), "bucket"),
            None => (self.source.as_str(), self.time_col.as_str()),
        };
        let tail = self.aggregate(tail_from, tail_time, &format!("{} >= {wm}", ident(tail_time)), self.stacked());
        let mut outer = vec![col_list.clone()];
        outer.extend(final_columns(&self.aggs).into_iter().map(|(n, e)| format!("{e} AS {}", ident(&n))));
        format!(
            "CREATE VIEW {} AS SELECT {} FROM (SELECT {col_list} FROM {} WHERE bucket < {wm} UNION ALL {tail}) r",
            self.view(),
            outer.join(", "),
            self.table()
        )
    }

    /// The Grafana-shaped view over the real-time view: `time`, one value
    /// column per aggregate, then the group columns as labels.
    pub fn create_series_view_sql(&self) -> String {
        let mut cols = vec!["bucket AS \"time\"".to_string()];
        cols.extend(series_columns(&self.aggs).into_iter().map(|(n, c)| {
            if n == c {
                ident(&c)
            } else {
                format!("{} AS {}", ident(&c), ident(&n))
            }
        }));
        cols.extend(self.groups.iter().map(|g| ident(g)));
        format!("CREATE VIEW {} AS SELECT {} FROM {}", self.series_view(), cols.join(", "), self.view())
    }

    /// Capture of an INSERT: the inserted rows behind the watermark ($1)
    /// become delta rows, one per bucket and group; returns the buckets
    /// touched, sorted.
    pub fn capture_insert_sql(&self) -> String {
        let t = ident(&self.time_col);
        format!(
            "WITH d AS (INSERT INTO {} ({}) {} RETURNING bucket) SELECT array_agg(DISTINCT bucket ORDER BY bucket) FROM d",
            self.deltas(),
            self.all_columns().join(", "),
            self.aggregate(NEW_ROWS, &self.time_col, &format!("{t} < $1"), false)
        )
    }

    /// Capture of an UPDATE (`updated`) or a DELETE: old rows behind the
    /// watermark ($1) are retracted and new rows behind it added, as delta
    /// rows (one per bucket, group and side); returns the buckets touched,
    /// sorted. A retraction negates the counts and sums (`* -1` works for
    /// every summable type, money and interval included), counts its rows
    /// in `gone` and keeps the retracted extremes in the `gone_` columns;
    /// the new side of an update has `gone = 0` (a late insert's NULL).
    pub fn capture_change_sql(&self, updated: bool) -> String {
        let t = ident(&self.time_col);
        let keys = self.key_columns();
        let mut cols = keys.clone();
        let mut exprs = vec![format!("storefront.rollup_bucket({}, {t})", self.width_sql())];
        exprs.extend(self.groups.iter().map(|g| ident(g)));
        for s in self.stored() {
            if matches!(s.combine, Combine::Add | Combine::Sum) {
                cols.push(ident(&s.name));
                exprs.push(format!("({}) * -1", s.raw));
            }
        }
        cols.push("gone".into());
        exprs.push("count(*)::bigint".into());
        for (g, s) in self.gone_columns() {
            cols.push(ident(&g));
            exprs.push(s.raw.clone());
        }
        let retract = format!(
            "o AS (INSERT INTO {} ({}) SELECT {} FROM {OLD_ROWS} WHERE {t} < $1 GROUP BY {} RETURNING bucket)",
            self.deltas(),
            cols.join(", "),
            exprs.join(", "),
            self.group_by()
        );
        if updated {
            format!(
                "WITH {retract}, n AS (INSERT INTO {} ({}, gone) SELECT *, 0 FROM ({}) a RETURNING bucket) \
                 SELECT array_agg(DISTINCT bucket ORDER BY bucket) FROM (SELECT bucket FROM o UNION ALL SELECT bucket FROM n) x",
                self.deltas(),
                self.all_columns().join(", "),
                self.aggregate(NEW_ROWS, &self.time_col, &format!("{t} < $1"), false)
            )
        } else {
            format!("WITH {retract} SELECT array_agg(DISTINCT bucket ORDER BY bucket) FROM o")
        }
    }

    /// The buckets behind the watermark ($1) holding any row of the given
    /// relations (transition tables or a table about to be truncated),
    /// sorted: the buckets an UPDATE, DELETE or TRUNCATE makes dirty.
    pub fn touched_buckets_sql(&self, relations: &[&str]) -> String {
        let t = ident(&self.time_col);
        let parts: Vec<String> = relations
            .iter()
            .map(|r| format!("SELECT storefront.rollup_bucket({}, {t}) AS b FROM {r} WHERE {t} < $1", self.width_sql()))
            .collect();
        format!("SELECT array_agg(DISTINCT b ORDER BY b) FROM ({}) x", parts.join(" UNION ALL "))
    }

    /// Every bucket behind the watermark ($3) that source times in
    /// [$4, $2) can touch, sorted: the materialized ones (from $1, the
    /// bucket of $4), those with queued deltas, and those of source rows.
    pub fn invalidate_sql(&self) -> String {
        let t = ident(self.source_time());
        let mut parts = vec![format!("SELECT bucket AS b FROM {} WHERE bucket >= $1 AND bucket < $2 AND bucket < $3", self.table())];
        if !self.stacked() {
            parts.push(format!("SELECT bucket FROM {} WHERE bucket >= $1 AND bucket < $2 AND bucket < $3", self.deltas()));
        }
        parts.push(format!(
            "SELECT storefront.rollup_bucket({}, {t}) FROM {} WHERE {t} >= $4 AND {t} < $2 AND {t} < $3",
            self.width_sql(),
            self.source
        ));
        format!("SELECT array_agg(DISTINCT b ORDER BY b) FROM ({}) x", parts.join(" UNION ALL "))
    }

    /// Retention: delete buckets (and not yet merged deltas) before $1;
    /// returns the number of bucket rows deleted.
    pub fn drop_buckets_sql(&self) -> String {
        let deltas = if self.stacked() {
            String::new()
        } else {
            format!("d AS (DELETE FROM {} WHERE bucket < $1 RETURNING 1), ", self.deltas())
        };
        // a data-modifying WITH query runs to completion even unread
        format!(
            "WITH {deltas}w AS (DELETE FROM {} WHERE bucket < $1 RETURNING 1) SELECT count(*) FROM w",
            self.table()
        )
    }

    /// The earliest time of the rows just inserted (decides whether any
    /// is behind a watermark).
    pub fn min_time_sql(&self) -> String {
        format!("SELECT min({}) FROM {NEW_ROWS}", ident(&self.time_col))
    }

    /// Fold the delta rows of the buckets in $1 into the bucket table, in
    /// one statement (one snapshot): the deltas it deletes are exactly the
    /// ones it adds, and exactly the ones it judged. A bucket is left alone
    /// (its deltas kept, the bucket returned for re-aggregation) when a
    /// retraction in it may not compose:
    /// - a retracted minimum or maximum reaches the extreme of what stays
    ///   (the row holding it may be gone);
    /// - a sum is of floating point (subtraction is not exact), or comes
    ///   to exactly zero (the values left may all be NULL, whose sum is
    ///   NULL).
    ///
    /// Before $2 (the first whole bucket after the source's retention
    /// horizon) only late inserts are folded in, and both sides of updates
    /// and deletes are dropped: retention deletes rows there (from a
    /// default partition) and must not erase their aggregates, and
    /// re-aggregating those buckets from what is left would.
    ///
    /// Returns the bucket rows written, the buckets left alone (sorted),
    /// and the retractions folded in. A group whose count comes to zero
    /// keeps a row with `n = 0` until `prune_sql` runs, which only a
    /// folded retraction makes necessary.
    pub fn merge_sql(&self) -> String {
        let keys = self.key_columns();
        let mut partial = keys.clone();
        partial.extend(self.stored().iter().map(|s| format!("{} AS {}", s.stacked, ident(&s.name))));
        let mut judged = partial.clone();
        judged.push("sum(gone) AS gone".into());
        let mut unsafe_when: Vec<String> = Vec::new();
        for (g, s) in self.gone_columns() {
            let (c, g) = (ident(&s.name), ident(&g));
            let (f, extreme, beyond) = if s.combine == Combine::Min { ("min", "least", ">") } else { ("max", "greatest", "<") };
            judged.push(format!("{f}({g}) AS {g}"));
            unsafe_when.push(format!("(d.{g} IS NOT NULL AND NOT coalesce(d.{g} {beyond} {extreme}(b.{c}, d.{c}), false))"));
        }
        for s in self.stored().iter().filter(|s| s.combine == Combine::Sum) {
            let c = ident(&s.name);
            unsafe_when.push(format!(
                "(d.{c} IS NOT NULL AND NOT coalesce(pg_catalog.pg_typeof(d.{c}) NOT IN ('real'::pg_catalog.regtype, 'double precision'::pg_catalog.regtype) \
                  AND coalesce(b.{c} + d.{c}, b.{c}, d.{c}) <> d.{c} - d.{c}, false))"
            ));
        }
        if unsafe_when.is_empty() {
            unsafe_when.push("false".into());
        }
        let mut on = vec!["b.bucket = d.bucket".to_string()];
        on.extend(self.groups.iter().map(|g| format!("b.{0} IS NOT DISTINCT FROM d.{0}", ident(g))));
        let sets: Vec<String> = self.stored().iter().map(|s| s.combine_sql()).collect();
        format!(
            "WITH j AS (SELECT {judged} FROM {deltas} WHERE bucket = ANY($1) GROUP BY {gb}), \
             redo AS (SELECT DISTINCT d.bucket FROM j d LEFT JOIN {table} b ON {on} WHERE d.gone > 0 AND d.bucket >= $2 AND ({unsafe_when})), \
             d AS (DELETE FROM {deltas} WHERE bucket = ANY($1) AND bucket NOT IN (SELECT bucket FROM redo) RETURNING *), \
             s AS (SELECT {partial} FROM d WHERE d.gone IS NULL OR d.bucket >= $2 GROUP BY {gb}), \
             w AS (INSERT INTO {table} AS b ({cols}) SELECT {cols} FROM s \
                   ON CONFLICT ({keys}) DO UPDATE SET {sets} RETURNING 1) \
             SELECT (SELECT count(*) FROM w), (SELECT array_agg(bucket ORDER BY bucket) FROM redo), \
                    (SELECT count(*) FROM d WHERE d.gone > 0 AND d.bucket >= $2)",
            judged = judged.join(", "),
            deltas = self.deltas(),
            gb = self.group_by(),
            table = self.table(),
            on = on.join(" AND "),
            unsafe_when = unsafe_when.join(" OR "),
            partial = partial.join(", "),
            cols = self.all_columns().join(", "),
            keys = keys.join(", "),
            sets = sets.join(", "),
        )
    }

    /// Groups of the buckets in $1 whose count came to zero (every row
    /// retracted) leave the bucket table; returns how many.
    pub fn prune_sql(&self) -> String {
        format!(
            "WITH p AS (DELETE FROM {} WHERE bucket = ANY($1) AND n <= 0 RETURNING 1) SELECT count(*) FROM p",
            self.table()
        )
    }

    /// Re-aggregate the dirty ranges [$1[i], $2[i]] (inclusive bounds,
    /// whole buckets; $3 lists every dirty bucket) from the source, in one
    /// statement: delete their buckets and delta rows, then insert what the
    /// source holds now. The uncorrelated subquery in WHERE is an InitPlan,
    /// so both deletes run to completion before the first row is inserted.
    /// Returns the number of bucket rows written.
    ///
    /// With an index on the time column (`indexed`), each range is its own
    /// index scan (a LATERAL subquery, pruned to its partition at run
    /// time), so the cost follows the dirty buckets; without one, the
    /// source is read once and each row's bucket looked up in $3 (hashed).
    pub fn rebuild_sql(&self, indexed: bool) -> String {
        let t = ident(self.source_time());
        let from = if indexed {
            format!(
                "(SELECT s.* FROM dirty CROSS JOIN LATERAL \
                  (SELECT * FROM {} s WHERE s.{t} >= dirty.lo AND s.{t} <= dirty.hi OFFSET 0) s) s",
                self.source
            )
        } else {
            format!(
                "(SELECT * FROM {} s WHERE s.{t} >= $1[1] AND s.{t} <= $2[pg_catalog.array_upper($2, 1)] \
                  AND storefront.rollup_bucket({}, s.{t}) = ANY ($3::timestamptz[])) s",
                self.source,
                self.width_sql()
            )
        };
        let agg = self.aggregate(&from, self.source_time(), "(SELECT count(*) FROM gone) >= 0", self.stacked());
        let deltas = if self.stacked() {
            String::new()
        } else {
            format!(
                "gone_deltas AS (DELETE FROM {} x USING dirty WHERE x.bucket >= dirty.lo AND x.bucket <= dirty.hi RETURNING 1), ",
                self.deltas()
            )
        };
        let gone = if self.stacked() {
            "SELECT 1 FROM gone_buckets".to_string()
        } else {
            "SELECT 1 FROM gone_buckets UNION ALL SELECT 1 FROM gone_deltas".to_string()
        };
        format!(
            "WITH dirty AS (SELECT * FROM unnest($1::timestamptz[], $2::timestamptz[]) AS d (lo, hi)), \
             {deltas}\
             gone_buckets AS (DELETE FROM {table} x USING dirty WHERE x.bucket >= dirty.lo AND x.bucket <= dirty.hi RETURNING 1), \
             gone AS ({gone}), \
             w AS (INSERT INTO {table} ({cols}) {agg} RETURNING 1) \
             SELECT count(*) FROM w",
            table = self.table(),
            cols = self.all_columns().join(", "),
        )
    }

    /// Is there an index whose first column is the time column on the
    /// source or on any relation under it ($1: the source's OID)?
    pub fn time_index_sql(&self) -> String {
        format!(
            "WITH RECURSIVE tree(rel) AS (
                 SELECT $1::pg_catalog.oid
                 UNION
                 SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.rel
             )
             SELECT EXISTS (SELECT 1 FROM tree JOIN pg_catalog.pg_index x ON x.indrelid = tree.rel
                            JOIN pg_catalog.pg_attribute a ON a.attrelid = tree.rel AND a.attnum = x.indkey[0]
                            WHERE a.attname = {})",
            literal(self.source_time())
        )
    }
}

/// The first bucket that starts inside the timestamp range (the buckets
/// of earlier times saturate to -infinity; see rollup_bucket).
pub fn first_real_bucket(plan: Plan) -> i64 {
    use bucket::{END_TIMESTAMP, MIN_TIMESTAMP};
    let real = |t: i64| matches!(bucket::bucket_ts(plan, t, None), Ok(b) if b >= MIN_TIMESTAMP);
    // bucket_ts is monotonic: search the smallest t whose bucket is real
    // (that t starts its bucket)
    let (mut lo, mut hi) = (MIN_TIMESTAMP, END_TIMESTAMP - 1);
    if real(lo) {
        return lo;
    }
    if !real(hi) {
        return bucket::NOEND;
    }
    while (hi as i128) - (lo as i128) > 1 {
        let mid = ((lo as i128 + hi as i128) / 2) as i64;
        if real(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// Where the bucket starting at `b` ends (exclusive): the next bucket's
/// start; the first real bucket for the -infinity bucket; NOEND for the
/// last bucket of the range and for +infinity.
pub fn bucket_end(plan: Plan, w: Width, b: i64) -> i64 {
    use bucket::{END_TIMESTAMP, NOBEGIN, NOEND};
    if b == NOBEGIN {
        return first_real_bucket(plan);
    }
    if b == NOEND {
        return NOEND;
    }
    let next = match plan {
        Plan::Fixed(p) => b.checked_add(p).ok_or(bucket::BucketError::OutOfRange),
        Plan::Months(_) => bucket::add_interval(b, w),
    };
    match next {
        Ok(n) if n < END_TIMESTAMP => n,
        _ => NOEND,
    }
}

/// The source times a sorted list of bucket starts covers, as inclusive
/// ranges [lo, hi] with consecutive buckets merged: finite times map to
/// finite buckets only (the last bucket ends just before the end of the
/// range, so +infinity rows stay in their own bucket).
pub fn dirty_ranges(plan: Plan, w: Width, buckets: &[i64]) -> Vec<(i64, i64)> {
    use bucket::{END_TIMESTAMP, NOEND};
    let mut out: Vec<(i64, i64, i64)> = Vec::new(); // lo, end (exclusive), hi (inclusive)
    for &b in buckets {
        let end = bucket_end(plan, w, b);
        let hi = if b == NOEND {
            NOEND
        } else if end == NOEND {
            END_TIMESTAMP - 1
        } else {
            end - 1
        };
        match out.last_mut() {
            Some(last) if last.1 == b && b != NOEND => {
                last.1 = end;
                last.2 = hi;
            }
            Some(last) if b <= last.2 => {}
            _ => out.push((b, end, hi)),
        }
    }
    out.into_iter().map(|(lo, _, hi)| (lo, hi)).collect()
}

/// The first bucket all of whose source rows are still there, given the
/// source's retention horizon (rows before it were dropped): buckets
/// before it are never re-aggregated from the source.
pub fn first_whole_bucket(plan: Plan, w: Width, horizon: Option<i64>) -> i64 {
    let Some(h) = horizon else { return bucket::NOBEGIN };
    if !bucket::is_finite(h) {
        return h;
    }
    match bucket::bucket_ts(plan, h, None) {
        Ok(b) if b == h => b,
        Ok(b) if b >= bucket::MIN_TIMESTAMP => bucket_end(plan, w, b),
        _ => bucket_end(plan, w, bucket::NOBEGIN),
    }
}

/// The bucket holding a valid timestamp; -infinity if that bucket would
/// start before the timestamp range (as rollup_bucket does).
pub fn bucket_start_saturating(plan: Plan, t: i64) -> i64 {
    if !bucket::is_finite(t) {
        return t;
    }
    match bucket::bucket_ts(plan, t, None) {
        Ok(b) if b >= bucket::MIN_TIMESTAMP => b,
        _ => bucket::NOBEGIN,
    }
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
    StoreError::new(Kind::UndefinedObject, format!("rollup \"{}\" does not exist", crate::orders::items::clip(name, 64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000;

    fn spec(stacked: bool) -> Spec {
        Spec {
            name: "orders_hourly".into(),
            schema: "analytics".into(),
            source: if stacked { "\"analytics\".\"orders_minutely_buckets\"".into() } else { "\"storefront\".\"orders\"".into() },
            source_view: stacked.then(|| "\"analytics\".\"orders_minutely\"".into()),
            time_col: "placed_at".into(),
            width: Width::new(0, 0, H),
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
        assert_eq!(parse_agg("MAX( v )").unwrap().canonical(), "max(v)");
        assert_eq!(parse_agg("count(*)").unwrap().canonical(), "count");
    }

    #[test]
    fn names() {
        assert!(normalize_name("orders_hourly").is_ok());
        assert!(normalize_name("Orders").is_err());
        assert!(normalize_name("1x").is_err());
        assert!(normalize_name("a;b").is_err());
        assert!(normalize_name(&"x".repeat(49)).is_err());
    }

    #[test]
    fn stored_columns_compose() {
        let s = stored_columns(&spec(false).aggs);
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["n", "sum_total_cents", "n_total_cents", "max_total_cents"]);
        assert_eq!(s[1].raw, "sum(\"total_cents\")");
        assert_eq!(s[1].stacked, "sum(sum_total_cents)");
        assert_eq!(s[2].stacked, "sum(n_total_cents)::bigint");
        assert_eq!(s[0].combine_sql(), "\"n\" = b.\"n\" + excluded.\"n\"");
        assert_eq!(
            s[1].combine_sql(),
            "\"sum_total_cents\" = coalesce(b.\"sum_total_cents\" + excluded.\"sum_total_cents\", b.\"sum_total_cents\", excluded.\"sum_total_cents\")"
        );
        assert_eq!(s[3].combine_sql(), "\"max_total_cents\" = greatest(b.\"max_total_cents\", excluded.\"max_total_cents\")");
        assert_eq!(
            final_columns(&spec(false).aggs),
            vec![("avg_total_cents".to_string(), "sum_total_cents / nullif(n_total_cents, 0)".to_string())]
        );
        let series: Vec<String> = series_columns(&spec(false).aggs).into_iter().map(|(n, _)| n).collect();
        assert_eq!(series, ["count", "sum_total_cents", "avg_total_cents", "max_total_cents"]);
    }

    #[test]
    fn generated_sql() {
        let raw = spec(false);
        assert_eq!(
            raw.select_range_sql(),
            "SELECT storefront.rollup_bucket('01:00:00'::interval, \"placed_at\") AS bucket, \"currency\", count(*)::bigint AS \"n\", \
             sum(\"total_cents\") AS \"sum_total_cents\", count(\"total_cents\")::bigint AS \"n_total_cents\", \
             max(\"total_cents\") AS \"max_total_cents\" FROM \"storefront\".\"orders\" WHERE \"placed_at\" >= $1 AND \"placed_at\" < $2 GROUP BY 1, 2"
        );
        let ddl = raw.create_table_sql();
        assert!(ddl[0].starts_with("CREATE TABLE \"analytics\".\"orders_hourly_buckets\" AS SELECT"));
        assert!(ddl[0].ends_with("WITH NO DATA"));
        assert_eq!(
            ddl[2],
            "CREATE UNIQUE INDEX \"orders_hourly_buckets_key\" ON \"analytics\".\"orders_hourly_buckets\" (bucket, \"currency\") NULLS NOT DISTINCT"
        );
        assert_eq!(
            raw.create_deltas_sql()[0],
            "CREATE TABLE \"analytics\".\"orders_hourly_deltas\" AS SELECT b.*, NULL::bigint AS gone, \
             b.\"max_total_cents\" AS \"gone_max_total_cents\" FROM \"analytics\".\"orders_hourly_buckets\" b WITH NO DATA"
        );
        let view = raw.create_view_sql();
        assert!(view.contains(
            "FROM \"analytics\".\"orders_hourly_buckets\" WHERE bucket < storefront.rollup_watermark('orders_hourly') UNION ALL"
        ));
        assert!(view.contains("FROM \"storefront\".\"orders\" WHERE \"placed_at\" >= storefront.rollup_watermark('orders_hourly')"));
        assert!(view.contains("sum_total_cents / nullif(n_total_cents, 0) AS \"avg_total_cents\""));
        assert_eq!(
            raw.create_series_view_sql(),
            "CREATE VIEW \"analytics\".\"orders_hourly_series\" AS SELECT bucket AS \"time\", \"n\" AS \"count\", \"sum_total_cents\", \
             \"avg_total_cents\", \"max_total_cents\", \"currency\" FROM \"analytics\".\"orders_hourly\""
        );

        let merge = raw.merge_sql();
        assert!(merge.starts_with("WITH j AS (SELECT bucket, \"currency\", sum(n)::bigint AS \"n\""));
        assert!(merge.contains("sum(gone) AS gone, max(\"gone_max_total_cents\") AS \"gone_max_total_cents\" FROM \"analytics\".\"orders_hourly_deltas\""));
        assert!(merge.contains("ON b.bucket = d.bucket AND b.\"currency\" IS NOT DISTINCT FROM d.\"currency\" WHERE d.gone > 0 AND d.bucket >= $2"));
        // a retracted maximum that reaches what stays: the row holding it may be gone
        assert!(merge.contains(
            "(d.\"gone_max_total_cents\" IS NOT NULL AND NOT coalesce(d.\"gone_max_total_cents\" < greatest(b.\"max_total_cents\", d.\"max_total_cents\"), false))"
        ));
        // a sum: floating point, or exactly zero
        assert!(merge.contains("pg_catalog.pg_typeof(d.\"sum_total_cents\") NOT IN ('real'::pg_catalog.regtype, 'double precision'::pg_catalog.regtype)"));
        assert!(merge.contains("AND coalesce(b.\"sum_total_cents\" + d.\"sum_total_cents\", b.\"sum_total_cents\", d.\"sum_total_cents\") <> d.\"sum_total_cents\" - d.\"sum_total_cents\""));
        assert!(merge.contains("d AS (DELETE FROM \"analytics\".\"orders_hourly_deltas\" WHERE bucket = ANY($1) AND bucket NOT IN (SELECT bucket FROM redo) RETURNING *)"));
        // before the retention horizon: late inserts only
        assert!(merge.contains("FROM d WHERE d.gone IS NULL OR d.bucket >= $2 GROUP BY 1, 2"));
        assert!(merge.contains("ON CONFLICT (bucket, \"currency\") DO UPDATE SET \"n\" = b.\"n\" + excluded.\"n\""));
        assert!(merge.ends_with(
            "SELECT (SELECT count(*) FROM w), (SELECT array_agg(bucket ORDER BY bucket) FROM redo), \
             (SELECT count(*) FROM d WHERE d.gone > 0 AND d.bucket >= $2)"
        ));
        assert_eq!(
            raw.prune_sql(),
            "WITH p AS (DELETE FROM \"analytics\".\"orders_hourly_buckets\" WHERE bucket = ANY($1) AND n <= 0 RETURNING 1) SELECT count(*) FROM p"
        );

        // an UPDATE retracts the old rows and adds the new ones; a DELETE only retracts
        let update = raw.capture_change_sql(true);
        assert!(update.starts_with(
            "WITH o AS (INSERT INTO \"analytics\".\"orders_hourly_deltas\" (bucket, \"currency\", \"n\", \"sum_total_cents\", \"n_total_cents\", gone, \"gone_max_total_cents\") \
             SELECT storefront.rollup_bucket('01:00:00'::interval, \"placed_at\"), \"currency\", (count(*)::bigint) * -1, (sum(\"total_cents\")) * -1, \
             (count(\"total_cents\")::bigint) * -1, count(*)::bigint, max(\"total_cents\") FROM storefront_old_rows WHERE \"placed_at\" < $1 GROUP BY 1, 2 RETURNING bucket)"
        ));
        assert!(update.contains("n AS (INSERT INTO \"analytics\".\"orders_hourly_deltas\" (bucket, \"currency\", \"n\", \"sum_total_cents\", \"n_total_cents\", \"max_total_cents\", gone) SELECT *, 0 FROM (SELECT"));
        assert!(update.contains("FROM storefront_new_rows WHERE \"placed_at\" < $1"));
        let delete = raw.capture_change_sql(false);
        assert!(!delete.contains(NEW_ROWS));
        assert!(delete.ends_with("SELECT array_agg(DISTINCT bucket ORDER BY bucket) FROM o"));
        // a rollup of counts only: every retraction composes
        let counts = Spec { aggs: vec![Agg { f: AggFn::Count, col: None }], ..raw.clone() };
        assert!(counts.merge_sql().contains("WHERE d.gone > 0 AND d.bucket >= $2 AND (false))"));

        let rebuild = raw.rebuild_sql(true);
        assert!(rebuild.contains("gone_deltas AS (DELETE FROM \"analytics\".\"orders_hourly_deltas\""));
        assert!(rebuild.contains(
            "CROSS JOIN LATERAL (SELECT * FROM \"storefront\".\"orders\" s WHERE s.\"placed_at\" >= dirty.lo AND s.\"placed_at\" <= dirty.hi OFFSET 0) s) s WHERE (SELECT count(*) FROM gone) >= 0"
        ));
        let scan = raw.rebuild_sql(false);
        assert!(scan.contains("AND storefront.rollup_bucket('01:00:00'::interval, s.\"placed_at\") = ANY ($3::timestamptz[])) s WHERE"));

        let capture = raw.capture_insert_sql();
        assert!(capture.contains("FROM storefront_new_rows WHERE \"placed_at\" < $1"));
        assert!(capture.starts_with("WITH d AS (INSERT INTO \"analytics\".\"orders_hourly_deltas\""));
        assert_eq!(
            raw.touched_buckets_sql(&[OLD_ROWS, NEW_ROWS]),
            "SELECT array_agg(DISTINCT b ORDER BY b) FROM (SELECT storefront.rollup_bucket('01:00:00'::interval, \"placed_at\") AS b \
             FROM storefront_old_rows WHERE \"placed_at\" < $1 UNION ALL SELECT storefront.rollup_bucket('01:00:00'::interval, \"placed_at\") AS b \
             FROM storefront_new_rows WHERE \"placed_at\" < $1) x"
        );

        let stacked = spec(true);
        assert!(stacked.select_range_sql().contains("sum(n)::bigint AS \"n\""));
        assert!(stacked
            .select_range_sql()
            .contains("FROM \"analytics\".\"orders_minutely_buckets\" WHERE \"bucket\" >= $1 AND \"bucket\" < $2"));
        assert!(stacked
            .create_view_sql()
            .contains("FROM \"analytics\".\"orders_minutely\" WHERE \"bucket\" >= storefront.rollup_watermark"));
        assert!(!stacked.rebuild_sql(true).contains("deltas"));
    }

    #[test]
    fn ranges_merge_consecutive_buckets() {
        let w = Width::new(0, 0, H);
        let p = Plan::Fixed(H);
        assert_eq!(dirty_ranges(p, w, &[0, H, 2 * H, 5 * H]), vec![(0, 3 * H - 1), (5 * H, 6 * H - 1)]);
        assert_eq!(dirty_ranges(p, w, &[]), vec![]);
        // month buckets: January and February 2000 are consecutive
        let m = Width::new(1, 0, 0);
        let jan = bucket::DEFAULT_ORIGIN - 2 * bucket::USECS_PER_DAY; // 2000-01-01
        let feb = jan + 31 * bucket::USECS_PER_DAY;
        let mar = feb + 29 * bucket::USECS_PER_DAY;
        assert_eq!(dirty_ranges(Plan::Months(1), m, &[jan, feb]), vec![(jan, mar - 1)]);
    }

    /// No stored time can make the range arithmetic fail: the -infinity
    /// bucket covers everything before the first real bucket, the last
    /// bucket stops short of +infinity, and +infinity stays alone.
    #[test]
    fn ranges_are_total() {
        use bucket::{END_TIMESTAMP, MIN_TIMESTAMP, NOBEGIN, NOEND};
        for plan in [Plan::Fixed(H), Plan::Fixed(7 * bucket::USECS_PER_DAY), Plan::Months(1), Plan::Months(12)] {
            let w = match plan {
                Plan::Fixed(p) => Width::new(0, 0, p),
                Plan::Months(m) => Width::new(m, 0, 0),
            };
            let first = first_real_bucket(plan);
            assert!(first >= MIN_TIMESTAMP, "{plan:?}");
            assert_eq!(bucket::bucket_ts(plan, first, None).unwrap(), first, "{plan:?}");
            assert_eq!(bucket_start_saturating(plan, first - 1), NOBEGIN, "{plan:?}");
            assert_eq!(dirty_ranges(plan, w, &[NOBEGIN]), vec![(NOBEGIN, first - 1)]);
            assert_eq!(dirty_ranges(plan, w, &[NOEND]), vec![(NOEND, NOEND)]);
            let last = bucket_start_saturating(plan, END_TIMESTAMP - 1);
            assert_eq!(dirty_ranges(plan, w, &[last]), vec![(last, END_TIMESTAMP - 1)]);
            assert_eq!(dirty_ranges(plan, w, &[last, NOEND]), vec![(last, END_TIMESTAMP - 1), (NOEND, NOEND)]);
            assert_eq!(dirty_ranges(plan, w, &[NOBEGIN, first]).len(), 1);
        }
    }

    #[test]
    fn horizon_buckets() {
        let w = Width::new(0, 0, H);
        let p = Plan::Fixed(H);
        assert_eq!(first_whole_bucket(p, w, None), bucket::NOBEGIN);
        assert_eq!(first_whole_bucket(p, w, Some(5 * H)), 5 * H);
        assert_eq!(first_whole_bucket(p, w, Some(5 * H + 1)), 6 * H);
    }

    #[test]
    fn which_widths_compose() {
        let (m, h, d, w) = (60_000_000, H, bucket::USECS_PER_DAY, 7 * bucket::USECS_PER_DAY);
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
