//! Executed documentation: every ```sql block in a book page runs, in
//! order, against a database; when an ```output block follows, the output
//! must match what psql prints (trailing spaces, NOTICE and CONTEXT lines
//! aside).
//! Blocks tagged ```sql,ignore are shown but not run.
//!
//! STOREFRONT_BLESS=1 rewrites the output blocks with what psql printed
//! (review the diff before committing).

use crate::{empty_db, fresh_db, psql};
use std::path::{Path, PathBuf};

/// Pages whose examples take minutes; their own tests run them
/// (tests/tests/seed.rs runs reference/seed.md on the seeded database).
const MISMATCH: &str = "output differs\n";

pub const SLOW_PAGES: &[&str] = &["reference/seed.md", "warehouse/analytics.md"];

#[derive(Debug)]
struct Block {
    info: String,
    body: String,
    /// byte range of the body in the page
    start: usize,
    end: usize,
}

fn blocks(page: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(open) = page[pos..].find("```") {
        let open = pos + open;
        let info_end = open + page[open..].find('\n').unwrap_or(page.len() - open);
        let info = page[open + 3..info_end].trim().to_string();
        let body_start = (info_end + 1).min(page.len());
        let Some(close) = page[body_start..].find("```") else { break };
        let close = body_start + close;
        out.push(Block { info, body: page[body_start..close].to_string(), start: body_start, end: close });
        pos = close + 3;
    }
    out
}

fn normalize(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .filter(|l| {
            !(l.starts_with("NOTICE:") || l.starts_with("CONTEXT:") || l.starts_with("psql:<stdin>:"))
                || (l.starts_with("psql:<stdin>:") && l.contains("ERROR:"))
        })
        .map(|l| {
            let l = match l.find("ERROR:") {
                Some(i) if l.starts_with("psql:") => &l[i..],
                _ => l,
            };
            l.trim_end().to_string()
        })
        .collect();
    let text = lines.join("\n");
    text.trim_matches('\n').to_string()
}

/// Run a page's examples in database `db`; returns (page text with blessed
/// outputs, failures).
pub fn run_page(db: &str, page: &str) -> (String, Vec<String>) {
    let bs = blocks(page);
    let mut failures = Vec::new();
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for (i, b) in bs.iter().enumerate() {
        if b.info != "sql" {
            continue;
        }
        let (ok, printed) = psql(db, &b.body);
        let printed = normalize(&printed);
        match bs.get(i + 1).filter(|n| n.info == "output") {
            Some(expected) => {
                let want = normalize(&expected.body);
                if want != printed {
                    failures.push(format!("{MISMATCH}--- SQL:\n{}\n--- expected:\n{want}\n--- got:\n{printed}\n", b.body));
                }
                if !ok && !want.contains("ERROR:") {
                    failures.push(format!("--- SQL failed:\n{}\n{printed}", b.body));
                }
                edits.push((expected.start, expected.end, format!("{printed}\n")));
            }
            None if !ok => failures.push(format!("--- SQL failed:\n{}\n{printed}", b.body)),
            None => {}
        }
    }
    let mut blessed = page.to_string();
    for (s, e, text) in edits.into_iter().rev() {
        blessed.replace_range(s..e, &text);
    }
    (blessed, failures)
}

pub fn pages(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("book/src") {
        let p = entry.expect("dir entry").path();
        if p.is_dir() {
            pages(&p, out);
        } else if p.extension().is_some_and(|e| e == "md") {
            out.push(p);
        }
    }
}

/// Check (or bless) one page against database `db` (re-created first when
/// `fresh`).
pub async fn check_page(src: &Path, path: &Path, db: &str, fresh: bool) -> Vec<String> {
    let page = std::fs::read_to_string(path).expect("read page");
    if !blocks(&page).iter().any(|b| b.info == "sql") {
        return Vec::new();
    }
    if fresh {
        // a page that shows CREATE EXTENSION itself starts from an empty database
        let pool = if page.contains("CREATE EXTENSION storefront") { empty_db(db).await } else { fresh_db(db).await };
        pool.close().await;
    }
    let roles_before = psql("postgres", "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles;").1;
    let (blessed, failures) = run_page(db, &page);
    // drop roles a page created (they are cluster-wide)
    let (_, roles) = psql("postgres", "\\pset format unaligned\n\\pset tuples_only on\nSELECT rolname FROM pg_roles;");
    for role in roles.lines().map(str::trim).filter(|r| !r.is_empty()) {
        if !roles_before.contains(role) {
            psql(db, &format!("DROP OWNED BY {role}; "));
            psql("postgres", &format!("DROP ROLE {role};"));
        }
    }
    let mut failures = failures;
    if std::env::var("STOREFRONT_BLESS").is_ok() {
        if blessed != page {
            std::fs::write(path, blessed).expect("bless page");
        }
        failures.retain(|f| !f.starts_with(MISMATCH));
    }
    let rel = path.strip_prefix(src).unwrap_or(path).display().to_string();
    failures.into_iter().map(|f| format!("{rel}:\n{f}")).collect()
}

