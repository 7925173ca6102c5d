//! The ERD in book/src/erd.md against the live catalog: same tables, same
//! columns with the same types, same primary keys. The diagram cannot drift.

use std::collections::{BTreeMap, BTreeSet};
use storefront_tests::*;

#[derive(Debug, Default, PartialEq)]
struct Table {
    columns: BTreeMap<String, String>,
    pk: BTreeSet<String>,
}

/// Entities of the first mermaid erDiagram block.
fn parse_erd(md: &str) -> (BTreeMap<String, Table>, Vec<(String, String)>) {
    let block = md
        .split("```mermaid")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a mermaid block");
    assert!(block.trim_start().starts_with("erDiagram"));
    let mut tables = BTreeMap::new();
    let mut relations = Vec::new();
    let mut current: Option<(String, Table)> = None;
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some((name, table)) = current.as_mut() {
            if line == "}" {
                let (n, t) = current.take().expect("open entity");
                tables.insert(n, t);
                continue;
            }
            let mut words = line.split_whitespace();
            let ty = words.next().expect("attribute type").to_string();
            let col = words.next().unwrap_or_else(|| panic!("attribute name in {name}: {line}"));
            let keys = words.collect::<Vec<_>>().join(" ");
            if keys.split(',').any(|k| k.trim() == "PK") {
                table.pk.insert(col.to_string());
            }
            table.columns.insert(col.to_string(), ty);
        } else if let Some(name) = line.strip_suffix('{') {
            current = Some((name.trim().to_string(), Table::default()));
        } else if line.contains("--") {
            let mut parts = line.split_whitespace();
            let a = parts.next().expect("left entity").to_string();
            let _card = parts.next();
            let b = parts.next().expect("right entity").to_string();
            relations.push((a, b));
        }
    }
    (tables, relations)
}

fn short_type(pg: &str) -> String {
    match pg {
        "timestamp with time zone" => "timestamptz".into(),
        t if t.starts_with("character(") => "char".into(),
        t => t.to_string(),
    }
}

#[tokio::test]
async fn erd_matches_the_live_schema() {
    let pool = fresh_db("sf_erd").await;
    check(&pool, "book/src/erd.md", "storefront").await;
}

/// The warehouse's star schema page against schema storefront_dw.
#[tokio::test]
async fn star_schema_matches_the_live_schema() {
    let pool = fresh_db("sf_erd_dw").await;
    check(&pool, "book/src/warehouse/star-schema.md", "storefront_dw").await;
}

async fn check(pool: &sqlx::PgPool, page: &str, schema: &str) {
    let md = std::fs::read_to_string(repo_root().join(page)).expect(page);
    let (drawn, relations) = parse_erd(&md);
    let rows: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
                coalesce(a.attnum = ANY (i.indkey::int2[]), false)
         FROM pg_class c
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
         WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
         ORDER BY 1, a.attnum",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut live: BTreeMap<String, Table> = BTreeMap::new();
    for (t, col, ty, pk) in rows {
        let table = live.entry(t).or_default();
        table.columns.insert(col.clone(), short_type(&ty));
        if pk {
            table.pk.insert(col);
        }
    }
    let drawn_names: BTreeSet<_> = drawn.keys().collect();
    let live_names: BTreeSet<_> = live.keys().collect();
    assert_eq!(drawn_names, live_names, "tables in {page} vs schema {schema}");
    for (name, table) in &live {
        assert_eq!(&drawn[name], table, "table {name}: {page} vs schema {schema}");
    }
    for (a, b) in relations {
        assert!(live.contains_key(&a) && live.contains_key(&b), "relationship {a} -- {b} names an unknown table");
    }
}
