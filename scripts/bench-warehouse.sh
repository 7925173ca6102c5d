#!/usr/bin/env bash
# The warehouse benchmarks behind book/src/benchmarks/warehouse.md, in one
# run on one fresh cluster: scd2_upsert against dbt-style SQL and against
# `dbt snapshot` (dbt-postgres 1.11) on a 1M-key dimension with 1% and 10%
# changed, delta sources of three sizes on two dimension sizes, and
# load_warehouse() after a day of orders against a full reload on scale-1
# demo data. About 20 minutes.
#   bash scripts/bench-warehouse.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need_root
BENCH_PORT=${BENCH_PORT:-28819}

ensure_apt
ensure_cargo_pgrx
ensure_dbt
install_extension --release
say "starting a fresh benchmark cluster on 127.0.0.1:$BENCH_PORT"
start_cluster bench-wh "$BENCH_PORT" fresh
trap 'stop_cluster bench-wh' EXIT
say "warehouse benchmarks"
cargo run --release -q -p storefront-benches --bin whbench -- \
  --url "postgres://postgres:$PG_PASSWORD@127.0.0.1:$BENCH_PORT" --dbt "$STOREFRONT_DBT" --out "$ROOT/book/src/benchmarks"
say "done: results in book/src/benchmarks/warehouse-results.md"
