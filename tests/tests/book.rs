//! Runs the examples of every book page (see storefront_tests::docs).

use storefront_tests::docs::{check_page, pages, SLOW_PAGES};
use storefront_tests::repo_root;

#[tokio::test]
async fn book_examples_run_and_match() {
    let src = repo_root().join("book/src");
    let mut all = Vec::new();
    pages(&src, &mut all);
    all.sort();
    let mut failures = Vec::new();
    let mut ran = 0;
    for path in &all {
        let rel = path.strip_prefix(&src).expect("under src").to_string_lossy().replace('\\', "/");
        if SLOW_PAGES.contains(&rel.as_str()) {
            continue;
        }
        let db = format!("sf_doc_{}", rel.trim_end_matches(".md").replace(['/', '-', '.'], "_"));
        failures.extend(check_page(&src, path, &db, true).await);
        ran += 1;
    }
    assert!(ran >= 5, "only {ran} pages checked");
    assert!(failures.is_empty(), "{} book example(s) differ:\n{}", failures.len(), failures.join("\n"));
}
