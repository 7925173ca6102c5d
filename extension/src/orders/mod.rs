//! Orders: placement with stock reservation, payments, the status machine,
//! expiry of holds and real-time tracking. The `#[pg_extern]`s here are thin
//! wrappers; the logic is in `items.rs` and `status.rs` (pure) and
//! `place.rs`, `lifecycle.rs`, `stock.rs` (SPI).

pub mod items;
pub mod lifecycle;
pub mod place;
pub mod status;
pub mod stock;

use crate::errors::{report, StoreResult};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use status::{can_move, Status};

/// What place_order returns; becomes a storefront.order_receipt.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub order_id: i64,
    pub status: String,
    pub total_cents: i64,
    pub currency: String,
    pub expires_at: Option<TimestampWithTimeZone>,
    pub replayed: bool,
}

/// A value for a char(n) column (pgrx maps no Rust type to bpchar; its
/// datum is the same varlena as text).
struct Bpchar(String);

impl pgrx::IntoDatum for Bpchar {
    fn into_datum(self) -> Option<pgrx::pg_sys::Datum> {
        self.0.into_datum()
    }
    fn type_oid() -> pgrx::pg_sys::Oid {
        pgrx::pg_sys::BPCHAROID
    }
}

type ReceiptTuple = pgrx::composite_type!('static, "storefront.order_receipt");

fn receipt_tuple(r: Receipt) -> StoreResult<ReceiptTuple> {
    let internal = |e: &dyn std::fmt::Display| crate::errors::StoreError::internal(format!("order_receipt: {e}"));
    let mut t = PgHeapTuple::new_composite_type("storefront.order_receipt").map_err(|e| internal(&e))?;
    t.set_by_name("order_id", r.order_id).map_err(|e| internal(&e))?;
    t.set_by_name("status", r.status).map_err(|e| internal(&e))?;
    t.set_by_name("total_cents", r.total_cents).map_err(|e| internal(&e))?;
    t.set_by_name("currency", Bpchar(r.currency)).map_err(|e| internal(&e))?;
    t.set_by_name("expires_at", r.expires_at).map_err(|e| internal(&e))?;
    t.set_by_name("replayed", r.replayed).map_err(|e| internal(&e))?;
    Ok(t)
}

/// Place an order: reserve every line or none, in one transaction.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn place_order(
    customer_id: Option<i64>,
    items: Option<crate::args::JsonbText>,
    idempotency_key: default!(Option<&str>, "NULL"),
    hold: default!(Option<Interval>, "'15 minutes'"),
) -> Result<pgrx::composite_type!('static, "order_receipt"), ErrorReport> {
    report(place::place_order(customer_id, items.as_ref().map(|j| j.0.as_str()), idempotency_key, hold).and_then(receipt_tuple))
}

/// Record a payment attempt for an order; returns the order's status after it.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn record_payment(
    order_id: Option<i64>,
    amount_cents: Option<i64>,
    succeeded: Option<bool>,
    provider_ref: Option<&str>,
) -> Result<String, ErrorReport> {
    report(lifecycle::record_payment(order_id, amount_cents, succeeded, provider_ref))
}

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn cancel_order(order_id: Option<i64>, reason: default!(Option<&str>, "NULL")) -> Result<String, ErrorReport> {
    report(lifecycle::move_order(order_id, Status::Cancelled, reason))
}

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn ship_order(order_id: Option<i64>) -> Result<String, ErrorReport> {
    report(lifecycle::move_order(order_id, Status::Shipped, None))
}

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn deliver_order(order_id: Option<i64>) -> Result<String, ErrorReport> {
    report(lifecycle::move_order(order_id, Status::Delivered, None))
}

/// Release holds that expired by `as_of`, at most `batch` per call.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn expire_reservations(
    as_of: default!(Option<TimestampWithTimeZone>, "now()"),
    batch: default!(Option<i32>, 1000),
) -> Result<i32, ErrorReport> {
    report(lifecycle::expire_reservations(as_of, batch))
}

/// Whether an order may move from status `from` (NULL for a new order) to
/// `to`. Unknown status names are never legal.
#[pg_extern(immutable, parallel_safe)]
fn order_status_can_move(from: Option<&str>, to: Option<&str>) -> Option<bool> {
    let to = match Status::parse(to?) {
        Some(t) => t,
        None => return Some(false),
    };
    Some(match from {
        None => can_move(None, to),
        Some(f) => Status::parse(f).is_some_and(|f| can_move(Some(f), to)),
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    type R = Result<(), pgrx::spi::Error>;

    fn store() -> R {
        Spi::run(
            "SELECT storefront.register_customer('pg@example.com', 'pw', 'Pg');
             SELECT storefront.upsert_product('PG-A', 'Alpha', 1000);
             SELECT storefront.upsert_product('PG-B', 'Beta', 250);
             SELECT storefront.restock('PG-A', 5);
             SELECT storefront.restock('PG-B', 5);",
        )
    }

    #[pg_test]
    fn receipt_and_replay() -> R {
        store()?;
        let first = Spi::get_three::<String, i64, bool>(
            "SELECT status, total_cents, replayed FROM storefront.place_order(
                 (SELECT customer_id FROM storefront.customer),
                 '[{\"sku\": \"PG-A\", \"qty\": 2}, {\"sku\": \"PG-B\", \"qty\": 2}]', 'pg-key')",
        )?;
        assert_eq!(first, (Some("pending".into()), Some(2500), Some(false)));
        let again = Spi::get_three::<String, i64, bool>(
            "SELECT status, total_cents, replayed FROM storefront.place_order(
                 (SELECT customer_id FROM storefront.customer),
                 '[{\"sku\": \"PG-B\", \"qty\": 2}, {\"sku\": \"PG-A\", \"qty\": 2}]', 'pg-key')",
        )?;
        assert_eq!(again, (Some("pending".into()), Some(2500), Some(true)));
        let expires = Spi::get_one::<bool>(
            "SELECT expires_at BETWEEN now() + interval '14 minutes' AND now() + interval '16 minutes'
             FROM storefront.place_order((SELECT customer_id FROM storefront.customer),
                                         '[{\"sku\": \"PG-A\", \"qty\": 1}]')",
        )?;
        assert_eq!(expires, Some(true));
        let reserved = Spi::get_one::<i32>("SELECT reserved FROM storefront.stock('PG-A')")?;
        assert_eq!(reserved, Some(3));
        Ok(())
    }

    #[pg_test]
    fn prices_are_snapshotted() -> R {
        store()?;
        Spi::run(
            "SELECT storefront.place_order((SELECT customer_id FROM storefront.customer),
                                           '[{\"sku\": \"PG-A\", \"qty\": 1}]')",
        )?;
        Spi::run("SELECT storefront.upsert_product('PG-A', 'Alpha', 1500)")?;
        let snap = Spi::get_one::<i64>("SELECT unit_price_cents FROM storefront.order_line")?;
        assert_eq!(snap, Some(1000));
        Ok(())
    }

    #[pg_test(error = "insufficient stock for 1 item")]
    fn short_stock_is_refused() -> R {
        store()?;
        Spi::run(
            "SELECT storefront.place_order((SELECT customer_id FROM storefront.customer),
                                           '[{\"sku\": \"PG-A\", \"qty\": 6}]')",
        )
    }

    #[pg_test]
    fn status_machine_in_sql() -> R {
        let row = Spi::get_three::<bool, bool, bool>(
            "SELECT storefront.order_status_can_move(NULL, 'pending'),
                    storefront.order_status_can_move('delivered', 'cancelled'),
                    storefront.order_status_can_move('pending', NULL) IS NULL",
        )?;
        assert_eq!(row, (Some(true), Some(false), Some(true)));
        let unknown = Spi::get_one::<bool>("SELECT storefront.order_status_can_move('pending', 'lost')")?;
        assert_eq!(unknown, Some(false));
        Ok(())
    }
}
