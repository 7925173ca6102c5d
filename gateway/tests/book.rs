//! The book's HTTP API reference (book/src/http/reference.md):
//! - it is what the OpenAPI document renders to (run `storefront-gateway
//!   book` after changing a handler);
//! - its curl examples run, in order, as one shell session against a
//!   gateway on an empty store, and print what the page says (times and
//!   tokens aside; of response headers only the ones the page shows).
//!
//! STOREFRONT_BLESS=1 rewrites the examples' outputs in the handlers' doc
//! comments (gateway/src/api/) with what the commands printed, and the page
//! with them; review the diff before committing.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    std::env::var("STOREFRONT_ROOT").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
}

struct Block {
    info: String,
    body: String,
}

fn blocks(page: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = page.lines();
    while let Some(l) = lines.next() {
        if let Some(info) = l.strip_prefix("```") {
            let mut body = String::new();
            for b in lines.by_ref() {
                if b.starts_with("```") {
                    break;
                }
                body.push_str(b);
                body.push('\n');
            }
            out.push(Block { info: info.trim().to_string(), body });
        }
    }
    out
}

const KEPT_HEADERS: &[&str] =
    &["content-type", "location", "idempotent-replayed", "www-authenticate", "retry-after", "link", "x-cache"];

/// What curl printed, as the page shows it: response headers other than
/// the interesting ones left out.
fn shown(printed: &str) -> String {
    let mut out = Vec::new();
    let mut in_headers = false;
    for line in printed.replace('\r', "").lines() {
        if line.starts_with("HTTP/") {
            in_headers = true;
            out.push(line.trim_end().to_string());
            continue;
        }
        if in_headers {
            if line.trim().is_empty() {
                in_headers = false;
                out.push(String::new());
            } else if let Some((name, _)) = line.split_once(':') {
                if KEPT_HEADERS.contains(&name.trim().to_ascii_lowercase().as_str()) {
                    out.push(line.trim_end().to_string());
                }
            }
            continue;
        }
        out.push(line.trim_end().to_string());
    }
    out.join("\n").trim_matches('\n').to_string()
}

/// Times and tokens vary from run to run.
fn masked(text: &str) -> String {
    let time = regex::Regex::new(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})").unwrap();
    let jwt = regex::Regex::new(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+").unwrap();
    let t = time.replace_all(text, "<time>");
    jwt.replace_all(&t, "<token>").into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_page_is_generated_and_its_examples_run() {
    let path = root().join("book/src/http").join(storefront_gateway::book::PAGE);
    let bless = std::env::var("STOREFRONT_BLESS").is_ok();
    let rendered = storefront_gateway::book::render_current().expect("render");
    let page = std::fs::read_to_string(&path).unwrap_or_default();
    if page != rendered {
        if bless {
            std::fs::write(&path, &rendered).expect("write the page");
        } else {
            panic!(
                "{} is not what the OpenAPI document renders to: run `cargo run -p storefront-gateway -- book --out book/src/http`",
                path.display()
            );
        }
    }

    let admin = store("gw_book").await;
    let gw = gateway("gw_book", admin, Opts::default()).await;
    let bs = blocks(&rendered);
    let mut script = String::from("set -u\n");
    let mut runs = Vec::new();
    for (i, b) in bs.iter().enumerate() {
        if b.info == "sh" {
            script.push_str(&format!("printf '\\n@@block {i}@@\\n'\n{{\n{}}} 2>&1\n", b.body));
            runs.push(i);
        }
    }
    script.push_str("printf '\\n@@end@@\\n'\n");
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", &script])
        .env("GATEWAY", &gw.url)
        .env("CATALOG_TOKEN", gw.catalog())
        .env("OPS_TOKEN", gw.ops())
        .env("WEBHOOK_SECRET", WEBHOOK_SECRET)
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if let Ok(f) = std::env::var("STOREFRONT_BOOK_DUMP") {
        let _ = std::fs::write(f, format!("{script}\n=====\n{stdout}"));
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stdout.contains("@@end@@"), "the examples did not run to the end:\n{stdout}\n{stderr}");
    assert!(stderr.trim().is_empty(), "the examples wrote to stderr:\n{stderr}");

    let mut failures = Vec::new();
    let mut replacements: Vec<(String, String)> = Vec::new();
    for (k, &i) in runs.iter().enumerate() {
        let start = format!("@@block {i}@@\n");
        let from = stdout.find(&start).map(|p| p + start.len()).unwrap_or(stdout.len());
        let next = runs.get(k + 1).map(|j| format!("\n@@block {j}@@")).unwrap_or_else(|| "\n@@end@@".into());
        let to = stdout[from..].find(&next).map(|p| from + p).unwrap_or(stdout.len());
        let printed = shown(&stdout[from..to]);
        match bs.get(i + 1).filter(|b| b.info == "output") {
            Some(expected) => {
                let want = expected.body.trim_matches('\n').to_string();
                if masked(&want) != masked(&printed) {
                    failures.push(format!("--- example:\n{}--- expected:\n{want}\n--- got:\n{printed}\n", bs[i].body));
                    replacements.push((want, printed));
                }
            }
            None => {
                if !printed.trim().is_empty() {
                    failures.push(format!("--- example without an output block printed:\n{}--- got:\n{printed}\n", bs[i].body));
                }
            }
        }
    }
    gw.stop().await;
    if bless && !replacements.is_empty() {
        bless_sources(&replacements);
        std::fs::write(&path, storefront_gateway::book::render_current().expect("render")).expect("write");
        eprintln!("blessed {} outputs: rebuild and run again", replacements.len());
    }
    assert!(failures.is_empty(), "{} example(s) differ:\n{}", failures.len(), failures.join("\n"));
}

/// Replace each expected output in the handlers' doc comments.
fn bless_sources(replacements: &[(String, String)]) {
    let dir = root().join("gateway/src/api");
    for entry in std::fs::read_dir(&dir).expect("gateway/src/api") {
        let p = entry.expect("entry").path();
        let mut src = std::fs::read_to_string(&p).expect("read");
        let before = src.clone();
        for (want, got) in replacements {
            let as_doc = |t: &str| t.lines().map(|l| format!("/// {l}").trim_end().to_string()).collect::<Vec<_>>().join("\n");
            src = src.replace(&format!("/// ```output\n{}\n/// ```", as_doc(want)), &format!("/// ```output\n{}\n/// ```", as_doc(got)));
        }
        if src != before {
            std::fs::write(&p, src).expect("write");
        }
    }
}
