//! SCD Type 2 merge planning: checks a `scd2_upsert` call against the
//! columns of its target and source and writes the SQL that carries it
//! out. Pure: the catalog facts come in as plain values (and two
//! closures for what only PostgreSQL can answer: may a source type be
//! assigned to a target type, and which operator is a type's equality),
//! so every rule here is unit-tested without a database.
//!
//! The merge, for a batch of source rows (each row says "from time `ts`
//! on, this key has these values"; `ts` is `as_of`, or the row's own
//! `changed_at` column):
//!
//! * fast path, one statement: rows later than their key's current
//!   version (or of keys with no version at or after them) are compared
//!   with the current version, or with the previous row of the same key
//!   in time order; each row that differs becomes a version, chained
//!   `[ts, next ts)`, the last one current; the current version is closed
//!   at the first new version's `ts`;
//! * slow path, row by row and only for keys with a row at or before their
//!   current version (late data, restated versions): each row looks up the
//!   version covering its `ts` and either leaves it (same values), rewrites
//!   it (same start), or splits it at `ts`;
//! * deletes (`close` / `version`): live current versions of keys missing
//!   from the source are closed at `as_of` (and followed by a tombstone).
//!
//! Columns are always quoted, values never leave SQL (rows are referred to
//! by key and time), and comparisons use each target column type's own
//! equality operator, NULL-safe.

use crate::errors::{Kind, StoreError, StoreResult};

/// The validity columns every SCD2 target has.
pub const VALID_FROM: &str = "valid_from";
pub const VALID_TO: &str = "valid_to";
pub const IS_CURRENT: &str = "is_current";
pub const IS_DELETED: &str = "is_deleted";
const TIMESTAMPTZ: &str = "timestamp with time zone";
/// Internal column names of the generated SQL start with this; user
/// columns may not.
const RESERVED: &str = "scd2#";
/// The temporary table a merge stages its versions in (dropped at the end
/// of each call).
pub const STAGE: &str = "pg_temp.\"scd2#stage\"";

/// A column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Col {
    pub name: String,
    /// format_type(atttypid, atttypmod), schema-qualified where needed
    pub type_sql: String,
    pub type_oid: u32,
    pub typmod: i32,
    pub not_null: bool,
    pub has_default: bool,
    /// GENERATED ... AS IDENTITY
    pub identity: bool,
    /// GENERATED ALWAYS AS (...) STORED
    pub generated: bool,
}

/// A relation: its quoted, qualified name, its name for messages, kind
/// (pg_class.relkind), columns in order, and its plain indexes (no
/// predicate, no expressions) as column lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rel {
    pub sql: String,
    pub display: String,
    pub kind: char,
    pub columns: Vec<Col>,
    pub indexes: Vec<Index>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub columns: Vec<String>,
    pub unique: bool,
    /// a btree: it reads its rows in key order
    pub ordered: bool,
}

impl Rel {
    pub fn col(&self, name: &str) -> Option<&Col> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// What happens to current versions of keys missing from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletes {
    Ignore,
    Close,
    Version,
}

impl Deletes {
    pub fn parse(s: Option<&str>) -> StoreResult<Deletes> {
        match s.map(str::trim) {
            Some("ignore") => Ok(Deletes::Ignore),
            Some("close") => Ok(Deletes::Close),
            Some("version") => Ok(Deletes::Version),
            Some(other) => Err(StoreError::invalid(format!("invalid deletes mode \"{}\"", shorten(other)))
                .hint("Use 'ignore', 'close' or 'version'.")),
            None => Err(StoreError::null("deletes")),
        }
    }
}

/// What a change older than its key's current version does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Late {
    /// it is placed in history: the version covering its time is split
    Split,
    /// it is refused (55000) and nothing changes
    Reject,
}

impl Late {
    pub fn parse(s: Option<&str>) -> StoreResult<Late> {
        match s.map(str::trim) {
            Some("split") => Ok(Late::Split),
            Some("reject") => Ok(Late::Reject),
            Some(other) => Err(StoreError::invalid(format!("invalid late_changes mode \"{}\"", shorten(other)))
                .hint("Use 'split' or 'reject'.")),
            None => Err(StoreError::null("late_changes")),
        }
    }
}

/// A call, as its arguments came (NULL elements included).
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub key_columns: &'a [Option<String>],
    pub tracked_columns: &'a [Option<String>],
    pub changed_at_column: Option<&'a str>,
    pub deletes: Deletes,
    pub late: Late,
}

/// What PostgreSQL knows about types: can a value of the first type be
/// assigned to the second (assignment cast), and the qualified equality
/// operator of a type (`OPERATOR(pg_catalog.=)`), if it has one.
pub trait TypeFacts {
    fn assignable(&self, from: u32, to: u32) -> bool;
    fn equality(&self, type_oid: u32) -> Option<String>;
}

/// The SQL of one call. Parameters: `$1` as_of in `validate`, `fast`,
/// `late_keys` and `deletes`; the slow-path statements take
/// `($1 text[] key, $2 ts, $3 as_of, $4 timestamptz, $5 boolean)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// one row: source rows, then NULLs per key column, then (with a
    /// change-time column) NULL, non-finite and after-as_of times
    pub validate: String,
    /// up to 6 rows (description, count) of keys with several rows at one
    /// time; None when the source's own unique index rules them out
    pub duplicates: Option<String>,
    /// stage the rows that make versions, and the rows of keys left for
    /// the slow path, in a temporary table ([`STAGE`]); `$1` is as_of
    pub stage: String,
    /// source and target are both read in key order by a btree index, so
    /// the stage statement runs without hash joins: a merge join of the
    /// two index scans instead of a hash table of the whole source
    pub merge_join: bool,
    /// close the current versions the staged rows replace
    pub close: String,
    /// insert the staged versions
    pub insert: String,
    /// one row: new-life versions, all versions, closes expected, rows of
    /// keys left for the slow path
    pub tally: String,
    /// keys (as text[]) with a row that its covering version does not match
    pub late_keys: String,
    /// the times of one key's source rows, in order
    pub key_times: String,
    /// the version covering (key, ts): valid_from, valid_to, is_current,
    /// dead, same values as the source row
    pub cover: String,
    /// rewrite the version starting at ts with the source row's values
    /// (None when the target has nothing but keys to rewrite)
    pub correct: Option<String>,
    /// close the version of the key starting at $4 at ts (returns 1 row)
    pub split_close: String,
    /// insert the source row (key, ts) as [ts, $4), is_current $5
    pub insert_row: String,
    /// the first version start after ts
    pub next_start: String,
    /// the current version's start (for messages)
    pub current_start: String,
    /// close (and tombstone) current versions of keys not in the source;
    /// one row: closed, tombstones
    pub deletes: Option<String>,
    /// "(id, region)" for messages
    pub key_list: String,
    pub source_display: String,
    pub target_display: String,
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 64 {
        format!("{}...", s.chars().take(64).collect::<String>())
    } else {
        s.to_string()
    }
}

/// A quoted identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A quoted string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn undefined_column(col: &str, rel: &Rel) -> StoreError {
    StoreError::new(
        Kind::UndefinedColumn,
        format!("column \"{}\" of relation \"{}\" does not exist", shorten(col), rel.display),
    )
}

/// A list of column names from an argument: no NULL, no duplicate, no
/// empty name.
fn names(arg: &str, list: &[Option<String>], allow_empty: bool) -> StoreResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for n in list {
        let n = n.as_deref().ok_or_else(|| {
            StoreError::new(Kind::NullValue, format!("{arg} must not contain null"))
        })?;
        if n.is_empty() {
            return Err(StoreError::invalid(format!("{arg} must not contain an empty name")));
        }
        if out.iter().any(|o| o == n) {
            return Err(StoreError::invalid(format!("column \"{}\" appears twice in {arg}", shorten(n))));
        }
        out.push(n.to_string());
    }
    if out.is_empty() && !allow_empty {
        return Err(StoreError::invalid(format!("{arg} must name at least one column")));
    }
    Ok(out)
}

/// A column that the merge copies from the source into new versions: its
/// name and the source expression (cast to the target's type if needed),
/// relative to alias `s`.
#[derive(Debug, Clone)]
struct Copied {
    name: String,
    q: String,
    expr: String,
    eq: Option<String>,
    type_sql: String,
}

impl Copied {
    fn expr_on(&self, alias: &str) -> String {
        self.expr.replace("s.", &format!("{alias}."))
    }
}

/// NULL-safe "a and b differ", with the type's own equality operator.
fn differs(a: &str, b: &str, eq: &str) -> String {
    format!("NOT coalesce({a} {eq} {b}, {a} IS NULL AND {b} IS NULL)")
}

/// Check the call and write its SQL.
pub fn plan(req: &Request<'_>, target: &Rel, source: &Rel, facts: &dyn TypeFacts) -> StoreResult<Plan> {
    if !matches!(target.kind, 'r' | 'p') {
        return Err(StoreError::invalid(format!("target \"{}\" is not a table", target.display))
            .detail("An SCD2 target is a table (plain or partitioned) that new versions are inserted into."));
    }
    if !matches!(source.kind, 'r' | 'p' | 'v' | 'm' | 'f') {
        return Err(StoreError::invalid(format!("source \"{}\" is not a table or view", source.display)));
    }
    if target.sql == source.sql {
        return Err(StoreError::invalid(format!("source and target are the same relation \"{}\"", target.display)));
    }
    for rel in [target, source] {
        if let Some(c) = rel.columns.iter().find(|c| c.name.starts_with(RESERVED)) {
            return Err(StoreError::invalid(format!(
                "column \"{}\" of relation \"{}\" has a reserved name",
                shorten(&c.name),
                rel.display
            ))
            .detail(format!("Names starting with \"{RESERVED}\" are used by scd2_upsert itself.")));
        }
    }

    // the validity columns
    let validity = [(VALID_FROM, TIMESTAMPTZ), (VALID_TO, TIMESTAMPTZ), (IS_CURRENT, "boolean")];
    for (name, ty) in validity {
        match target.col(name) {
            None => {
                return Err(StoreError::invalid(format!(
                    "target \"{}\" has no column \"{name}\"",
                    target.display
                ))
                .detail("An SCD2 target has the columns valid_from timestamptz, valid_to timestamptz and is_current boolean.")
                .hint(format!("Add it: ALTER TABLE {} ADD COLUMN {name} {ty} NOT NULL;", target.sql)))
            }
            Some(c) if c.type_sql != ty => {
                return Err(StoreError::invalid(format!(
                    "column \"{name}\" of target \"{}\" has type {}, not {ty}",
                    target.display, c.type_sql
                ))
                .detail("An SCD2 target has the columns valid_from timestamptz, valid_to timestamptz and is_current boolean."))
            }
            Some(c) if c.generated || c.identity => {
                return Err(StoreError::invalid(format!(
                    "column \"{name}\" of target \"{}\" is generated",
                    target.display
                )))
            }
            Some(_) => {}
        }
    }
    let deleted_col = target.col(IS_DELETED);
    match deleted_col {
        Some(c) if c.type_sql != "boolean" => {
            return Err(StoreError::invalid(format!(
                "column \"{IS_DELETED}\" of target \"{}\" has type {}, not boolean",
                target.display, c.type_sql
            )))
        }
        None if req.deletes == Deletes::Version => {
            return Err(StoreError::invalid(format!(
                "target \"{}\" has no column \"{IS_DELETED}\"",
                target.display
            ))
            .detail("With deletes => 'version' a deleted key gets a tombstone version marked is_deleted = true.")
            .hint(format!("Add it: ALTER TABLE {} ADD COLUMN {IS_DELETED} boolean NOT NULL DEFAULT false;", target.sql)))
        }
        _ => {}
    }
    let has_deleted = deleted_col.is_some();
    let is_validity = |n: &str| n == VALID_FROM || n == VALID_TO || n == IS_CURRENT || n == IS_DELETED;

    let keys = names("key_columns", req.key_columns, false)?;
    let tracked = names("tracked_columns", req.tracked_columns, true)?;
    if let Some(k) = keys.iter().find(|k| tracked.contains(k)) {
        return Err(StoreError::invalid(format!(
            "column \"{}\" is both a key column and a tracked column",
            shorten(k)
        )));
    }
    for n in keys.iter().chain(tracked.iter()) {
        if is_validity(n) {
            return Err(StoreError::invalid(format!(
                "column \"{n}\" is a validity column and cannot be a key or tracked column"
            )));
        }
        let t = target.col(n).ok_or_else(|| undefined_column(n, target))?;
        source.col(n).ok_or_else(|| undefined_column(n, source))?;
        if t.generated || t.identity {
            return Err(StoreError::invalid(format!(
                "column \"{}\" of target \"{}\" is generated by the database and cannot be a key or tracked column",
                shorten(n),
                target.display
            )));
        }
    }
    let changed_at = match req.changed_at_column {
        None => None,
        Some(c) => {
            let col = source.col(c).ok_or_else(|| undefined_column(c, source))?;
            if !matches!(col.type_sql.as_str(), TIMESTAMPTZ | "timestamp without time zone" | "date") {
                return Err(StoreError::invalid(format!(
                    "column \"{}\" of source \"{}\" has type {}, not a time",
                    shorten(c),
                    source.display,
                    col.type_sql
                ))
                .detail("The change-time column is timestamptz, timestamp or date."));
            }
            Some(col)
        }
    };

    // every column copied from the source: keys, tracked, then the
    // untracked columns both relations have (never validity columns, nor
    // what the database generates)
    let mut copied: Vec<Copied> = Vec::new();
    for t in &target.columns {
        if is_validity(&t.name) || t.identity || t.generated {
            continue;
        }
        let Some(s) = source.col(&t.name) else {
            if t.not_null && !t.has_default {
                return Err(StoreError::invalid(format!(
                    "column \"{}\" of target \"{}\" is NOT NULL and not in source \"{}\"",
                    shorten(&t.name),
                    target.display,
                    source.display
                ))
                .detail("New versions get their values from the source, or the column's default."));
            }
            continue;
        };
        if !facts.assignable(s.type_oid, t.type_oid) {
            return Err(StoreError::invalid(format!(
                "column \"{}\" has type {} in source \"{}\" but {} in target \"{}\"",
                shorten(&t.name),
                s.type_sql,
                source.display,
                t.type_sql,
                target.display
            ))
            .detail("A source column must be assignable to the target column of the same name."));
        }
        let q = ident(&t.name);
        let expr = if s.type_oid == t.type_oid && s.typmod == t.typmod {
            format!("s.{q}")
        } else {
            format!("CAST(s.{q} AS {})", t.type_sql)
        };
        let compared = keys.contains(&t.name) || tracked.contains(&t.name);
        let eq = facts.equality(t.type_oid);
        if compared && eq.is_none() {
            return Err(StoreError::invalid(format!(
                "column \"{}\" of type {} cannot be compared",
                shorten(&t.name),
                t.type_sql
            ))
            .detail(format!("Type {} has no equality operator.", t.type_sql))
            .hint("Track a comparable column instead (jsonb instead of json, for example)."));
        }
        copied.push(Copied { name: t.name.clone(), q, expr, eq, type_sql: t.type_sql.clone() });
    }
    let find = |n: &str| copied.iter().find(|c| c.name == n).cloned();
    let key_cols: Vec<Copied> = keys.iter().filter_map(|k| find(k)).collect();
    let tracked_cols: Vec<Copied> = tracked.iter().filter_map(|k| find(k)).collect();
    let eq_of = |c: &Copied| c.eq.clone().unwrap_or_else(|| "OPERATOR(pg_catalog.=)".into());

    let t_sql = &target.sql;
    let s_sql = &source.sql;
    let ts_of = |alias: &str| match changed_at {
        None => "$1::timestamptz".to_string(),
        Some(c) if c.type_sql == TIMESTAMPTZ => format!("{alias}.{}", ident(&c.name)),
        Some(c) => format!("CAST({alias}.{} AS timestamp with time zone)", ident(&c.name)),
    };
    let key_names: Vec<String> = keys.iter().map(|k| ident(k)).collect();
    let key_list = format!("({})", keys.join(", "));
    let join_on = |a: &str, b: &str| -> String {
        key_cols
            .iter()
            .map(|k| format!("{a}.{q} {eq} {b}.{q}", q = k.q, eq = eq_of(k)))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let any_differs = |a: &str, b: &str| -> String {
        if tracked_cols.is_empty() {
            "false".to_string()
        } else {
            tracked_cols
                .iter()
                .map(|c| format!("({})", differs(&format!("{a}.{}", c.q), &format!("{b}.{}", c.q), &eq_of(c))))
                .collect::<Vec<_>>()
                .join(" OR ")
        }
    };
    let dead = |alias: &str| if has_deleted { format!("coalesce({alias}.{}, false)", ident(IS_DELETED)) } else { "false".into() };
    let copy_names = copied.iter().map(|c| c.q.clone()).collect::<Vec<_>>().join(", ");
    let insert_cols = if has_deleted {
        format!("{copy_names}, {VALID_FROM}, {VALID_TO}, {IS_CURRENT}, {IS_DELETED}")
    } else {
        format!("{copy_names}, {VALID_FROM}, {VALID_TO}, {IS_CURRENT}")
    };
    let live = if has_deleted { ", false" } else { "" };

    // ------------------------------------------------------------ checks --
    let mut checks = vec!["count(*)".to_string()];
    for k in &key_cols {
        checks.push(format!("count(*) FILTER (WHERE s.{} IS NULL)", k.q));
    }
    if let Some(c) = changed_at {
        let ts = ts_of("s");
        checks.push(format!("count(*) FILTER (WHERE s.{} IS NULL)", ident(&c.name)));
        checks.push(format!("count(*) FILTER (WHERE NOT isfinite({ts}))"));
        checks.push(format!("count(*) FILTER (WHERE {ts} > $1::timestamptz)"));
    }
    let validate = format!("SELECT {} FROM {s_sql} s", checks.join(", "));

    // duplicates are impossible when the source has a unique index on some
    // of the key columns (plus the change time) and its key types are the
    // target's (a cast could make two source keys one)
    let mut unique_on: Vec<&str> = keys.iter().map(String::as_str).collect();
    if let Some(c) = changed_at {
        unique_on.push(&c.name);
    }
    let same_types = keys.iter().all(|k| match (source.col(k), target.col(k)) {
        (Some(s), Some(t)) => s.type_oid == t.type_oid && s.typmod == t.typmod,
        _ => false,
    });
    let source_unique = same_types
        && source
            .indexes
            .iter()
            .any(|i| i.unique && !i.columns.is_empty() && i.columns.iter().all(|c| unique_on.contains(&c.as_str())));
    let duplicates = if source_unique {
        None
    } else {
        let texts = key_cols.iter().map(|k| format!("{}::text", k.expr)).collect::<Vec<_>>().join(", ");
        let mut group = key_cols.iter().map(|k| k.expr.clone()).collect::<Vec<_>>();
        let what = match changed_at {
            None => format!("format('Key {}=(%s) has %s rows.', concat_ws(', ', {texts}), count(*))", literal_inner(&key_list)),
            Some(_) => {
                group.push(ts_of("s"));
                format!(
                    "format('Key {}=(%s) has %s rows at %s.', concat_ws(', ', {texts}), count(*), {}::text)",
                    literal_inner(&key_list),
                    ts_of("s")
                )
            }
        };
        let group = group.join(", ");
        Some(format!(
            "SELECT {what}, count(*) FROM {s_sql} s GROUP BY {group} HAVING count(*) > 1 ORDER BY {group} LIMIT 6"
        ))
    };

    // ------------------------------------------------------------- fast --
    let src_cols = copied.iter().map(|c| format!("{} AS {}", c.expr, c.q)).collect::<Vec<_>>().join(", ");
    let src = format!("SELECT {src_cols}, {} AS \"scd2#ts\" FROM {s_sql} s", ts_of("s"));
    // does the key have a version ending after ts (so ts is inside its
    // history)? Looked up per row when the target has an index on the
    // key columns, else from the history's last ends by key.
    let leads_with_keys = |i: &Index| i.columns.len() >= keys.len() && keys.iter().all(|k| i.columns[..keys.len()].contains(k));
    let key_indexed = target.indexes.iter().any(|i| leads_with_keys(i));
    // Joining a large source with the current versions: with both sides
    // in a btree on the key, a merge join of two index scans reads each
    // once in key order, where a hash join builds a table of every source
    // row (spilling to disk past work_mem); the planner, pricing index
    // scans as random reads, picks the hash join all the same. A small
    // (delta) source still gets a nested loop of index probes.
    let merge_join = same_types
        && target.indexes.iter().any(|i| i.ordered && leads_with_keys(i))
        && source.indexes.iter().any(|i| i.ordered && leads_with_keys(i));
    let (history_join, history_after) = if key_indexed {
        (
            String::new(),
            format!(
                "EXISTS (SELECT 1 FROM {t_sql} h WHERE {} AND h.{VALID_TO} > j.\"scd2#ts\")",
                join_on("h", "j")
            ),
        )
    } else {
        (
            format!(
                " LEFT JOIN (SELECT {k}, max({VALID_TO}) AS \"scd2#last_to\" FROM {t_sql} WHERE NOT {IS_CURRENT} GROUP BY {k}) h ON {on}",
                k = key_names.join(", "),
                on = join_on("h", "s")
            ),
            "coalesce(j.\"scd2#last_to\" > j.\"scd2#ts\", false)".to_string(),
        )
    };
    let last_to = if key_indexed { "" } else { ", h.\"scd2#last_to\"" };
    let j = format!(
        "j AS (
    SELECT s.*, c.ctid AS \"scd2#cur_tid\", c.{IS_CURRENT} IS NOT NULL AS \"scd2#has_cur\", c.{VALID_FROM} AS \"scd2#cur_from\",
           {dead_c} AS \"scd2#cur_dead\", {differs} AS \"scd2#differs\"{last_to}
    FROM src s LEFT JOIN {t_sql} c ON {on} AND c.{IS_CURRENT}{history_join}
), k AS (
    SELECT j.*,
           CASE WHEN j.\"scd2#has_cur\" THEN
                j.\"scd2#ts\" < j.\"scd2#cur_from\"
                OR (j.\"scd2#ts\" = j.\"scd2#cur_from\" AND (j.\"scd2#differs\" OR j.\"scd2#cur_dead\"))
           ELSE {history_after} END AS \"scd2#late\"
    FROM j
)",
        dead_c = dead("c"),
        differs = any_differs("s", "c"),
        on = join_on("c", "s"),
    );
    let first_changes = "(NOT k.\"scd2#has_cur\" OR k.\"scd2#cur_dead\" OR (k.\"scd2#differs\" AND k.\"scd2#ts\" > k.\"scd2#cur_from\"))";
    let d = match changed_at {
        None => format!(
            "d AS MATERIALIZED (
    SELECT k.*, k.\"scd2#late\" AS \"scd2#late_key\", NULL::timestamptz AS \"scd2#next\", true AS \"scd2#first\"
    FROM k
    WHERE k.\"scd2#late\" OR {first_changes}
)"
        ),
        Some(_) => {
            let lag_differs = if tracked_cols.is_empty() {
                "false".to_string()
            } else {
                tracked_cols
                    .iter()
                    .map(|c| format!("({})", differs(&format!("k.{}", c.q), &format!("lag(k.{}) OVER o", c.q), &eq_of(c))))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            };
            let parts = key_names.iter().map(|k| format!("k.{k}")).collect::<Vec<_>>().join(", ");
            let parts_e = key_names.iter().map(|k| format!("e.{k}")).collect::<Vec<_>>().join(", ");
            format!(
                "w AS (
    SELECT k.*, bool_or(k.\"scd2#late\") OVER (PARTITION BY {parts}) AS \"scd2#late_key\",
           CASE WHEN row_number() OVER o = 1 THEN {first_changes} ELSE {lag_differs} END AS \"scd2#eff\"
    FROM k
    WINDOW o AS (PARTITION BY {parts} ORDER BY k.\"scd2#ts\")
), e AS (
    SELECT * FROM w WHERE \"scd2#late_key\" OR \"scd2#eff\"
), d AS MATERIALIZED (
    SELECT e.*,
           CASE WHEN e.\"scd2#late_key\" THEN NULL
                ELSE lead(e.\"scd2#ts\") OVER (PARTITION BY {parts_e}, e.\"scd2#late_key\" ORDER BY e.\"scd2#ts\") END AS \"scd2#next\",
           row_number() OVER (PARTITION BY {parts_e}, e.\"scd2#late_key\" ORDER BY e.\"scd2#ts\") = 1 AS \"scd2#first\"
    FROM e
)"
            )
        }
    };
    let d_copy = copied.iter().map(|c| format!("d.{}", c.q)).collect::<Vec<_>>().join(", ");
    // the rows that make versions (and the rows of late keys) are staged
    // in a temporary table, so closing and inserting are planned on their
    // real number (a handful, or a million)
    let stage = format!(
        "CREATE TEMPORARY TABLE {STAGE} ON COMMIT DROP AS
WITH src AS ({src}),
{j}, {d}
SELECT * FROM d"
    );
    // the versions to close are the current rows the stage joined: a plain
    // table finds them by their row addresses (one TID scan of exactly
    // those rows, not a scan of the whole dimension to join on the key).
    // The target is locked against other writers since the stage was
    // made, so the addresses still hold; the key and is_current are
    // checked all the same. A partitioned target joins on the key (a row
    // address is only unique within one partition).
    let closing = "NOT d.\"scd2#late_key\" AND d.\"scd2#first\" AND d.\"scd2#has_cur\"";
    let by_tid = if target.kind == 'r' {
        format!(
            " AND t.ctid = ANY (ARRAY(SELECT d.\"scd2#cur_tid\" FROM {STAGE} d WHERE {closing})) AND t.ctid = d.\"scd2#cur_tid\""
        )
    } else {
        String::new()
    };
    let close = format!(
        "UPDATE {t_sql} t SET {VALID_TO} = d.\"scd2#ts\", {IS_CURRENT} = false
FROM {STAGE} d
WHERE {closing}{by_tid} AND {on_td} AND t.{IS_CURRENT}",
        on_td = join_on("t", "d"),
    );
    let insert = format!(
        "INSERT INTO {t_sql} ({insert_cols})
SELECT {d_copy}, d.\"scd2#ts\", coalesce(d.\"scd2#next\", 'infinity'), d.\"scd2#next\" IS NULL{live}
FROM {STAGE} d
WHERE NOT d.\"scd2#late_key\""
    );
    let tally = format!(
        "SELECT count(*) FILTER (WHERE NOT \"scd2#late_key\" AND \"scd2#first\" AND (NOT \"scd2#has_cur\" OR \"scd2#cur_dead\")),
       count(*) FILTER (WHERE NOT \"scd2#late_key\"),
       count(*) FILTER (WHERE NOT \"scd2#late_key\" AND \"scd2#first\" AND \"scd2#has_cur\"),
       count(*) FILTER (WHERE \"scd2#late_key\")
FROM {STAGE}"
    );

    // ------------------------------------------------------------- slow --
    let key_param = |alias: &str, src_side: bool| -> String {
        key_cols
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let lhs = if src_side { k.expr_on(alias) } else { format!("{alias}.{}", k.q) };
                format!("{lhs} {} CAST(($1::text[])[{}] AS {})", eq_of(k), i + 1, k.type_sql)
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let ts_param = match changed_at {
        None => "$3::timestamptz = $2::timestamptz".to_string(),
        Some(_) => format!("{} = $2::timestamptz", ts_of("s")),
    };
    let src_row = format!("SELECT {src_cols} FROM {s_sql} s WHERE {} AND {ts_param}", key_param("s", true));
    let key_texts = key_cols.iter().map(|k| format!("CAST({} AS text)", k.expr)).collect::<Vec<_>>().join(", ");
    let late_keys = format!(
        "SELECT DISTINCT ARRAY[{key_texts}] AS k, {keys_order} FROM {s_sql} s
WHERE NOT EXISTS (
    SELECT 1 FROM {t_sql} v
    WHERE {on_vs} AND v.{VALID_FROM} <= {ts} AND v.{VALID_TO} > {ts} AND NOT {dead_v}
      AND NOT ({differs_vs}))
ORDER BY {keys_order_pos}",
        keys_order = key_cols.iter().enumerate().map(|(i, k)| format!("{} AS \"scd2#k{i}\"", k.expr)).collect::<Vec<_>>().join(", "),
        keys_order_pos = (0..key_cols.len()).map(|i| format!("\"scd2#k{i}\"")).collect::<Vec<_>>().join(", "),
        on_vs = key_cols.iter().map(|k| format!("v.{} {} {}", k.q, eq_of(k), k.expr)).collect::<Vec<_>>().join(" AND "),
        ts = ts_of("s"),
        dead_v = dead("v"),
        differs_vs = if tracked_cols.is_empty() {
            "false".into()
        } else {
            tracked_cols
                .iter()
                .map(|c| format!("({})", differs(&format!("v.{}", c.q), &c.expr, &eq_of(c))))
                .collect::<Vec<_>>()
                .join(" OR ")
        },
    );
    let key_times = match changed_at {
        None => format!("SELECT $3::timestamptz FROM {s_sql} s WHERE {} LIMIT 1", key_param("s", true)),
        Some(_) => format!("SELECT {ts} FROM {s_sql} s WHERE {} ORDER BY 1", key_param("s", true), ts = ts_of("s")),
    };
    let cover = format!(
        "SELECT v.{VALID_FROM}, v.{VALID_TO}, v.{IS_CURRENT}, {dead_v}, NOT ({differs_vr})
FROM {t_sql} v, ({src_row}) r
WHERE {kv} AND v.{VALID_FROM} <= $2::timestamptz AND v.{VALID_TO} > $2::timestamptz",
        dead_v = dead("v"),
        differs_vr = any_differs("v", "r"),
        kv = key_param("v", false),
    );
    let mut sets: Vec<String> = copied
        .iter()
        .filter(|c| !keys.contains(&c.name))
        .map(|c| format!("{q} = r.{q}", q = c.q))
        .collect();
    if has_deleted {
        sets.push(format!("{} = false", ident(IS_DELETED)));
    }
    let correct = (!sets.is_empty()).then(|| {
        format!(
            "UPDATE {t_sql} v SET {} FROM ({src_row}) r WHERE {} AND v.{VALID_FROM} = $2::timestamptz RETURNING 1",
            sets.join(", "),
            key_param("v", false)
        )
    });
    let split_close = format!(
        "UPDATE {t_sql} v SET {VALID_TO} = $2::timestamptz, {IS_CURRENT} = false
WHERE {} AND v.{VALID_FROM} = $4::timestamptz RETURNING 1",
        key_param("v", false)
    );
    let r_copy = copied.iter().map(|c| format!("r.{}", c.q)).collect::<Vec<_>>().join(", ");
    let insert_row = format!(
        "INSERT INTO {t_sql} ({insert_cols})
SELECT {r_copy}, $2::timestamptz, $4::timestamptz, $5::boolean{live} FROM ({src_row}) r RETURNING 1"
    );
    let next_start = format!(
        "SELECT min(v.{VALID_FROM}) FROM {t_sql} v WHERE {} AND v.{VALID_FROM} > $2::timestamptz",
        key_param("v", false)
    );
    let current_start = format!(
        "SELECT v.{VALID_FROM}::text FROM {t_sql} v WHERE {} AND v.{IS_CURRENT}",
        key_param("v", false)
    );

    // ---------------------------------------------------------- deletes --
    let deletes = match req.deletes {
        Deletes::Ignore => None,
        mode => {
            let not_dead = if has_deleted { format!(" AND NOT coalesce(t.{}, false)", ident(IS_DELETED)) } else { String::new() };
            let gone_cols = copied.iter().map(|c| format!("t.{}", c.q)).collect::<Vec<_>>().join(", ");
            let absent = key_cols
                .iter()
                .map(|k| format!("t.{} {} {}", k.q, eq_of(k), k.expr))
                .collect::<Vec<_>>()
                .join(" AND ");
            let gone = format!(
                "gone AS (
    UPDATE {t_sql} t SET {VALID_TO} = $1::timestamptz, {IS_CURRENT} = false
    WHERE t.{IS_CURRENT}{not_dead} AND t.{VALID_FROM} < $1::timestamptz
      AND NOT EXISTS (SELECT 1 FROM {s_sql} s WHERE {absent})
    RETURNING {gone_cols}
)"
            );
            Some(match mode {
                Deletes::Version => format!(
                    "WITH {gone}, tomb AS (
    INSERT INTO {t_sql} ({copy_names}, {VALID_FROM}, {VALID_TO}, {IS_CURRENT}, {IS_DELETED})
    SELECT {copy_names}, $1::timestamptz, 'infinity', true, true FROM gone
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM tomb)"
                ),
                _ => format!("WITH {gone} SELECT count(*), 0::bigint FROM gone"),
            })
        }
    };

    Ok(Plan {
        validate,
        duplicates,
        stage,
        merge_join,
        close,
        insert,
        tally,
        late_keys,
        key_times,
        cover,
        correct,
        split_close,
        insert_row,
        next_start,
        current_start,
        deletes,
        key_list,
        source_display: source.display.clone(),
        target_display: target.display.clone(),
    })
}

/// A string for use inside a single-quoted literal (quotes doubled, and
/// `%` doubled for format()).
fn literal_inner(s: &str) -> String {
    s.replace('\'', "''").replace('%', "%%")
}

/// The error for NULLs in key or change-time columns (23502).
pub fn null_key_error(source: &str, column: &str, rows: i64) -> StoreError {
    StoreError::new(
        Kind::NotNullViolation,
        format!("null value in key column \"{}\" of source \"{source}\"", shorten(column)),
    )
    .detail(format!(
        "{rows} source row{} no value in \"{}\"; every source row needs a value in each key column.",
        if rows == 1 { " has" } else { "s have" },
        shorten(column)
    ))
}

pub fn null_time_error(source: &str, column: &str, rows: i64) -> StoreError {
    StoreError::new(
        Kind::NotNullViolation,
        format!("null value in change-time column \"{}\" of source \"{source}\"", shorten(column)),
    )
    .detail(format!(
        "{rows} source row{} no change time; with changed_at_column every row needs one.",
        if rows == 1 { " has" } else { "s have" }
    ))
}

/// The error for several source rows of one key at one time (21000): the
/// keys (at most five) in DETAIL.
pub fn duplicate_error(source: &str, dups: &[String], timed: bool) -> StoreError {
    let mut detail = dups.iter().take(5).cloned().collect::<Vec<_>>().join(" ");
    if dups.len() > 5 {
        detail.push_str(" There are more.");
    }
    let hint = if timed {
        "Keep one row per key and change time."
    } else {
        "Keep one row per key, or pass changed_at_column to load several changes of a key in one batch."
    };
    StoreError::new(
        Kind::CardinalityViolation,
        format!("source \"{source}\" has more than one row for a key{}", if timed { " at one time" } else { "" }),
    )
    .detail(detail)
    .hint(hint)
}

/// The error for a change older than its key's current version when the
/// caller asked for those to be refused (55000).
pub fn late_error(target: &str, lines: &[String]) -> StoreError {
    let mut detail = lines.iter().take(5).cloned().collect::<Vec<_>>().join(" ");
    if lines.len() > 5 {
        detail.push_str(" There are more.");
    }
    StoreError::new(
        Kind::PrerequisiteState,
        format!("source has changes older than the current versions of \"{target}\""),
    )
    .detail(detail)
    .hint("Pass late_changes => 'split' to place them in history.")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Facts;
    impl TypeFacts for Facts {
        fn assignable(&self, from: u32, to: u32) -> bool {
            // text (25) is not assignable to numeric (1700); the rest is
            !(from == 25 && to == 1700)
        }
        fn equality(&self, type_oid: u32) -> Option<String> {
            // json (114) has no equality operator
            (type_oid != 114).then(|| "OPERATOR(pg_catalog.=)".to_string())
        }
    }

    fn col(name: &str, ty: &str, oid: u32) -> Col {
        Col {
            name: name.into(),
            type_sql: ty.into(),
            type_oid: oid,
            typmod: -1,
            not_null: false,
            has_default: false,
            identity: false,
            generated: false,
        }
    }

    fn target() -> Rel {
        let mut sk = col("sk", "bigint", 20);
        sk.identity = true;
        sk.not_null = true;
        Rel {
            sql: "\"public\".\"dim\"".into(),
            display: "dim".into(),
            kind: 'r',
            columns: vec![
                sk,
                col("id", "bigint", 20),
                col("price", "numeric", 1700),
                col("name", "text", 25),
                col("valid_from", TIMESTAMPTZ, 1184),
                col("valid_to", TIMESTAMPTZ, 1184),
                col("is_current", "boolean", 16),
            ],
            indexes: vec![Index { columns: vec!["id".into(), "valid_from".into()], unique: true, ordered: true }],
        }
    }

    fn source() -> Rel {
        Rel {
            sql: "\"public\".\"stage\"".into(),
            display: "stage".into(),
            kind: 'r',
            columns: vec![
                col("id", "bigint", 20),
                col("price", "numeric", 1700),
                col("name", "text", 25),
                col("at", TIMESTAMPTZ, 1184),
                col("extra", "text", 25),
            ],
            indexes: vec![],
        }
    }

    fn s(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|x| Some(x.to_string())).collect()
    }

    fn req<'a>(keys: &'a [Option<String>], tracked: &'a [Option<String>]) -> Request<'a> {
        Request { key_columns: keys, tracked_columns: tracked, changed_at_column: None, deletes: Deletes::Ignore, late: Late::Split }
    }

    #[test]
    fn a_plain_call_plans() {
        let (k, t) = (s(&["id"]), s(&["price"]));
        let p = plan(&req(&k, &t), &target(), &source(), &Facts).unwrap();
        // the surrogate key is left to the database, name is copied untracked
        assert!(p.insert.contains("INSERT INTO \"public\".\"dim\" (\"id\", \"price\", \"name\", valid_from, valid_to, is_current)"));
        assert!(!p.insert.contains("\"sk\""));
        // NULL-safe, typed comparison of the tracked column only
        assert!(p.stage.contains("NOT coalesce(s.\"price\" OPERATOR(pg_catalog.=) c.\"price\", s.\"price\" IS NULL AND c.\"price\" IS NULL)"));
        assert!(!p.stage.contains("s.\"name\" OPERATOR"));
        // no windows without a change-time column
        assert!(!p.stage.contains("OVER"));
        assert!(p.duplicates.is_some());
        assert!(p.deletes.is_none());
        assert_eq!(p.key_list, "(id)");
        // the versions to close are found by their row addresses, the key
        // and is_current checked all the same
        assert!(p.stage.contains("c.ctid AS \"scd2#cur_tid\""));
        assert!(p.close.contains(
            "t.ctid = ANY (ARRAY(SELECT d.\"scd2#cur_tid\" FROM pg_temp.\"scd2#stage\" d WHERE NOT d.\"scd2#late_key\" AND d.\"scd2#first\" AND d.\"scd2#has_cur\")) \
             AND t.ctid = d.\"scd2#cur_tid\" AND t.\"id\" OPERATOR(pg_catalog.=) d.\"id\" AND t.is_current"
        ));
        // a row address is unique only within one partition
        let mut parted = target();
        parted.kind = 'p';
        let p = plan(&req(&k, &t), &parted, &source(), &Facts).unwrap();
        assert!(!p.close.contains("ctid"));
        assert!(p.close.contains("t.\"id\" OPERATOR(pg_catalog.=) d.\"id\" AND t.is_current"));
    }

    #[test]
    fn missing_things_are_named() {
        let (k, t) = (s(&["id"]), s(&["nope"]));
        let e = plan(&req(&k, &t), &target(), &source(), &Facts).unwrap_err();
        assert_eq!(e.kind, Kind::UndefinedColumn);
        assert_eq!(e.message, "column \"nope\" of relation \"dim\" does not exist");
        let mut src = source();
        src.columns.retain(|c| c.name != "price");
        let t = s(&["price"]);
        let e = plan(&req(&k, &t), &target(), &src, &Facts).unwrap_err();
        assert_eq!(e.message, "column \"price\" of relation \"stage\" does not exist");
        let mut r = req(&k, &t);
        r.changed_at_column = Some("when");
        let e = plan(&r, &target(), &source(), &Facts).unwrap_err();
        assert_eq!(e.kind, Kind::UndefinedColumn);
    }

    #[test]
    fn targets_need_validity_columns_of_the_right_type() {
        let (k, t) = (s(&["id"]), s(&["price"]));
        let mut tg = target();
        tg.columns.retain(|c| c.name != "valid_to");
        let e = plan(&req(&k, &t), &tg, &source(), &Facts).unwrap_err();
        assert_eq!(e.kind, Kind::InvalidParameter);
        assert_eq!(e.message, "target \"dim\" has no column \"valid_to\"");
        let mut tg = target();
        tg.columns.iter_mut().find(|c| c.name == "valid_from").unwrap().type_sql = "date".into();
        let e = plan(&req(&k, &t), &tg, &source(), &Facts).unwrap_err();
        assert_eq!(e.message, "column \"valid_from\" of target \"dim\" has type date, not timestamp with time zone");
        let mut r = req(&k, &t);
        r.deletes = Deletes::Version;
        let e = plan(&r, &target(), &source(), &Facts).unwrap_err();
        assert_eq!(e.message, "target \"dim\" has no column \"is_deleted\"");
    }

    #[test]
    fn types_must_fit() {
        let (k, t) = (s(&["id"]), s(&["price"]));
        let mut src = source();
        let p = src.columns.iter_mut().find(|c| c.name == "price").unwrap();
        p.type_sql = "text".into();
        p.type_oid = 25;
        let e = plan(&req(&k, &t), &target(), &src, &Facts).unwrap_err();
        assert_eq!(e.kind, Kind::InvalidParameter);
        assert_eq!(e.message, "column \"price\" has type text in source \"stage\" but numeric in target \"dim\"");
        // json cannot be tracked
        let mut tg = target();
        tg.columns.push(col("doc", "json", 114));
        let mut src = source();
        src.columns.push(col("doc", "json", 114));
        let t = s(&["doc"]);
        let e = plan(&req(&k, &t), &tg, &src, &Facts).unwrap_err();
        assert_eq!(e.message, "column \"doc\" of type json cannot be compared");
        // but copied untracked it may be
        let t = s(&["price"]);
        assert!(plan(&req(&k, &t), &tg, &src, &Facts).is_ok());
    }

    #[test]
    fn a_different_source_type_is_cast_to_the_targets() {
        let (k, t) = (s(&["id"]), s(&["price"]));
        let mut src = source();
        let p = src.columns.iter_mut().find(|c| c.name == "id").unwrap();
        p.type_sql = "integer".into();
        p.type_oid = 23;
        let p = plan(&req(&k, &t), &target(), &src, &Facts).unwrap();
        assert!(p.stage.contains("CAST(s.\"id\" AS bigint) AS \"id\""));
    }

    #[test]
    fn hostile_names_stay_names() {
        let evil = "x\"); DROP TABLE dim; --";
        let mut tg = target();
        tg.columns.push(col(evil, "text", 25));
        let mut src = source();
        src.columns.push(col(evil, "text", 25));
        let k = s(&["id"]);
        let t = s(&[evil]);
        let p = plan(&req(&k, &t), &tg, &src, &Facts).unwrap();
        let quoted = "\"x\"\"); DROP TABLE dim; --\"";
        assert!(p.stage.contains(quoted));
        assert!(!p.stage.replace(quoted, "").contains("DROP TABLE"));
        assert!(!p.insert.replace(quoted, "").contains("DROP TABLE"));
        // an unknown hostile name is an unknown column
        let t = s(&["a\"b"]);
        assert_eq!(plan(&req(&k, &t), &target(), &source(), &Facts).unwrap_err().kind, Kind::UndefinedColumn);
    }

    #[test]
    fn bad_lists_are_refused() {
        let t = s(&["price"]);
        let e = plan(&req(&[], &t), &target(), &source(), &Facts).unwrap_err();
        assert_eq!(e.message, "key_columns must name at least one column");
        let k = vec![Some("id".to_string()), None];
        assert_eq!(plan(&req(&k, &t), &target(), &source(), &Facts).unwrap_err().kind, Kind::NullValue);
        let k = s(&["id", "id"]);
        assert_eq!(plan(&req(&k, &t), &target(), &source(), &Facts).unwrap_err().message, "column \"id\" appears twice in key_columns");
        let k = s(&["id"]);
        let t2 = s(&["id"]);
        assert_eq!(
            plan(&req(&k, &t2), &target(), &source(), &Facts).unwrap_err().message,
            "column \"id\" is both a key column and a tracked column"
        );
        let t3 = s(&["valid_from"]);
        assert_eq!(plan(&req(&k, &t3), &target(), &source(), &Facts).unwrap_err().kind, Kind::InvalidParameter);
        // no tracked columns: versions only for new and deleted keys
        assert!(plan(&req(&k, &[]), &target(), &source(), &Facts).is_ok());
    }

    #[test]
    fn modes_parse() {
        assert_eq!(Deletes::parse(Some("close")).unwrap(), Deletes::Close);
        assert_eq!(Deletes::parse(Some("drop")).unwrap_err().kind, Kind::InvalidParameter);
        assert_eq!(Deletes::parse(None).unwrap_err().kind, Kind::NullValue);
        assert_eq!(Late::parse(Some("reject")).unwrap(), Late::Reject);
        assert_eq!(Late::parse(Some("later")).unwrap_err().kind, Kind::InvalidParameter);
    }

    #[test]
    fn change_times_chain_versions() {
        let (k, t) = (s(&["id"]), s(&["price"]));
        let mut r = req(&k, &t);
        r.changed_at_column = Some("at");
        let p = plan(&r, &target(), &source(), &Facts).unwrap();
        assert!(p.stage.contains("lead(e.\"scd2#ts\")"));
        assert!(p.stage.contains("s.\"at\" AS \"scd2#ts\""));
        // duplicates are per key and time
        assert!(p.duplicates.unwrap().contains("GROUP BY s.\"id\", s.\"at\""));
        // a text change time is refused
        let mut src = source();
        src.columns.iter_mut().find(|c| c.name == "at").unwrap().type_sql = "text".into();
        assert_eq!(plan(&r, &target(), &src, &Facts).unwrap_err().kind, Kind::InvalidParameter);
    }

    #[test]
    fn a_unique_source_needs_no_duplicate_check() {
        let (k, t) = (s(&["id"]), s(&["price"]));
        let mut src = source();
        src.indexes.push(Index { columns: vec!["id".into()], unique: true, ordered: true });
        let p = plan(&req(&k, &t), &target(), &src, &Facts).unwrap();
        assert!(p.duplicates.is_none());
        // both sides in a btree on the key: merge-joined in key order
        assert!(p.merge_join);
        assert!(!plan(&req(&k, &t), &target(), &source(), &Facts).unwrap().merge_join);
        let mut hashed = src.clone();
        hashed.indexes[0].ordered = false;
        assert!(!plan(&req(&k, &t), &target(), &hashed, &Facts).unwrap().merge_join);
        // unless a cast could merge two source keys
        src.columns.iter_mut().find(|c| c.name == "id").unwrap().typmod = 3;
        assert!(plan(&req(&k, &t), &target(), &src, &Facts).unwrap().duplicates.is_some());
    }

    #[test]
    fn deletes_close_or_tombstone() {
        let (k, t) = (s(&["id"]), s(&["price"]));
        let mut r = req(&k, &t);
        r.deletes = Deletes::Close;
        let p = plan(&r, &target(), &source(), &Facts).unwrap();
        assert!(p.deletes.unwrap().contains("NOT EXISTS (SELECT 1 FROM \"public\".\"stage\" s WHERE t.\"id\" OPERATOR(pg_catalog.=) s.\"id\")"));
        let mut tg = target();
        tg.columns.push(col("is_deleted", "boolean", 16));
        r.deletes = Deletes::Version;
        let p = plan(&r, &tg, &source(), &Facts).unwrap();
        let d = p.deletes.unwrap();
        assert!(d.contains("'infinity', true, true FROM gone"));
        // new versions are live
        assert!(p.insert.contains("d.\"scd2#next\" IS NULL, false"));
    }

    #[test]
    fn not_null_target_columns_need_a_source() {
        let (k, t) = (s(&["id"]), s(&["price"]));
        let mut tg = target();
        let mut c = col("owner", "text", 25);
        c.not_null = true;
        tg.columns.push(c);
        let e = plan(&req(&k, &t), &tg, &source(), &Facts).unwrap_err();
        assert_eq!(e.message, "column \"owner\" of target \"dim\" is NOT NULL and not in source \"stage\"");
    }

    #[test]
    fn without_a_key_index_history_is_joined_once() {
        let (k, t) = (s(&["id"]), s(&["price"]));
        let mut tg = target();
        tg.indexes.clear();
        let p = plan(&req(&k, &t), &tg, &source(), &Facts).unwrap();
        assert!(p.stage.contains("max(valid_to) AS \"scd2#last_to\""));
        assert!(!p.stage.contains("EXISTS (SELECT 1 FROM \"public\".\"dim\" h"));
    }

    #[test]
    fn errors_read_like_postgres() {
        let e = duplicate_error("stage", &["Key (id)=(7) has 2 rows.".into()], false);
        assert_eq!(e.kind, Kind::CardinalityViolation);
        assert_eq!(e.message, "source \"stage\" has more than one row for a key");
        assert_eq!(e.detail.as_deref(), Some("Key (id)=(7) has 2 rows."));
        let e = null_key_error("stage", "id", 2);
        assert_eq!(e.kind, Kind::NotNullViolation);
        assert_eq!(e.detail.as_deref(), Some("2 source rows have no value in \"id\"; every source row needs a value in each key column."));
        let many: Vec<String> = (0..7).map(|i| format!("Key (id)=({i}) has 2 rows.")).collect();
        assert!(duplicate_error("s", &many, true).detail.unwrap().ends_with("There are more."));
    }
}
