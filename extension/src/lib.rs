//! storefront: an online store's data core inside PostgreSQL.
//!
//! This file holds the module list and the order in which SQL files enter the
//! install script; each capability lives in its own module, SQL file, book
//! page and test file of the same name.

use pgrx::prelude::*;

::pgrx::pg_module_magic!();

pub mod accounts;
pub mod catalog;
pub mod errors;
pub mod inventory;
pub mod args;
pub mod orders;
pub mod relay;
pub mod roles;
pub mod schema;
pub mod spi_util;
pub mod timeseries;
pub mod warehouse;

// The OLTP schema first: every function below refers to its tables and types.
extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../../sql/catalog.sql", name = "catalog", requires = ["schema"]);
extension_sql_file!("../../sql/inventory.sql", name = "inventory", requires = ["schema", "catalog"]);
extension_sql_file!("../../sql/orders.sql", name = "orders", requires = ["schema", "catalog"]);
extension_sql_file!("../../sql/relay.sql", name = "relay", requires = ["schema"]);
extension_sql_file!("../../sql/invariants.sql", name = "invariants", requires = ["schema"]);
extension_sql_file!("../../sql/timeseries.sql", name = "timeseries", requires = ["schema"]);
extension_sql_file!("../../sql/events.sql", name = "events", requires = ["schema"]);
extension_sql_file!("../../sql/rollups.sql", name = "rollups", requires = ["schema", "events"]);
extension_sql_file!(
    "../../sql/dashboards.sql",
    name = "dashboards",
    requires = ["schema", "events", "timeseries", "relay", "rollups", timeseries::time_bucket_series]
);
extension_sql_file!("../../sql/seed.sql", name = "seed", requires = ["schema", "catalog", "inventory", "events"]);
extension_sql_file!("../../sql/accounts.sql", name = "accounts", requires = ["schema"]);
// The star schema and its loader: after the OLTP schema, with the merge
// and the loader's watermark from the library
extension_sql_file!(
    "../../sql/warehouse.sql",
    name = "warehouse",
    requires = ["schema", "catalog", warehouse::scd2_upsert, warehouse::load::xact_age_limit]
);
extension_sql_file!(
    "../../sql/roles.sql",
    name = "roles",
    requires = ["schema", "catalog", "orders", "dashboards", "accounts", "warehouse", roles::acting_customer, roles::calling_role]
);
// Comments, privileges and pg_dump registration for everything above.
extension_sql_file!("../../sql/finalize.sql", name = "finalize", finalize);

/// Runs when a backend loads the library: defines the extension's settings.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    relay::init();
    roles::init();
    // settings named storefront.* that are not ours are typos: say so
    // SAFETY: called once, while the library loads
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"storefront".as_ptr()) };
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
