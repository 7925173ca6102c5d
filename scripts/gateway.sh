# The HTTP gateway's part of the scripts: sourced by scripts/test.sh,
# scripts/demo.sh and scripts/bench.sh after common.sh. Installs what the
# gateway needs (redis-server, chromium, Node packages), builds the
# dashboard's chart bundle, runs redis-server and the gateway as local
# processes on loopback, sets up the gateway's database roles, and runs the
# gateway's tests and the browser test. Sourced, not run.

GATEWAY_DIR="$ROOT/gateway"
# the password of the gateway's login role (local clusters only)
GATEWAY_DB_PASSWORD=${STOREFRONT_GATEWAY_DB_PASSWORD:-storefront-gateway}
export STOREFRONT_GATEWAY_DB_PASSWORD="$GATEWAY_DB_PASSWORD"

# apt: redis-server, jq/curl/openssl (the book's curl examples); Node 18+
# with npm (the dashboard's chart library)
ensure_gateway_deps() {
  ensure_apt redis-server jq curl openssl ca-certificates
  if ! command -v node >/dev/null || ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)'; then
    ensure_apt nodejs npm
  fi
  command -v npm >/dev/null || ensure_apt npm
  node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' \
    || die "Node.js 18 or newer is needed for the dashboard bundle and the browser test ($(node --version))"
  command -v redis-server >/dev/null || die "redis-server not found after installing redis-server"
}

# apt: Debian's chromium, for the browser test (playwright-core drives it;
# no browser is downloaded)
ensure_browser_deps() {
  ensure_apt chromium
  [ -x /usr/bin/chromium ] || die "/usr/bin/chromium not found after installing chromium"
}

# The dashboard's chart library, from the npm registry at the versions
# (and integrity hashes) of gateway/package-lock.json, copied next to the
# page the gateway serves.
gateway_assets() {
  say "dashboard assets: npm ci (uPlot, playwright-core), vendor bundle"
  (cd "$GATEWAY_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) \
    || die "npm ci failed in gateway/"
  local vendor="$GATEWAY_DIR/web/vendor"
  rm -rf "$vendor" && mkdir -p "$vendor"
  cp "$GATEWAY_DIR/node_modules/uplot/dist/uPlot.iife.min.js" "$GATEWAY_DIR/node_modules/uplot/dist/uPlot.min.css" "$vendor/" \
    || die "uPlot's dist files are missing from gateway/node_modules"
  (cd "$vendor" && sha256sum uPlot.iife.min.js uPlot.min.css > SHA256SUMS)
}

# Build the gateway (debug unless $1 = --release); sets GATEWAY_BIN.
gateway_build() {
  say "building the gateway ${1:-}"
  cargo build -p storefront-gateway --bins ${1:-}
  if [ "${1:-}" = "--release" ]; then
    GATEWAY_BIN="$ROOT/target/release/storefront-gateway"
  else
    GATEWAY_BIN="$ROOT/target/debug/storefront-gateway"
  fi
  [ -x "$GATEWAY_BIN" ] || die "$GATEWAY_BIN was not built"
}

# start_redis NAME PORT: a throw-away redis-server (no persistence) on
# 127.0.0.1:PORT, data and log in <base>/redis-NAME
start_redis() {
  local name=$1 port=$2 dir
  dir="$(cluster_base)/redis-$name"
  stop_redis "$name"
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --dir "$dir" \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save '' --appendonly no \
    --maxmemory 256mb --maxmemory-policy allkeys-lru >/dev/null \
    || die "redis-server did not start on port $port"
  local i
  for i in $(seq 1 50); do
    [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ] && return 0
    sleep 0.2
  done
  tail -20 "$dir/redis.log" >&2
  die "redis-server on port $port does not answer"
}

stop_redis() {
  local dir pid
  dir="$(cluster_base)/redis-$1"
  [ -f "$dir/redis.pid" ] || return 0
  pid=$(cat "$dir/redis.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$dir/redis.pid"
}

# The gateway's roles in the running cluster ($PGHOST/$PGPORT, as
# postgres) and their privileges in database $1.
gateway_roles() {
  local db=$1
  local quiet='-c client_min_messages=warning'
  PGOPTIONS="$quiet" psql -X -q -v ON_ERROR_STOP=1 -d postgres -f "$GATEWAY_DIR/sql/roles.sql"
  PGOPTIONS="$quiet" psql -X -q -v ON_ERROR_STOP=1 -d postgres -v pw="$GATEWAY_DB_PASSWORD" <<'SQL'
ALTER ROLE storefront_gateway PASSWORD :'pw';
SQL
  PGOPTIONS="$quiet" psql -X -q -v ON_ERROR_STOP=1 -d "$db" -f "$GATEWAY_DIR/sql/grants.sql" >/dev/null
}

# start_gateway NAME PORT DATABASE REDIS_PORT: the gateway on
# 127.0.0.1:PORT for DATABASE of the running cluster, caching in Redis on
# REDIS_PORT; JSON logs in <base>/gateway-NAME/gateway.log. Its secrets
# are made once and kept in <base>/gateway-NAME/secrets.env. Sets
# GATEWAY_URL.
start_gateway() {
  local name=$1 port=$2 db=$3 redis_port=$4 dir
  dir="$(cluster_base)/gateway-$name"
  [ -n "${GATEWAY_BIN:-}" ] || die "gateway_build first"
  stop_gateway "$name"
  mkdir -p "$dir"
  if [ ! -f "$dir/secrets.env" ]; then
    (umask 077; {
      echo "STOREFRONT_GATEWAY_JWT_SECRET=$(openssl rand -hex 32)"
      echo "STOREFRONT_GATEWAY_WEBHOOK_SECRET=whsec_$(openssl rand -hex 24)"
    } > "$dir/secrets.env")
  fi
  (
    set -a
    source "$dir/secrets.env"
    STOREFRONT_GATEWAY_LISTEN="127.0.0.1:$port"
    STOREFRONT_GATEWAY_DATABASE_URL="postgres://storefront_gateway:$GATEWAY_DB_PASSWORD@127.0.0.1:$PGPORT/$db"
    STOREFRONT_GATEWAY_REDIS_URL="redis://127.0.0.1:$redis_port/"
    STOREFRONT_GATEWAY_LOG_FORMAT=json
    set +a
    exec nohup "$GATEWAY_BIN" serve >>"$dir/gateway.log" 2>&1 </dev/null
  ) &
  echo $! > "$dir/gateway.pid"
  GATEWAY_URL="http://127.0.0.1:$port"
  local i
  for i in $(seq 1 150); do
    if curl -fsS "$GATEWAY_URL/readyz" >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$(cat "$dir/gateway.pid")" 2>/dev/null || break
    sleep 0.2
  done
  tail -20 "$dir/gateway.log" >&2
  die "the gateway did not become ready on $GATEWAY_URL"
}

stop_gateway() {
  local dir pid
  dir="$(cluster_base)/gateway-$1"
  [ -f "$dir/gateway.pid" ] || return 0
  pid=$(cat "$dir/gateway.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/gateway.pid"
}

# gateway_secret NAME VAR: one secret (VAR) of gateway NAME
gateway_secret() {
  local dir
  dir="$(cluster_base)/gateway-$1"
  sed -n "s/^$2=//p" "$dir/secrets.env"
}

# gateway_token NAME ROLE: a staff token (catalog or operations) for gateway NAME
gateway_token() {
  STOREFRONT_GATEWAY_JWT_SECRET="$(gateway_secret "$1" STOREFRONT_GATEWAY_JWT_SECRET)" \
    "$GATEWAY_BIN" token --role "$2"
}

# The book's HTTP API reference (book/src/http/reference.md), from the
# OpenAPI document; succeeds only if the page changed (the book then needs
# building again).
gateway_book() {
  say "the book's HTTP API reference (from the OpenAPI document)"
  local tmp
  tmp=$(mktemp -d)
  "$GATEWAY_BIN" book --out "$tmp" >/dev/null
  if cmp -s "$tmp/reference.md" "$ROOT/book/src/http/reference.md"; then
    rm -rf "$tmp"
    return 1
  fi
  cp "$tmp/reference.md" "$ROOT/book/src/http/reference.md"
  rm -rf "$tmp"
}

# What to do with the demo's gateway NAME on PORT.
gateway_demo_message() {
  local name=$1 redis_port=$2 dir
  dir="$(cluster_base)/gateway-$name"
  cat <<MSG

The HTTP gateway is running on $GATEWAY_URL (Redis on 127.0.0.1:$redis_port):
  curl -s '$GATEWAY_URL/products?search=shirt&limit=3'
  curl -s -X POST $GATEWAY_URL/auth/login -H 'Content-Type: application/json' \\
       -d '{"email": "demo@storefront.test", "password": "storefront-demo"}'
Live dashboard:  $GATEWAY_URL/dashboard#token=$(gateway_token "$name" operations)
OpenAPI:         $GATEWAY_URL/openapi.json    Metrics: $GATEWAY_URL/metrics
For the examples of book/src/http/reference.md (they expect an empty store):
  export GATEWAY=$GATEWAY_URL WEBHOOK_SECRET=$(gateway_secret "$name" STOREFRONT_GATEWAY_WEBHOOK_SECRET)
  export CATALOG_TOKEN=$(gateway_token "$name" catalog)
  export OPS_TOKEN=$(gateway_token "$name" operations)
Logs (JSON): $dir/gateway.log. Stop both with:
  kill \$(cat $dir/gateway.pid) \$(cat $(cluster_base)/redis-$name/redis.pid)
MSG
}

# The gateway's tests (gateway/tests) against the running test cluster
# ($STOREFRONT_TEST_URL) and a redis-server on port $1.
gateway_tests() {
  local redis_port=$1
  say "gateway tests (gateway/tests: the HTTP API against the test cluster and Redis on port $redis_port)"
  STOREFRONT_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/" STOREFRONT_ROOT="$ROOT" \
    cargo test -p storefront-gateway -- --test-threads=4
}

# The browser test's store: demo data (scale 1, a few minutes) in database
# sf_gateway_browser, seeded in the background so that the gateway's build
# and tests run meanwhile; gateway_browser_test waits for it.
GATEWAY_BROWSER_DB=sf_gateway_browser
gateway_browser_seed() {
  local db=$GATEWAY_BROWSER_DB log
  log="$(cluster_base)/gateway-seed.log"
  say "seeding demo data for the browser test in $db (in the background)"
  PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -d postgres \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  (PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -d "$db" \
     -c "CREATE EXTENSION storefront CASCADE" -c "SELECT count(*) FROM storefront.seed_demo_data(1)" >"$log" 2>&1) &
  GATEWAY_SEED_PID=$!
}

# Headless Chromium on the dashboard of a store with demo data: every
# chart has data, no console error, and orders placed through the API move
# the orders-per-minute chart. Screenshots in target/gateway-screenshots/.
gateway_browser_test() {
  local redis_port=$1 port=${2:-28831} db=$GATEWAY_BROWSER_DB
  [ -n "${GATEWAY_SEED_PID:-}" ] || gateway_browser_seed
  say "browser test: waiting for the demo data"
  wait "$GATEWAY_SEED_PID" || { tail -20 "$(cluster_base)/gateway-seed.log" >&2; die "seeding the browser test's store failed"; }
  GATEWAY_SEED_PID=
  gateway_roles "$db"
  start_gateway browser-test "$port" "$db" "$redis_port"
  local shots="$ROOT/target/gateway-screenshots" rc=0
  rm -rf "$shots" && mkdir -p "$shots"
  say "browser test: headless Chromium on $GATEWAY_URL/dashboard"
  (cd "$GATEWAY_DIR" && GATEWAY_URL="$GATEWAY_URL" OPS_TOKEN="$(gateway_token browser-test operations)" \
     SHOTS_DIR="$shots" CHROMIUM=/usr/bin/chromium node browser/dashboard-test.mjs) || rc=$?
  stop_gateway browser-test
  PGOPTIONS='-c client_min_messages=warning' psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  [ "$rc" = 0 ] || die "browser test failed (screenshots and report in $shots)"
  say "browser test passed; screenshots in $shots"
}
