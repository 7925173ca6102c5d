#!/usr/bin/env bash
# The main job: install everything, build and install the extension (release),
# start a local cluster, create the demo database with scale-1 demo data,
# print showcase queries, and build the book.
#   bash scripts/demo.sh            (SCALE=2 bash scripts/demo.sh for more data)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need_root
SCALE=${SCALE:-1}
DEMO_PORT=${DEMO_PORT:-28815}

ensure_apt
ensure_cargo_pgrx
ensure_mdbook
install_extension --release

say "starting the demo cluster on 127.0.0.1:$DEMO_PORT"
start_cluster demo "$DEMO_PORT"

say "creating database storefront_demo with scale-$SCALE demo data"
psql -X -q -v ON_ERROR_STOP=1 -d postgres <<SQL
DROP DATABASE IF EXISTS storefront_demo WITH (FORCE);
CREATE DATABASE storefront_demo;
SQL
psql -X -v ON_ERROR_STOP=1 -d storefront_demo <<SQL
CREATE EXTENSION storefront;
\timing on
SELECT * FROM storefront.seed_demo_data($SCALE);
\timing off
SQL

say "showcase"
psql -X -v ON_ERROR_STOP=1 -d storefront_demo -f "$ROOT/sql/showcase.sql"

build_book

cat <<MSG

Done. The demo cluster keeps running:
  PGPASSWORD=$PG_PASSWORD psql -h 127.0.0.1 -p $DEMO_PORT -U postgres storefront_demo
The book is in book/build/index.html. Stop the cluster with:
  sudo -u postgres $PGBIN/pg_ctl -D $(cluster_base)/pg-demo stop
MSG
