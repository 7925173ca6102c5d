#!/usr/bin/env bash
# Where a place_order call spends its instructions: callgrind counts the
# instructions of a single-user backend that places N two-line orders with
# storefront.place_order and N with the PL/pgSQL baseline, on the benchmark
# data set, and writes book/src/benchmarks/orders-profile.md. Instruction
# counts, unlike timings, repeat exactly for the same build and data, and do
# not depend on what else the machine is doing. About 5 minutes.
#   bash scripts/profile.sh [N]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need_root
N=${1:-2000}
PROFILE_PORT=${PROFILE_PORT:-28819}
OUT="$ROOT/book/src/benchmarks/orders-profile.md"

ensure_apt
ensure_cargo_pgrx
command -v valgrind >/dev/null || { apt-get install -y -q valgrind >/dev/null || die "could not install valgrind"; }
install_extension --release

say "benchmark data on a fresh cluster (127.0.0.1:$PROFILE_PORT)"
start_cluster profile "$PROFILE_PORT" fresh
trap 'stop_cluster profile' EXIT
DATA="$(cluster_base)/pg-profile"
WORK="$ROOT/target/profile"
rm -rf "$WORK" && install -d -o postgres "$WORK"
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE sf_profile" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d sf_profile >/dev/null <<SQL
CREATE EXTENSION storefront CASCADE;
\i $ROOT/benches/baselines/place_order_plpgsql.sql
-- the load driver's data set (benches/src/lib.rs): 1000 customers, 2000 SKUs
INSERT INTO storefront.customer (email, password_hash, full_name)
SELECT 'bench' || n || '@example.com', '!bench', 'Bench ' || n FROM generate_series(1, 1000) n;
SELECT count(storefront.upsert_product('B-' || n, 'Bench ' || n, 100 + n % 900)) FROM generate_series(1, 2000) n;
SELECT count(storefront.restock('B-' || n, 1000000)) FROM generate_series(1, 2000) n;
-- steady state: tables that already hold orders, with statistics
SELECT count(storefront.place_order(c.customer_id, jsonb_build_array(
           jsonb_build_object('sku', 'B-' || (1 + n % 2000), 'qty', 1),
           jsonb_build_object('sku', 'B-' || (1 + (n * 7 + 1) % 2000), 'qty', 1))))
FROM generate_series(1, 20000) n
JOIN storefront.customer c ON c.email = 'bench' || (1 + n % 1000) || '@example.com';
SQL
psql -X -q -d sf_profile -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
stop_cluster profile
trap - EXIT

say "callgrind: $N orders per implementation"
python3 - "$WORK" "$N" <<'PY'
import random, sys
work, n = sys.argv[1], int(sys.argv[2])
for name, fn in (("extension", "storefront.place_order"), ("plpgsql", "bench.place_order_plpgsql")):
    rng = random.Random(7)
    with open(f"{work}/{name}.sql", "w") as f:
        for _ in range(n):
            a, b = rng.sample(range(1, 2001), 2)
            c = rng.randint(1, 1000)
            f.write(f"SELECT {fn}((SELECT customer_id FROM storefront.customer WHERE email = 'bench{c}@example.com'), "
                    f"'[{{\"sku\": \"B-{a}\", \"qty\": 1}}, {{\"sku\": \"B-{b}\", \"qty\": 1}}]') IS NOT NULL\n")
PY
cp -a "$DATA" "$WORK/data.clean"
echo "SELECT 1" > "$WORK/startup.sql"
for impl in startup extension plpgsql; do
  rm -rf "$WORK/data" && cp -a "$WORK/data.clean" "$WORK/data"
  # startup.sql measures the backend's own start and stop, subtracted below
  sudo -u postgres valgrind -q --tool=callgrind --callgrind-out-file="$WORK/callgrind.$impl" \
    "$PGBIN/postgres" --single -D "$WORK/data" -c shared_preload_libraries= -c fsync=off sf_profile \
    < "$WORK/$impl.sql" > "$WORK/$impl.out" 2> "$WORK/$impl.err" || die "postgres --single failed ($WORK/$impl.err)"
  if grep -q ERROR "$WORK/$impl.err"; then grep -m3 ERROR "$WORK/$impl.err" >&2; die "$impl: statements failed"; fi
  callgrind_annotate --inclusive=yes --threshold=100 "$WORK/callgrind.$impl" > "$WORK/$impl.txt" 2>/dev/null
done
rm -rf "$WORK/data" "$WORK/data.clean"

python3 - "$WORK" "$N" "$OUT" <<'PY'
import re, sys
work, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(impl):
    costs, total = {}, None
    for line in open(f"{work}/{impl}.txt"):
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
        if not m:
            continue
        v, what = int(m.group(1).replace(",", "")), m.group(2)
        if "PROGRAM TOTALS" in what:
            total = v
            continue
        fm = re.match(r"\S*?:(.+?)(?:'\d+)? \[", what)
        if fm:
            name = fm.group(1)
            costs[name] = max(costs.get(name, 0), v)
    return total, costs
base, _ = load("startup")
ext_total, ext = load("extension")
plp_total, plp = load("plpgsql")
ext_total -= base
plp_total -= base
rows = [
    ("the whole statement: parse, plan, run, commit", ext_total, plp_total),
    ("CHECK constraints (ExecConstraints: expressions re-read from their stored text)", ext.get("ExecConstraints", 0), plp.get("ExecConstraints", 0)),
    ("foreign-key checks (RI_FKey_check_ins: one per inserted row and key)", ext.get("RI_FKey_check_ins", 0), plp.get("RI_FKey_check_ins", 0)),
    ("executor start-up of each statement (ExecutorStart)", ext.get("ExecutorStart", 0), plp.get("ExecutorStart", 0)),
    ("index entries (ExecInsertIndexTuples)", ext.get("ExecInsertIndexTuples", 0), plp.get("ExecInsertIndexTuples", 0)),
    ("WAL records (XLogInsert)", ext.get("XLogInsert", 0), plp.get("XLogInsert", 0)),
    ("commit (CommitTransactionCommand)", ext.get("CommitTransactionCommand", 0), plp.get("CommitTransactionCommand", 0)),
]
steps = [
    ("parse and merge the items, find_by_key, receipt (Rust, outside SPI)", None),
    ("look up customer and SKUs (`lookup`)", "storefront::orders::place::lookup"),
    ("lock stock rows (`reserve`)", "storefront::orders::place::reserve"),
    ("write stock, lines, reservations, history, outbox (`write`)", "storefront::orders::place::write"),
]
place = ext.get("storefront::orders::place_order_wrapper::_internal_wrapper", 0)
spi = ext.get("SPI_execute_plan", 0)
k = lambda v: f"{v / n / 1000:,.0f}"
pct = lambda v, t: f"{100 * v / t:.0f}%" if t else "–"
with open(out, "w") as f:
    f.write("<!-- generated by scripts/profile.sh from callgrind's counts; do not edit -->\n")
    f.write(f"Instructions per two-line order, in thousands, averaged over {n:,} orders per implementation "
            "(callgrind, a single-user backend's count minus that of a backend that runs only `SELECT 1`; release build; "
            "the load driver's data set plus 20,000 earlier orders). "
            "Rows below the first are inclusive costs and overlap (FK checks run inside executor calls).\n\n")
    f.write("| where | storefront.place_order | share | PL/pgSQL baseline | share |\n|---|---:|---:|---:|---:|\n")
    for label, e, p in rows:
        f.write(f"| {label} | {k(e)} | {pct(e, ext_total)} | {k(p)} | {pct(p, plp_total)} |\n")
    f.write(f"\nPL/pgSQL ÷ extension, whole statement: {plp_total / ext_total:.2f}×.\n\n")
    f.write("The extension's call, step by step:\n\n| step | k instructions | share |\n|---|---:|---:|\n")
    f.write(f"| the function call (`place_order` wrapper, all steps) | {k(place)} | {pct(place, ext_total)} |\n")
    f.write(f"| … of which SQL run through SPI | {k(spi)} | {pct(spi, ext_total)} |\n")
    f.write(f"| … of which Rust outside SPI (items, hashing, conversions, receipt) | {k(place - spi)} | {pct(place - spi, ext_total)} |\n")
    for label, fn in steps[1:]:
        v = ext.get(fn, 0)
        f.write(f"| {label} | {k(v)} | {pct(v, ext_total)} |\n")
print("wrote", out)
PY
say "done: $OUT"
