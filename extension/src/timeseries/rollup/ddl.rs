//! Creating, dropping and repairing rollups, and the capture triggers on
//! their sources.
//!
//! Who may do what: `create_rollup` runs as the extension's owner but acts
//! for the calling role (the role `SET ROLE` or the login left), which
//! must be able to read the source (and, for a table of its own, to put
//! triggers on it). The rollup's tables and views belong to the calling
//! role, in the extension's `storefront_rollups` schema or in a schema the
//! calling role owns (created for it when missing); a schema owned by
//! anyone else is refused, so nobody can plant objects a rollup would
//! then use. Only the owner (or a superuser) drops a rollup.

use super::spec::{self, ident, normalize_name, parse_agg, stored_columns, Spec, NEW_ROWS, OLD_ROWS};
use super::{load, plan_of, Meta};
use crate::errors::{Kind, StoreError, StoreResult};
use crate::orders::items::clip;
use crate::timeseries::bucket::Width;
use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// The default schema, created by the extension.
pub const DEFAULT_SCHEMA: &str = "storefront_rollups";

/// The capture triggers: name, and the rest of CREATE TRIGGER after ON.
pub fn trigger_defs() -> [(&'static str, String, String); 4] {
    let f = "FOR EACH STATEMENT EXECUTE FUNCTION storefront.rollup_capture()";
    [
        ("storefront_rollup_ins", "AFTER INSERT".into(), format!("REFERENCING NEW TABLE AS {NEW_ROWS} {f}")),
        ("storefront_rollup_upd", "AFTER UPDATE".into(), format!("REFERENCING OLD TABLE AS {OLD_ROWS} NEW TABLE AS {NEW_ROWS} {f}")),
        ("storefront_rollup_del", "AFTER DELETE".into(), format!("REFERENCING OLD TABLE AS {OLD_ROWS} {f}")),
        ("storefront_rollup_trunc", "BEFORE TRUNCATE".into(), f.to_string()),
    ]
}

fn insufficient(message: String) -> StoreError {
    StoreError::new(Kind::InsufficientPrivilege, message)
}

fn undefined_column(col: &str, rel: &str) -> StoreError {
    StoreError::new(Kind::UndefinedColumn, format!("column \"{}\" of relation {rel} does not exist", clip(col, 64)))
}

fn role_name(client: &mut SpiClient<'_>, role: pg_sys::Oid) -> StoreResult<String> {
    let t = client.update("SELECT pg_catalog.quote_ident(rolname) FROM pg_catalog.pg_roles WHERE oid = $1", Some(1), &[role.into()])?;
    if t.is_empty() {
        return Err(StoreError::internal(format!("role with OID {} does not exist", role.to_u32())));
    }
    Ok(t.first().get::<String>(1)?.unwrap_or_default())
}

fn has(client: &mut SpiClient<'_>, sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> StoreResult<bool> {
    let t = client.update(sql, Some(1), args)?;
    Ok(!t.is_empty() && t.first().get::<bool>(1)?.unwrap_or(false))
}

/// May `role` act as the owner `owner` (is it, or a member with its
/// privileges, or a superuser)?
pub fn acts_as(client: &mut SpiClient<'_>, role: pg_sys::Oid, owner: pg_sys::Oid) -> StoreResult<bool> {
    has(client, "SELECT pg_catalog.pg_has_role($1, $2, 'USAGE')", &[role.into(), owner.into()])
}

/// Column name -> type name of a relation's live columns.
fn columns(client: &mut SpiClient<'_>, rel: pg_sys::Oid) -> StoreResult<Vec<(String, String)>> {
    let t = client.update(
        "SELECT attname::text, pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
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

pub struct CreateArgs<'a> {
    pub name: Option<&'a str>,
    pub source: Option<pg_sys::Oid>,
    pub time_column: Option<&'a str>,
    pub bucket_width: Option<Interval>,
    pub group_columns: Option<Vec<Option<String>>>,
    pub aggregates: Option<Vec<Option<String>>>,
    pub schema: Option<&'a str>,
}

pub fn create(a: CreateArgs<'_>) -> StoreResult<String> {
    let name = normalize_name(a.name.ok_or_else(|| StoreError::null("name"))?)?;
    let source = a.source.ok_or_else(|| StoreError::null("source"))?;
    let iv = a.bucket_width.ok_or_else(|| StoreError::null("bucket width"))?;
    let width = Width::new(iv.months(), iv.days(), iv.micros());
    let plan = plan_of(width)?;
    let schema = a.schema.ok_or_else(|| StoreError::null("schema"))?.to_string();
    if schema.is_empty() || schema.len() > 63 || schema.starts_with("pg_") || schema == "storefront" {
        return Err(StoreError::invalid(format!("invalid schema name \"{}\"", clip(&schema, 63)))
            .detail("A rollup's schema name has 1 to 63 bytes, does not start with \"pg_\" and is not the extension's own schema."));
    }
    let groups: Vec<String> = a.group_columns.unwrap_or_default().into_iter().flatten().collect();
    if groups.len() > 32 {
        return Err(StoreError::invalid("a rollup has at most 32 group columns").detail(format!("{} were given.", groups.len())));
    }
    for (i, g) in groups.iter().enumerate() {
        if g.is_empty() || g.len() > 63 || groups[..i].contains(g) {
            return Err(StoreError::invalid(format!("invalid group column \"{}\"", clip(g, 63)))
                .detail("Group columns are distinct column names of the source."));
        }
    }
    let agg_specs: Vec<String> = a.aggregates.unwrap_or_else(|| vec![Some("count".into())]).into_iter().flatten().collect();
    if agg_specs.is_empty() || agg_specs.len() > 64 {
        return Err(StoreError::invalid("a rollup keeps 1 to 64 aggregates"));
    }
    let aggs = agg_specs.iter().map(|a| parse_agg(a)).collect::<StoreResult<Vec<_>>>()?;
    let canonical: Vec<String> = aggs.iter().map(|a| a.canonical()).collect();
    let caller = crate::roles::outer_role();

    Spi::connect_mut(|client| {
        let t = client.update(
            "SELECT c.relkind::text, pg_catalog.format('%I.%I', n.nspname, c.relname),
                    c.oid = 'storefront.event'::pg_catalog.regclass
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            Some(1),
            &[source.into()],
        )?;
        if t.is_empty() {
            return Err(StoreError::new(Kind::UndefinedTable, format!("relation with OID {} does not exist", source.to_u32())));
        }
        let row = t.first();
        let relkind: String = row.get(1)?.unwrap_or_default();
        let src_name: String = row.get(2)?.unwrap_or_default();
        let is_event: bool = row.get(3)?.unwrap_or(false);

        // a rollup's view or bucket table as source: stacked
        let t = client.update(
            "SELECT r.name FROM storefront.rollup r
             WHERE $1 IN (pg_catalog.to_regclass(pg_catalog.format('%I.%I', r.target_schema, r.name))::oid,
                          pg_catalog.to_regclass(pg_catalog.format('%I.%I', r.target_schema, r.name || '_buckets'))::oid)",
            Some(1),
            &[source.into()],
        )?;
        let source_rollup: Option<String> = if t.is_empty() { None } else { t.first().get(1)? };

        let (source_oid, source_name, time_col, source_view) = match &source_rollup {
            Some(fine_name) => {
                let fine = load(client, fine_name)?;
                let fine_plan = plan_of(fine.width)?;
                if !spec::composes(plan, fine_plan) {
                    return Err(StoreError::invalid(format!("rollup \"{name}\" cannot be computed exactly from rollup \"{fine_name}\""))
                        .detail(format!("Buckets of {} are not whole unions of buckets of {}.", width, fine.width)));
                }
                let fine_stored: Vec<String> = stored_columns(
                    &fine.aggs.iter().map(|a| parse_agg(a)).collect::<StoreResult<Vec<_>>>()?,
                )
                .into_iter()
                .map(|c| c.name)
                .collect();
                for need in stored_columns(&aggs) {
                    if !fine_stored.contains(&need.name) {
                        return Err(StoreError::invalid(format!(
                            "rollup \"{fine_name}\" does not keep \"{}\", which \"{name}\" needs",
                            need.name
                        ))
                        .hint("Add the aggregate to the finer rollup, or aggregate the raw source."));
                    }
                }
                for g in &groups {
                    if !fine.groups.contains(g) {
                        return Err(undefined_column(g, &src_name));
                    }
                }
                let fine_spec = fine.spec()?;
                let table_oid: Option<pg_sys::Oid> = {
                    let t = client.update(
                        "SELECT pg_catalog.to_regclass($1)::oid",
                        Some(1),
                        &[fine_spec.table().as_str().into()],
                    )?;
                    t.first().get(1)?
                };
                let table_oid = table_oid.ok_or_else(|| {
                    StoreError::new(Kind::UndefinedTable, format!("relation {} does not exist", fine_spec.table()))
                })?;
                if !has(client, "SELECT pg_catalog.has_table_privilege($1, $2, 'SELECT')", &[caller.into(), table_oid.into()])? {
                    return Err(insufficient(format!("permission denied for table {}", fine_spec.table()))
                        .detail("A stacked rollup reads the finer rollup's buckets as its own owner."));
                }
                (table_oid, fine_spec.table(), "bucket".to_string(), Some(fine_spec.view()))
            }
            None => {
                if relkind != "r" && relkind != "p" {
                    return Err(StoreError::invalid(format!("cannot make a rollup of {src_name}"))
                        .detail("A rollup's source is a table, a partitioned table, or another rollup.")
                        .hint("Changes to views and foreign tables cannot be captured; aggregate the tables behind them."));
                }
                let time_col = a.time_column.ok_or_else(|| StoreError::null("time column"))?.to_string();
                let cols = columns(client, source)?;
                let col_type = |c: &str| cols.iter().find(|(n, _)| n == c).map(|(_, t)| t.clone());
                match col_type(&time_col) {
                    None => return Err(undefined_column(&time_col, &src_name)),
                    Some(t) if t != "timestamp with time zone" => {
                        return Err(StoreError::invalid(format!("time column \"{time_col}\" is {t}"))
                            .detail("A rollup's time column must be timestamp with time zone."))
                    }
                    Some(_) => {}
                }
                for c in groups.iter().chain(aggs.iter().filter_map(|a| a.col.as_ref())) {
                    if col_type(c).is_none() {
                        return Err(undefined_column(c, &src_name));
                    }
                }
                if !has(client, "SELECT pg_catalog.has_table_privilege($1, $2, 'SELECT')", &[caller.into(), source.into()])? {
                    return Err(insufficient(format!("permission denied for table {src_name}"))
                        .detail("A rollup reads its source as its owner, the role creating it."));
                }
                if !is_event
                    && !has(client, "SELECT pg_catalog.has_table_privilege($1, $2, 'TRIGGER')", &[caller.into(), source.into()])?
                {
                    return Err(insufficient(format!("permission denied for table {src_name}"))
                        .detail("A rollup captures late changes of its source with triggers, which needs the TRIGGER privilege."));
                }
                (source, src_name.clone(), time_col, None)
            }
        };

        // the schema: the extension's, one the caller owns, or a new one
        let t = client.update(
            "SELECT pg_catalog.pg_has_role($2, n.nspowner, 'USAGE'),
                    EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                            WHERE d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.objid = n.oid
                              AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'
                              AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'storefront'))
             FROM pg_catalog.pg_namespace n WHERE n.nspname = $1",
            Some(1),
            &[schema.as_str().into(), caller.into()],
        )?;
        let caller_name = role_name(client, caller)?;
        if t.is_empty() {
            if !has(
                client,
                "SELECT pg_catalog.has_database_privilege($1, pg_catalog.current_database(), 'CREATE')",
                &[caller.into()],
            )? {
                return Err(insufficient(format!("permission denied to create schema \"{}\"", clip(&schema, 63)))
                    .hint("Create the rollup in storefront_rollups, or in a schema of your own."));
            }
            client.update(format!("CREATE SCHEMA {} AUTHORIZATION {caller_name}", ident(&schema)).as_str(), None, &[])?;
        } else {
            let row = t.first();
            let owned: bool = row.get(1)?.unwrap_or(false);
            let ours: bool = row.get(2)?.unwrap_or(false);
            if !owned && !ours {
                return Err(insufficient(format!("schema \"{}\" is owned by another role", clip(&schema, 63)))
                    .detail("A rollup's objects go in storefront_rollups or in a schema the role creating it owns.")
                    .hint("Use a schema you own, or let create_rollup create a new one."));
            }
        }

        let spec = Spec {
            name: name.clone(),
            schema: schema.clone(),
            source: source_name.clone(),
            source_view,
            time_col: time_col.clone(),
            width,
            groups: groups.clone(),
            aggs: aggs.clone(),
        };
        let inserted = client.update(
            "INSERT INTO storefront.rollup (name, source, source_rollup, time_column, bucket_width, group_columns,
                                            aggregates, target_schema)
             VALUES ($1, $2::pg_catalog.oid::pg_catalog.regclass, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (name) DO NOTHING RETURNING 1",
            None,
            &[
                name.as_str().into(),
                source_oid.into(),
                source_rollup.clone().into(),
                time_col.as_str().into(),
                iv.into(),
                groups.clone().into(),
                canonical.into(),
                schema.as_str().into(),
            ],
        )?;
        if inserted.is_empty() {
            return Err(StoreError::new(Kind::Unique, format!("rollup \"{name}\" already exists")));
        }
        create_objects(client, &spec, &caller_name)?;
        if source_rollup.is_none() {
            arm_tree(client, source_oid)?;
        }
        Ok(spec.view())
    })
}

/// The rollup's tables and views, handed to `owner` (a quoted role name).
fn create_objects(client: &mut SpiClient<'_>, spec: &Spec, owner: &str) -> StoreResult<()> {
    for ddl in spec.create_table_sql() {
        client.update(ddl.as_str(), None, &[])?;
    }
    client.update(format!("ALTER TABLE {} OWNER TO {owner}", spec.table()).as_str(), None, &[])?;
    if !spec.stacked() {
        for ddl in spec.create_deltas_sql() {
            client.update(ddl.as_str(), None, &[])?;
        }
        client.update(format!("ALTER TABLE {} OWNER TO {owner}", spec.deltas()).as_str(), None, &[])?;
    }
    client.update(spec.create_view_sql().as_str(), None, &[])?;
    client.update(format!("ALTER VIEW {} OWNER TO {owner}", spec.view()).as_str(), None, &[])?;
    client.update(spec.create_series_view_sql().as_str(), None, &[])?;
    client.update(format!("ALTER VIEW {} OWNER TO {owner}", spec.series_view()).as_str(), None, &[])?;
    Ok(())
}

/// The relations of a source's inheritance tree (itself, its partitions
/// and children, at every level) that can carry triggers, with whether the
/// four capture triggers are in place; only those lacking them when $2.
/// The triggers are counted in one pass over pg_trigger (a refresh checks
/// a tree of hundreds of partitions every time).
const TREE_SQL: &str = "
WITH RECURSIVE tree(rel) AS (
    SELECT $1::pg_catalog.oid
    UNION
    SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.rel
), armed AS (
    SELECT g.tgrelid, count(*) AS n FROM pg_catalog.pg_trigger g
    WHERE g.tgfoid = 'storefront.rollup_capture()'::pg_catalog.regprocedure AND g.tgenabled <> 'D'
      AND g.tgname IN ('storefront_rollup_ins', 'storefront_rollup_upd', 'storefront_rollup_del', 'storefront_rollup_trunc')
    GROUP BY g.tgrelid
)
SELECT t.rel, pg_catalog.format('%I.%I', n.nspname, c.relname), a.n IS NOT DISTINCT FROM 4
FROM tree t JOIN pg_catalog.pg_class c ON c.oid = t.rel JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN armed a ON a.tgrelid = t.rel
WHERE c.relkind IN ('r', 'p') AND (NOT $2 OR a.n IS DISTINCT FROM 4)
ORDER BY t.rel";

/// (relation, qualified name, capture triggers in place) of a source tree,
/// or of its relations lacking them (`unarmed_only`).
fn tree(client: &mut SpiClient<'_>, root: pg_sys::Oid, unarmed_only: bool) -> StoreResult<Vec<(pg_sys::Oid, String, bool)>> {
    let t = client.update(TREE_SQL, None, &[root.into(), unarmed_only.into()])?;
    let mut out = Vec::new();
    for row in t {
        let oid: pg_sys::Oid = row.get(1)?.unwrap_or(pg_sys::InvalidOid);
        let name: String = row.get(2)?.unwrap_or_default();
        let ok: bool = row.get(3)?.unwrap_or(false);
        out.push((oid, name, ok));
    }
    Ok(out)
}

/// Put the four capture triggers on one relation (replacing any of ours
/// that were disabled or altered).
fn arm(client: &mut SpiClient<'_>, rel: pg_sys::Oid, rel_name: &str) -> StoreResult<()> {
    disarm(client, rel, rel_name)?;
    for (name, when, rest) in trigger_defs() {
        client.update(format!("CREATE TRIGGER {name} {when} ON {rel_name} {rest}").as_str(), None, &[])?;
    }
    Ok(())
}

fn disarm(client: &mut SpiClient<'_>, rel: pg_sys::Oid, rel_name: &str) -> StoreResult<()> {
    for (name, _, _) in trigger_defs() {
        let t = client.update("SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2", Some(1), &[rel.into(), name.into()])?;
        if !t.is_empty() {
            client.update(format!("DROP TRIGGER {name} ON {rel_name}").as_str(), None, &[])?;
        }
    }
    Ok(())
}

/// Arm every relation of a source's tree that lacks the capture triggers;
/// returns those it armed (root first if it was one of them).
pub fn arm_tree(client: &mut SpiClient<'_>, root: pg_sys::Oid) -> StoreResult<Vec<(pg_sys::Oid, String)>> {
    let mut armed = Vec::new();
    for (oid, name, ok) in tree(client, root, true)? {
        if !ok {
            arm(client, oid, &name)?;
            if oid == root {
                armed.insert(0, (oid, name));
            } else {
                armed.push((oid, name));
            }
        }
    }
    Ok(armed)
}

/// Is some raw rollup's source this relation or one of its ancestors?
fn captured(client: &mut SpiClient<'_>, rel: pg_sys::Oid) -> StoreResult<bool> {
    has(
        client,
        "WITH RECURSIVE up(rel) AS (
             SELECT $1::pg_catalog.oid
             UNION
             SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid = up.rel
         )
         SELECT EXISTS (SELECT 1 FROM storefront.rollup r
                        WHERE r.source_rollup IS NULL AND r.source::pg_catalog.oid IN (SELECT rel FROM up))",
        &[rel.into()],
    )
}

/// A relation just created under a rollup source (a new event partition)
/// gets the capture triggers; nothing can have been written to it yet.
pub fn arm_new_relation(rel: Option<pg_sys::Oid>) -> StoreResult<bool> {
    let rel = rel.ok_or_else(|| StoreError::null("relation"))?;
    Spi::connect_mut(|client| {
        if !captured(client, rel)? {
            return Ok(false);
        }
        Ok(!arm_tree(client, rel)?.is_empty())
    })
}

pub fn drop(name: Option<&str>) -> StoreResult<bool> {
    let name = name.ok_or_else(|| StoreError::null("name"))?;
    let caller = crate::roles::outer_role();
    Spi::connect_mut(|client| {
        let m = load(client, name)?;
        if let Some(owner) = m.owner {
            if !acts_as(client, caller, owner)? {
                return Err(insufficient(format!("must be owner of rollup \"{name}\"")));
            }
        }
        let deps = client.update(
            "SELECT name FROM storefront.rollup WHERE source_rollup = $1 ORDER BY name",
            Some(1),
            &[name.into()],
        )?;
        if !deps.is_empty() {
            let dep: String = deps.first().get(1)?.unwrap_or_default();
            return Err(StoreError::new(
                Kind::DependentObjects,
                format!("cannot drop rollup \"{name}\" because rollup \"{dep}\" is built on it"),
            )
            .hint("Drop the coarser rollup first."));
        }
        // writers of the source finish first; later ones see no rollup
        super::lock_rollup(name, true);
        let q = |suffix: &str| format!("{}.{}", ident(&m.schema), ident(&format!("{}{suffix}", m.name)));
        client.update(format!("DROP VIEW IF EXISTS {}", q("_series")).as_str(), None, &[])?;
        client.update(format!("DROP VIEW IF EXISTS {}", q("")).as_str(), None, &[])?;
        client.update(format!("DROP TABLE IF EXISTS {}", q("_deltas")).as_str(), None, &[])?;
        client.update(format!("DROP TABLE IF EXISTS {}", q("_buckets")).as_str(), None, &[])?;
        client.update("DELETE FROM storefront.retention_policy WHERE relation = $1", None, &[name.into()])?;
        let gone = client.update("DELETE FROM storefront.rollup WHERE name = $1 RETURNING 1", None, &[name.into()])?;
        if gone.len() != 1 {
            return Err(StoreError::new(Kind::SerializationFailure, format!("rollup \"{name}\" was dropped concurrently")));
        }
        if !m.stacked() && m.source_name.is_some() {
            for (oid, rel, _) in tree(client, m.source_oid, false)? {
                if !captured(client, oid)? {
                    disarm(client, oid, &rel)?;
                }
            }
        }
        Ok(true)
    })
}

/// Bring a rollup's run-time objects up to this version (upgrades from
/// 0.1.0 and restores): the delta table, a bucket key that treats NULL
/// groups as equal, the Grafana-shaped view, and the capture triggers in
/// place of the old per-column ones. Safe to repeat.
pub fn repair(name: Option<&str>) -> StoreResult<bool> {
    let name = name.ok_or_else(|| StoreError::null("name"))?;
    Spi::connect_mut(|client| {
        let m: Meta = load(client, name)?;
        let spec = m.spec()?;
        let owner = m.owner()?;
        let owner_name = role_name(client, owner)?;
        let exists = |client: &mut SpiClient<'_>, rel: String| -> StoreResult<bool> {
            has(client, "SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[rel.as_str().into()])
        };
        // the key: NULLS NOT DISTINCT (0.1.0 made a plain unique index)
        let nnd = has(
            client,
            "SELECT i.indnullsnotdistinct FROM pg_catalog.pg_index i WHERE i.indexrelid = pg_catalog.to_regclass($1)",
            &[format!("{}.{}", ident(&m.schema), ident(&spec.key_index())).as_str().into()],
        )?;
        if !nnd {
            client.update(
                format!("DROP INDEX IF EXISTS {}.{}", ident(&m.schema), ident(&spec.key_index())).as_str(),
                None,
                &[],
            )?;
            client.update(spec.create_key_sql().as_str(), None, &[])?;
        }
        if !m.stacked() && !exists(client, spec.deltas())? {
            for ddl in spec.create_deltas_sql() {
                client.update(ddl.as_str(), None, &[])?;
            }
            client.update(format!("ALTER TABLE {} OWNER TO {owner_name}", spec.deltas()).as_str(), None, &[])?;
        }
        if !exists(client, spec.series_view())? {
            client.update(spec.create_series_view_sql().as_str(), None, &[])?;
            client.update(format!("ALTER VIEW {} OWNER TO {owner_name}", spec.series_view()).as_str(), None, &[])?;
        }
        if !m.stacked() {
            // 0.1.0's triggers: storefront_rollup_{insert,update,delete}_<time column>
            for op in ["insert", "update", "delete"] {
                let old = format!("storefront_rollup_{op}_{}", m.time_col);
                let t = client.update(
                    "SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2",
                    Some(1),
                    &[m.source_oid.into(), old.as_str().into()],
                )?;
                if !t.is_empty() {
                    client.update(format!("DROP TRIGGER {} ON {}", ident(&old), spec.source).as_str(), None, &[])?;
                }
            }
            arm_tree(client, m.source_oid)?;
        }
        Ok(true)
    })
}
