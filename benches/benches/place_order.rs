//! Criterion: latency of one order of 1, 3 and 10 lines, placed by the
//! extension, the PL/pgSQL baseline and the client-side transaction, on one
//! connection. Needs a running cluster with the extension installed:
//!
//!   STOREFRONT_BENCH_URL=postgres://postgres:storefront@127.0.0.1:28815 \
//!       cargo bench -p storefront-benches --bench place_order
//!
//! It (re)creates database sf_criterion. `scripts/test.sh` only builds it.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use sqlx::Connection;
use std::time::Duration;
use storefront_benches::*;

fn bench(c: &mut Criterion) {
    let base = std::env::var("STOREFRONT_BENCH_URL")
        .unwrap_or_else(|_| "postgres://postgres:storefront@127.0.0.1:28815".to_string());
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(setup(&base, "sf_criterion"));
    let mut conn = rt
        .block_on(sqlx::PgConnection::connect(&url(&base, "sf_criterion")))
        .expect("connect");
    // settle: a few seconds of orders before anything is measured
    let mut rng = SmallRng::seed_from_u64(0);
    let settle = std::time::Instant::now();
    while settle.elapsed() < Duration::from_secs(10) {
        let items = random_items(&mut rng, 3);
        for imp in Impl::ALL {
            rt.block_on(place(imp, Events::Notify, &mut conn, 1, &items)).expect("order placed");
        }
    }
    let mut group = c.benchmark_group("place_order");
    group.measurement_time(Duration::from_secs(8));
    for lines in [1usize, 3, 10] {
        for imp in Impl::ALL {
            let mut rng = SmallRng::seed_from_u64(lines as u64);
            group.bench_with_input(BenchmarkId::new(imp.short(), format!("{lines} lines")), &lines, |b, &lines| {
                b.iter(|| {
                    let items = random_items(&mut rng, lines);
                    rt.block_on(place(imp, Events::Notify, &mut conn, 1, &items)).expect("order placed")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
