# Shared by scripts/demo.sh and scripts/test.sh: install what is missing,
# build, and run a local PostgreSQL 15 cluster as the postgres user.
# Sourced, not run. Everything fails loudly (set -euo pipefail).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_CONFIG=/usr/bin/pg_config
PGBIN=/usr/lib/postgresql/15/bin
PGRX_VERSION=0.18.1
MDBOOK_VERSION=0.5.4
MDBOOK_MERMAID_VERSION=0.17.1
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }
die() { printf '\n\033[1;31mERROR: %s\033[0m\n' "$*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] || die "run as root (the scripts install packages and run PostgreSQL as the postgres user)"
}

# apt packages: PostgreSQL 15 server + headers (brings clang for bindgen),
# pg_cron, sudo
ensure_apt() {
  local pkgs=(postgresql-15 postgresql-server-dev-15 postgresql-client-15 postgresql-15-cron sudo "$@")
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing apt packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  [ -x "$PG_CONFIG" ] || die "$PG_CONFIG not found after installing postgresql-server-dev-15"
}

ensure_cargo_pgrx() {
  command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup) first"
  if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    say "installing cargo-pgrx $PGRX_VERSION (about 5-7 minutes, once)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
  fi
  if ! grep -qs '^pg15 *= *"/usr/bin/pg_config"' "$HOME/.pgrx/config.toml"; then
    say "cargo pgrx init --pg15 $PG_CONFIG"
    cargo pgrx init --pg15 "$PG_CONFIG"
  fi
}

ensure_mdbook() {
  if ! mdbook --version 2>/dev/null | grep -q "v$MDBOOK_VERSION"; then
    say "installing mdbook $MDBOOK_VERSION"
    cargo install mdbook --version "$MDBOOK_VERSION" --locked
  fi
  if ! mdbook-mermaid --version 2>/dev/null | grep -q "$MDBOOK_MERMAID_VERSION"; then
    say "installing mdbook-mermaid $MDBOOK_MERMAID_VERSION"
    cargo install mdbook-mermaid --version "$MDBOOK_MERMAID_VERSION" --locked
  fi
}

# Where clusters live: under target/ when the postgres user can reach it,
# else under /tmp (a clone inside a private folder such as /root).
cluster_base() {
  mkdir -p "$ROOT/target"
  if sudo -u postgres test -x "$ROOT/target" 2>/dev/null && sudo -u postgres test -r "$ROOT/target"; then
    echo "$ROOT/target"
  else
    local h
    h=$(printf '%s' "$ROOT" | md5sum | cut -c1-8)
    mkdir -p "/tmp/storefront-$h"
    chmod 755 "/tmp/storefront-$h"
    echo "/tmp/storefront-$h"
  fi
}

PG_PASSWORD=storefront

# start_cluster NAME PORT [fresh]: a cluster in <base>/pg-NAME on 127.0.0.1:PORT
start_cluster() {
  local name=$1 port=$2 fresh=${3:-}
  local data
  data="$(cluster_base)/pg-$name"
  stop_cluster "$name" || true
  if [ -n "$fresh" ] || [ ! -f "$data/PG_VERSION" ]; then
    rm -rf "$data"
    install -d -o postgres -g postgres -m 700 "$data"
    local pw
    pw=$(mktemp)
    echo "$PG_PASSWORD" > "$pw"
    chown postgres "$pw"
    sudo -u postgres "$PGBIN/initdb" -D "$data" -U postgres --pwfile="$pw" \
      --auth-host=scram-sha-256 --auth-local=peer -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pw"
    cat >> "$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '/tmp'
max_connections = 200
shared_buffers = 1GB
work_mem = 32MB
maintenance_work_mem = 512MB
max_wal_size = 4GB
checkpoint_timeout = 15min
# pg_cron schedules expire_reservations() and time-series maintenance; jobs
# run in background workers (no libpq connection, so no password needed)
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
fsync = on
synchronous_commit = on
log_min_messages = warning
CONF
  fi
  sudo -u postgres "$PGBIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null \
    || { tail -20 "$data/server.log" >&2; die "cluster $name did not start"; }
  export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGPASSWORD=$PG_PASSWORD
}

stop_cluster() {
  local data
  data="$(cluster_base)/pg-$1"
  if [ -f "$data/postmaster.pid" ]; then
    sudo -u postgres "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || {
      local pid
      pid=$(head -1 "$data/postmaster.pid")
      kill -INT "$pid" 2>/dev/null || true
      sleep 2
    }
  fi
}

# Build (debug unless $1 = --release) and install into the system PostgreSQL.
install_extension() {
  say "building and installing the extension ${1:-}"
  (cd "$ROOT/extension" && cargo pgrx install --pg-config "$PG_CONFIG" ${1:-})
}

build_book() {
  say "building the book"
  (cd "$ROOT/book" && mdbook-mermaid install . >/dev/null 2>&1 && mdbook build)
}

# PostgreSQL's isolation tester on tests/isolation/specs against the running
# cluster ($PGHOST/$PGPORT): exact interleavings, compared with expected/.
run_isolation() {
  local iso=/usr/lib/postgresql/15/lib/pgxs/src/test/isolation
  [ -x "$iso/pg_isolation_regress" ] || die "$iso/pg_isolation_regress not found (postgresql-server-dev-15)"
  local out="$ROOT/target/isolation"
  rm -rf "$out" && mkdir -p "$out"
  local specs=()
  for f in "$ROOT"/tests/isolation/specs/*.spec; do specs+=("$(basename "$f" .spec)"); done
  "$iso/pg_isolation_regress" --inputdir="$ROOT/tests/isolation" --outputdir="$out" \
    --bindir=/usr/lib/postgresql/15/bin --host="$PGHOST" --port="$PGPORT" --user="$PGUSER" \
    --dbname=sf_isolation --load-extension=storefront "${specs[@]}" \
    || { cat "$out/regression.diffs" 2>/dev/null | head -100; die "isolation specs failed (diffs above, all in $out)"; }
}

# Released versions the upgrade test starts from, each with the commit it
# was released at; its install script is sql/storefront--<version>.sql.
RELEASES=("0.1.0:b800f11c517b56d1a5a47bbd7c3fbcf5c2f73780")
# Builds of released libraries, kept across clones (keyed by commit, rustc
# and PostgreSQL version): a release's library never changes.
RELEASE_CACHE=${STOREFRONT_RELEASE_CACHE:-$HOME/.cache/storefront/releases}

# The library of a released version, built from its commit (once per
# commit, toolchain and PostgreSQL); prints its path.
release_library() {
  local version=$1 commit=$2
  local key
  key="$commit-$(rustc --version | cut -d' ' -f2)-$("$PG_CONFIG" --version | cut -d' ' -f2)"
  local out="$RELEASE_CACHE/$key/storefront.so"
  if [ ! -f "$out" ]; then
    say "building the $version library from $commit (once; cached in $RELEASE_CACHE)" >&2
    git -C "$ROOT" cat-file -e "$commit^{commit}" 2>/dev/null \
      || die "commit $commit (release $version) is not in this clone's history"
    local src="$RELEASE_CACHE/src-$version"
    rm -rf "$src" && mkdir -p "$src"
    git -C "$ROOT" archive "$commit" | tar -x -C "$src"
    # its own target directory: the crate has the same name and the same
    # output file as the current one
    (cd "$src/extension" && CARGO_TARGET_DIR="$RELEASE_CACHE/target" cargo build --lib --features pg15 >&2) \
      || die "building release $version failed"
    mkdir -p "$(dirname "$out")"
    cp "$RELEASE_CACHE/target/debug/libstorefront.so" "$out"
    rm -rf "$src"
  fi
  echo "$out"
}

# The upgrade kit (see tests/tests/upgrade.rs): a private, relocated copy
# of the PostgreSQL installation whose library and extension directories
# the upgrade test may change, the released libraries, and the current
# one. Needs the current extension installed (install_extension).
prepare_upgrade_kit() {
  local kit
  kit="$(cluster_base)/upgrade-kit"
  say "preparing the upgrade kit in $kit"
  rm -rf "$kit"
  mkdir -p "$kit/pg/usr/lib/postgresql" "$kit/pg/usr/share/postgresql" "$kit/releases"
  cp -a /usr/lib/postgresql/15 "$kit/pg/usr/lib/postgresql/"
  cp -a /usr/share/postgresql/15 "$kit/pg/usr/share/postgresql/"
  local ext="$kit/pg/usr/share/postgresql/15/extension"
  rm -f "$ext"/storefront--*.sql
  cp "$("$PG_CONFIG" --sharedir)/extension/storefront--$(extension_version).sql" "$ext/"
  cp "$ROOT"/sql/storefront--*.sql "$ext/"
  cp "$("$PG_CONFIG" --pkglibdir)/storefront.so" "$kit/storefront-current.so"
  local rel version commit
  for rel in "${RELEASES[@]}"; do
    version=${rel%%:*}
    commit=${rel##*:}
    cp "$(release_library "$version" "$commit")" "$kit/releases/storefront-$version.so"
  done
  chown -R postgres:postgres "$kit"
  export STOREFRONT_UPGRADE_KIT="$kit"
}

extension_version() {
  sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/extension/Cargo.toml" | head -1
}
