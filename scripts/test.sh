#!/usr/bin/env bash
# The whole test suite: pure #[test]s and #[pg_test]s (cargo pgrx test), then
# the integration tests (tests/ crate: sqlx + tokio) against a fresh local
# cluster with the extension installed, and the book build.
#   bash scripts/test.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need_root
TEST_PORT=${TEST_PORT:-28816}

ensure_apt
ensure_cargo_pgrx
ensure_mdbook
# tests/tests/warehouse.rs compares scd2_upsert with `dbt snapshot`
ensure_dbt

say "unit tests and #[pg_test]s (cargo pgrx test)"
PGRX_DATA="$(cluster_base)/pgrx-test"
rm -rf "$PGRX_DATA"
install -d -o postgres -g postgres "$PGRX_DATA"
(cd "$ROOT/extension" && cargo pgrx test pg15 --runas postgres --pgdata "$PGRX_DATA")
rm -rf "$PGRX_DATA"

# cargo pgrx test installed a build with the test schema; put the plain one back
install_extension

# --- static checks (scripts/common.sh): pgspot over the install script just
# generated, the upgrade scripts and the released install scripts; META.json
# against the PGXN meta spec ---
run_pgspot
validate_meta
# --- end of static checks ---

say "starting a fresh test cluster on 127.0.0.1:$TEST_PORT"
start_cluster test "$TEST_PORT" fresh
trap 'stop_cluster test' EXIT

build_book

say "isolation specs (tests/isolation, PostgreSQL's isolationtester)"
run_isolation

say "building the benchmarks (not running them: they are not tests)"
cargo build -p storefront-benches --all-targets

prepare_upgrade_kit

say "integration tests (tests/ crate)"
export STOREFRONT_TEST_URL="postgres://postgres:$PG_PASSWORD@127.0.0.1:$TEST_PORT"
export STOREFRONT_ROOT="$ROOT"
cargo test -p storefront-tests --tests -- --test-threads=1

# --- the HTTP gateway (scripts/gateway.sh): its tests against this cluster
# and a redis-server, and the dashboard in headless Chromium ---
source "$ROOT/scripts/gateway.sh"
ensure_gateway_deps
ensure_browser_deps
gateway_browser_seed
gateway_assets
gateway_build
start_redis test 6390
trap 'stop_gateway browser-test; stop_redis test; stop_cluster test' EXIT
gateway_tests 6390
gateway_browser_test 6390
# --- end of the HTTP gateway ---
