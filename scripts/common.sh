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

# dbt (dbt-postgres 1.11, from PyPI) in a virtualenv under target/venv:
# the warehouse benchmarks compare scd2_upsert with `dbt snapshot`.
# (dbt-core is pinned too: 1.12 needs a download from outside PyPI.)
DBT_VERSION=1.11
ensure_dbt() {
  local venv="$ROOT/target/venv"
  if ! "$venv/bin/dbt" --version 2>/dev/null | grep -q "installed: $DBT_VERSION\."; then
    say "installing dbt-postgres $DBT_VERSION into $venv"
    command -v python3 >/dev/null || die "python3 not found"
    python3 -m venv "$venv" || die "python3 -m venv failed (apt install python3-venv)"
    "$venv/bin/pip" install -q "dbt-postgres==$DBT_VERSION.*" "dbt-core==$DBT_VERSION.*" \
      || die "pip could not install dbt-postgres $DBT_VERSION"
  fi
  "$venv/bin/dbt" --version | grep -q "installed: $DBT_VERSION\." || die "dbt $DBT_VERSION is not runnable from $venv"
  export STOREFRONT_DBT="$venv/bin/dbt"
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
    --dbname=sf_isolation --load-extension=btree_gist --load-extension=storefront "${specs[@]}" \
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
  # a cluster an interrupted test left running in the old kit goes first
  if [ -f "$kit/data/postmaster.pid" ]; then
    sudo -u postgres "$kit/pg/usr/lib/postgresql/15/bin/pg_ctl" -D "$kit/data" -m immediate -w stop >/dev/null 2>&1 \
      || kill -9 "$(head -1 "$kit/data/postmaster.pid")" 2>/dev/null || true
  fi
  rm -rf "$kit"
  mkdir -p "$kit/pg/usr/lib/postgresql" "$kit/pg/usr/share/postgresql" "$kit/releases"
  cp -a /usr/lib/postgresql/15 "$kit/pg/usr/lib/postgresql/"
  cp -a /usr/share/postgresql/15 "$kit/pg/usr/share/postgresql/"
  local ext="$kit/pg/usr/share/postgresql/15/extension"
  rm -f "$ext"/storefront--*.sql
  cp "$("$PG_CONFIG" --sharedir)/extension/storefront--$(extension_version).sql" "$ext/"
  cp "$ROOT"/sql/storefront--*.sql "$ext/"
  cp "$("$PG_CONFIG" --pkglibdir)/storefront.so" "$kit/storefront-current.so"
  cp "$ext/storefront.control" "$kit/storefront-current.control"
  local rel version commit
  for rel in "${RELEASES[@]}"; do
    version=${rel%%:*}
    commit=${rel##*:}
    cp "$(release_library "$version" "$commit")" "$kit/releases/storefront-$version.so"
    # the control file it shipped with (its requirements differ)
    git -C "$ROOT" show "$commit:extension/storefront.control" \
      | sed "s/@CARGO_VERSION@/$version/" > "$kit/releases/storefront-$version.control"
  done
  chown -R postgres:postgres "$kit"
  export STOREFRONT_UPGRADE_KIT="$kit"
}

extension_version() {
  sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/extension/Cargo.toml" | head -1
}

# ------------------------------------------------ pgspot and META.json --
# Static checks a DBA runs before letting the extension into production:
# pgspot (the extension-script security linter) over every script
# PostgreSQL may run for it, and META.json against the PGXN meta spec.

PGSPOT_VERSION=0.9.4
PGXN_META_VERSION=0.7.0
PGSPOT_VENV="$ROOT/target/pgspot-venv"

# pgspot, pinned, in its own virtualenv under target/
ensure_pgspot() {
  if "$PGSPOT_VENV/bin/pgspot" --version 2>/dev/null | grep -qx "pgspot $PGSPOT_VERSION"; then
    return
  fi
  say "installing pgspot $PGSPOT_VERSION into $PGSPOT_VENV"
  local py=python3
  if ! "$py" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    ensure_apt python3 python3-venv
    py=/usr/bin/python3
  fi
  rm -rf "$PGSPOT_VENV"
  "$py" -m venv "$PGSPOT_VENV" || die "$py -m venv $PGSPOT_VENV failed"
  "$PGSPOT_VENV/bin/pip" install --quiet --disable-pip-version-check "pgspot==$PGSPOT_VERSION" \
    || die "pip install pgspot==$PGSPOT_VERSION failed"
  "$PGSPOT_VENV/bin/pgspot" --version | grep -qx "pgspot $PGSPOT_VERSION" \
    || die "pgspot $PGSPOT_VERSION did not install"
}

# pgspot's own command line (every option and waiver works as documented),
# with three additions for extension scripts, because pgspot reads a
# script as plain SQL run by anyone:
#
# 1. A function with a SQL-standard body (RETURN ... or BEGIN ATOMIC ...
#    END) stops pgspot 0.9.4 with "list index out of range" (it reads every
#    body from AS '...'), which ends the check of the rest of the file.
#    Its header is checked as pgspot checks any function, and its body
#    under the script's search_path: PostgreSQL binds every name in such a
#    body when the function is created, not when it is called.
# 2. CREATE EXTENSION and ALTER EXTENSION UPDATE run a script with
#    search_path = <extension schema>, pg_temp (PostgreSQL's
#    execute_extension_script sets it; pg_catalog is searched first), so the
#    check starts from that path, not from an unknown one.
# 3. pgspot trusts a schema the script itself creates, as nobody can have
#    put anything in it first. The extension's schema is made (or, when it
#    exists, taken as it is) by PostgreSQL from the control file, so it is
#    trusted only once the script has checked, as its first statement, that
#    the schema and everything in it belong to superusers and nobody else
#    may create objects in it: a DO block that reads pg_catalog.pg_namespace
#    for '@extschema@', compares owners with rolsuper and raises. Without it
#    the schema stays untrusted, and so does every name looked up in it.
pgspot_driver() {
  cat > "$PGSPOT_VENV/storefront_pgspot.py" <<'PY'
import copy
import re
import sys

from pglast import ast, parse_sql
from pgspot import cli, visitors

_check_function = visitors.SQLVisitor.visit_CreateFunctionStmt
_visit_do = visitors.SQLVisitor.visit_DoStmt
_visit_sql = visitors.visit_sql
EXTSCHEMA = "extschema"  # pgspot's spelling of @extschema@


def visit_CreateFunctionStmt(self, ancestors, node):
    options = node.options or ()
    if node.sql_body is None or any(o.defname == "as" for o in options):
        return _check_function(self, ancestors, node)
    header = copy.copy(node)
    header.options = tuple(options) + (ast.DefElem(defname="as", arg=(ast.String(sval=""),)),)
    header.sql_body = None
    _check_function(self, ancestors, header)
    # None: the visitor goes on into node.sql_body with this (the script's) state
    return None


def is_schema_guard(stmt):
    if not isinstance(stmt, ast.DoStmt):
        return False
    body = "".join(a.arg.sval for a in stmt.args if a.defname == "as")
    return all(s in body for s in ("pg_catalog.pg_namespace", f"'{EXTSCHEMA}'", "nspowner", "rolsuper", "RAISE EXCEPTION"))


def visit_DoStmt(self, ancestors, node):
    result = _visit_do(self, ancestors, node)
    state = self.state
    if getattr(state, "guard_location", None) == state.counter.stmt_location and is_schema_guard(node):
        state.created_schemas.append(EXTSCHEMA)
        state.set_searchpath([EXTSCHEMA, "pg_temp"])
    return result


def visit_sql(state, sql, toplevel=False):
    if toplevel:
        state.set_searchpath([EXTSCHEMA, "pg_temp"])
        # the same rewriting pgspot does before parsing
        text = sql.replace("@extschema@", EXTSCHEMA)
        text = re.sub(r"@extschema:([^@]+)@", r"extschema_\1", text, flags=re.MULTILINE)
        text = text.replace("@extowner@", "extowner").replace("@database_owner@", "database_owner")
        text = re.sub(r"^\\", "-- \\\\", text, flags=re.MULTILINE)
        statements = parse_sql(text)
        if statements and is_schema_guard(statements[0].stmt):
            state.guard_location = statements[0].stmt_location
    return _visit_sql(state, sql, toplevel)


visitors.SQLVisitor.visit_CreateFunctionStmt = visit_CreateFunctionStmt
visitors.SQLVisitor.visit_DoStmt = visit_DoStmt
visitors.visit_sql = visit_sql
cli.visit_sql = visit_sql
sys.exit(cli.run())
PY
}

# pgspot_check LABEL FILE [pgspot options...]: findings are printed; false
# when there are any
pgspot_check() {
  local label=$1 file=$2
  shift 2
  printf '%s: ' "$label"
  "$PGSPOT_VENV/bin/python" "$PGSPOT_VENV/storefront_pgspot.py" "$@" "$file"
}

# Every script PostgreSQL may run for the extension: the install script
# `cargo pgrx install` generated (run install_extension first), every
# upgrade script, and the released install scripts the upgrade test starts
# from. Fails when any has a finding that is not waived below.
run_pgspot() {
  ensure_pgspot
  pgspot_driver
  local version
  version=$(extension_version)
  local generated
  generated="$("$PG_CONFIG" --sharedir)/extension/storefront--$version.sql"
  [ -f "$generated" ] || die "$generated not found: install the extension first"
  say "pgspot $PGSPOT_VERSION over the install and upgrade scripts"

  # Waivers kept for every script, each with its reason.
  local always=(
    # PS005 (no SET search_path) on pure IMMUTABLE helpers, which
    # DESIGN.md keeps free of a SET clause: it would cost every call and
    # block inlining. The body of each is still checked.
    # - constants: a SQL-standard body returning a literal looks nothing up
    --proc-without-search-path 'max_price_cents()'
    --proc-without-search-path 'max_restock_qty()'
    # - SQL-standard bodies: every name in them is bound when CREATE
    #   FUNCTION runs, under the script's search_path, so a caller's
    #   search_path cannot change what they call
    --proc-without-search-path 'invariant_detail(violations text[])'
    --proc-without-search-path 'notify_payload(payload text)'
    --proc-without-search-path 'seed_u(k bigint,salt integer)'
    --proc-without-search-path 'storefront_dw.segment_of(paid_orders bigint)'
    # - locf()'s transition function, run for every row: its body is only
    #   COALESCE, which is grammar, not a function or operator looked up
    #   by name
    --proc-without-search-path 'locf_step(state anyelement,value anyelement)'
    # PS005 on the maintenance procedure: it commits after each step, and
    # PostgreSQL refuses COMMIT in a procedure that has a SET clause; it pins
    # search_path with pg_catalog.set_config() at the start of every
    # transaction instead and qualifies every name (pgspot checks its body
    # from that set_config() on)
    --proc-without-search-path 'run_maintenance(as_of timestamptz,lock_wait interval,batch integer)'
  )
  local failed=()
  pgspot_check "generated install script (storefront--$version.sql)" "$generated" "${always[@]}" \
    || failed+=("storefront--$version.sql (generated)")

  local f
  for f in "$ROOT"/sql/storefront--*--*.sql; do
    # PS002 (CREATE OR REPLACE FUNCTION) in an upgrade script: changing a
    # function that is already a member of the extension takes it, and
    # PostgreSQL (since 14.5; this is 15) refuses it in an extension script
    # for a function that is not a member, so nothing someone else created
    # can be taken over. Install scripts get no such waiver.
    pgspot_check "$(basename "$f")" "$f" "${always[@]}" --ignore PS002 \
      || failed+=("$(basename "$f")")
  done

  local rel release_waivers
  for rel in "${RELEASES[@]}"; do
    version=${rel%%:*}
    f="$ROOT/sql/storefront--$version.sql"
    [ -f "$f" ] || die "$f (the released $version install script) is missing"
    case "$version" in
      0.1.0)
        # The released 0.1.0 install script is kept unchanged for the
        # upgrade test; cargo pgrx install does not install it, and its
        # successors are checked above. It trusts its schema without
        # checking who owns it (no schema check as its first statement),
        # so every name it looks up there counts as unqualified:
        release_waivers=(
          --ignore PS001 # unqualified operators
          --ignore PS016 # unqualified function calls
          --ignore PS017 # unqualified object references
          --ignore PS009 # simple CASE (its = operator is looked up too)
          --ignore PS004 # SECURITY DEFINER with search_path = @extschema@, pg_temp
          --ignore PS005 # search_path = @extschema@, pg_temp, and the pure helpers
        )
        ;;
      *) release_waivers=() ;;
    esac
    pgspot_check "released install script storefront--$version.sql" "$f" "${always[@]}" "${release_waivers[@]}" \
      || failed+=("storefront--$version.sql (released)")
  done
  [ ${#failed[@]} -eq 0 ] || die "pgspot found problems in: ${failed[*]} (findings above; pgspot --explain CODE says what each means)"
}

# pgxn_meta, the PGXN meta spec validator (crates.io), pinned
ensure_pgxn_meta() {
  if ! pgxn_meta --version 2>/dev/null | grep -q "$PGXN_META_VERSION"; then
    say "installing pgxn_meta $PGXN_META_VERSION (about 2 minutes, once)"
    cargo install pgxn_meta --version "$PGXN_META_VERSION" --locked
  fi
}

# META.json: valid against the PGXN meta spec it names (1.0.0), and its
# versions are the extension's (extension/Cargo.toml)
validate_meta() {
  ensure_pgxn_meta
  say "META.json against the PGXN meta spec (pgxn_meta $PGXN_META_VERSION)"
  pgxn_meta "$ROOT/META.json" || die "META.json does not validate against the PGXN meta spec"
  local version
  version=$(extension_version)
  python3 - "$ROOT/META.json" "$version" <<'PY' || die "META.json does not match the extension"
import json, sys
meta, version = json.load(open(sys.argv[1])), sys.argv[2]
problems = []
if meta["meta-spec"]["version"] != "1.0.0":
    problems.append(f'meta-spec version {meta["meta-spec"]["version"]}, not 1.0.0')
if meta["version"] != version:
    problems.append(f'version {meta["version"]}, extension/Cargo.toml says {version}')
if list(meta["provides"]) != ["storefront"]:
    problems.append(f'provides {list(meta["provides"])}, not just storefront')
elif meta["provides"]["storefront"]["version"] != version:
    problems.append(f'provides.storefront.version {meta["provides"]["storefront"]["version"]}, not {version}')
for problem in problems:
    print(f"META.json: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}
