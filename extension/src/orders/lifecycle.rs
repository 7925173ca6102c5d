//! Everything after placement: payments, cancellation, shipping, delivery
//! and expiry of holds. Each call locks the order row first (FOR NO KEY UPDATE, so
//! calls on one order serialize), then stock rows in lock order (see
//! `stock.rs`), checks the move against the status machine (`status.rs`)
//! and records it with history, outbox row and NOTIFY in one statement.

use super::status::{can_move, Status};
use super::stock::{lock_and_apply, Delta};
use crate::errors::{Kind, StoreError, StoreResult};
use crate::orders::items::{allocate, shortage_error, Bin, Shortage};
use crate::spi_util::{plan, T};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::collections::BTreeMap;

const LOCK_ORDER: &str = "SELECT customer_id, status, total_cents FROM storefront.orders
    WHERE order_id = $1 FOR NO KEY UPDATE";

/// Record status changes for many orders at once: the order row, a
/// history row (next seq), an outbox row, and a NOTIFY with the same JSON.
macro_rules! record_status_sql {
    ($tail:literal) => {
        concat!(
            "WITH c AS (
        SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS c(customer_id, order_id, previous)
    ), u AS (
        UPDATE storefront.orders o SET status = $4, updated_at = now()
        FROM c WHERE o.order_id = ANY ($2::bigint[]) AND o.customer_id = c.customer_id AND o.order_id = c.order_id
    ), h AS (
        INSERT INTO storefront.order_status_history (customer_id, order_id, seq, status, at, detail)
        SELECT c.customer_id, c.order_id,
               (SELECT coalesce(max(x.seq), 0) + 1 FROM storefront.order_status_history x
                 WHERE x.customer_id = c.customer_id AND x.order_id = c.order_id),
               $4, now(), $5
        FROM c
        RETURNING customer_id, order_id, seq, at
    ), ob AS (
        INSERT INTO storefront.outbox (customer_id, aggregatetype, aggregateid, type, payload, created_at)
        SELECT h.customer_id, 'order', h.order_id::text, 'order.' || $4,
               jsonb_build_object('order_id', h.order_id, 'customer_id', h.customer_id, 'seq', h.seq,
                                  'status', $4, 'previous', c.previous, 'at', h.at, 'detail', $5),
               h.at
        FROM h JOIN c ON c.customer_id = h.customer_id AND c.order_id = h.order_id
        RETURNING payload
    )
",
            $tail
        )
    };
}

/// ... announced by NOTIFY now (event_delivery = notify) or queued for the relay.
const RECORD_STATUS_NOTIFY: &str =
    record_status_sql!("    SELECT count(pg_notify('storefront_order_events', payload::text)) FROM ob");
const RECORD_STATUS_QUEUE: &str = record_status_sql!(
    ", q AS (INSERT INTO storefront.order_event_queue (payload) SELECT payload::text FROM ob RETURNING 1)
    SELECT count(*) FROM q"
);

const HELD: &str = "SELECT l.sku_id, r.location_id, r.slot::integer, r.qty
    FROM storefront.reservation r
    JOIN storefront.order_line l
      ON l.customer_id = r.customer_id AND l.order_id = r.order_id AND l.line_no = r.line_no
    WHERE r.customer_id = $1 AND r.order_id = $2 AND r.state = 'held'";

const END_HOLDS: &str = "UPDATE storefront.reservation SET state = $3, ended_at = now()
    WHERE customer_id = $1 AND order_id = $2 AND state = 'held'";

const INSERT_PAYMENT: &str = "INSERT INTO storefront.payment
        (customer_id, order_id, provider_ref, amount_cents, succeeded, outcome)
    VALUES ($1, $2, $3, $4, $5, $6)";

const FIND_PAYMENT: &str = "SELECT order_id, amount_cents, succeeded, outcome FROM storefront.payment
    WHERE customer_id = $1 AND provider_ref = $2";

const ORDER_LINES: &str = "SELECT l.line_no, l.sku_id, l.qty, s.code, s.hot_slots::integer
    FROM storefront.order_line l JOIN storefront.sku s ON s.sku_id = l.sku_id
    WHERE l.customer_id = $1 AND l.order_id = $2
    ORDER BY l.sku_id";

const LOCK_STOCK: &str = "SELECT sku_id, location_id, on_hand - reserved
    FROM storefront.inventory
    WHERE sku_id = ANY ($1::bigint[])
    ORDER BY sku_id, location_id
    FOR NO KEY UPDATE";

const LOCK_SLOTS: &str = "SELECT location_id, slot::integer, on_hand - reserved
    FROM storefront.inventory_slot
    WHERE sku_id = $1
    ORDER BY location_id, slot
    FOR NO KEY UPDATE";

const INSERT_SOLD: &str = "INSERT INTO storefront.reservation
        (customer_id, order_id, line_no, location_id, slot, qty, state, expires_at, ended_at)
    SELECT $1, $2, r.line_no, r.location_id, r.slot, r.qty, 'consumed', now(), now()
    FROM unnest($3::integer[], $4::integer[], $5::integer[], $6::integer[]) AS r(line_no, location_id, slot, qty)";

/// The order row, locked: (customer_id, status, total_cents).
struct LockedOrder {
    customer_id: i64,
    status: Status,
    total_cents: i64,
}

fn lock_order(client: &mut SpiClient<'_>, order_id: i64) -> StoreResult<LockedOrder> {
    let p = plan(client, LOCK_ORDER, &[T::INT8OID])?;
    let t = client.update(&*p, Some(1), &[order_id.into()])?;
    if t.is_empty() {
        return Err(unknown_order(order_id));
    }
    let row = t.first();
    let status: String = row.get(2)?.unwrap_or_default();
    Ok(LockedOrder {
        customer_id: row.get(1)?.unwrap_or_default(),
        status: Status::parse(&status)
            .ok_or_else(|| StoreError::internal(format!("order {order_id} has unknown status \"{status}\"")))?,
        total_cents: row.get(3)?.unwrap_or_default(),
    })
}

pub fn unknown_order(order_id: i64) -> StoreError {
    StoreError::new(Kind::NoDataFound, format!("order {order_id} does not exist"))
}

fn illegal_move(order_id: i64, from: Status, to: Status, what: &str) -> StoreError {
    StoreError::new(Kind::PrerequisiteState, format!("cannot {what} order {order_id}: it is {}", from.as_str()))
        .detail(format!("An order cannot move from {} to {}.", from.as_str(), to.as_str()))
}

fn record_status(
    client: &mut SpiClient<'_>,
    orders: &[(i64, i64, Status)],
    to: Status,
    detail: serde_json::Value,
) -> StoreResult<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let sql = match crate::relay::delivery() {
        crate::relay::Delivery::Notify => RECORD_STATUS_NOTIFY,
        crate::relay::Delivery::Relay => RECORD_STATUS_QUEUE,
    };
    let p = plan(
        client,
        sql,
        &[T::INT8ARRAYOID, T::INT8ARRAYOID, T::TEXTARRAYOID, T::TEXTOID, T::JSONBOID],
    )?;
    client.update(
        &*p,
        None,
        &[
            orders.iter().map(|o| o.0).collect::<Vec<i64>>().into(),
            orders.iter().map(|o| o.1).collect::<Vec<i64>>().into(),
            orders.iter().map(|o| o.2.as_str().to_string()).collect::<Vec<String>>().into(),
            to.as_str().into(),
            pgrx::JsonB(detail).into(),
        ],
    )?;
    Ok(())
}

/// End the order's live holds: `consumed` (sold: on_hand and reserved both
/// drop), or `released` / `expired` (reserved drops).
fn end_holds(client: &mut SpiClient<'_>, customer_id: i64, order_id: i64, state: &str) -> StoreResult<i64> {
    let p = plan(client, HELD, &[T::INT8OID, T::INT8OID])?;
    let sold = state == "consumed";
    let mut deltas = Vec::new();
    let mut units = 0i64;
    for row in client.update(&*p, None, &[customer_id.into(), order_id.into()])? {
        let qty: i32 = row.get(4)?.unwrap_or_default();
        units += qty as i64;
        deltas.push(Delta {
            sku_id: row.get(1)?.unwrap_or_default(),
            location_id: row.get(2)?.unwrap_or_default(),
            slot: row.get(3)?,
            on_hand: if sold { -qty } else { 0 },
            reserved: -qty,
        });
    }
    if deltas.is_empty() {
        return Ok(0);
    }
    lock_and_apply(client, &deltas)?;
    let p = plan(client, END_HOLDS, &[T::INT8OID, T::INT8OID, T::TEXTOID])?;
    client.update(&*p, None, &[customer_id.into(), order_id.into(), state.into()])?;
    Ok(units)
}

/// A late payment (after expiry or a failed attempt): take the lines' stock
/// again, now, and sell it at once; 23514 if it is no longer there.
fn resell(client: &mut SpiClient<'_>, customer_id: i64, order_id: i64) -> StoreResult<()> {
    let p = plan(client, ORDER_LINES, &[T::INT8OID, T::INT8OID])?;
    struct L {
        line_no: i32,
        sku_id: i64,
        qty: i32,
        code: String,
        hot: bool,
    }
    let mut lines = Vec::new();
    for row in client.update(&*p, None, &[customer_id.into(), order_id.into()])? {
        lines.push(L {
            line_no: row.get(1)?.unwrap_or_default(),
            sku_id: row.get(2)?.unwrap_or_default(),
            qty: row.get(3)?.unwrap_or_default(),
            code: row.get(4)?.unwrap_or_default(),
            hot: row.get::<i32>(5)?.unwrap_or(0) > 0,
        });
    }
    // lock: normal rows first (sorted), then each hot SKU's slots in order
    let mut bins: BTreeMap<i64, Vec<Bin>> = BTreeMap::new();
    let normal: Vec<i64> = lines.iter().filter(|l| !l.hot).map(|l| l.sku_id).collect();
    if !normal.is_empty() {
        let p = plan(client, LOCK_STOCK, &[T::INT8ARRAYOID])?;
        for row in client.update(&*p, None, &[normal.into()])? {
            bins.entry(row.get(1)?.unwrap_or_default()).or_default().push(Bin {
                location_id: row.get(2)?.unwrap_or_default(),
                slot: None,
                available: row.get(3)?.unwrap_or_default(),
            });
        }
    }
    for l in lines.iter().filter(|l| l.hot) {
        let p = plan(client, LOCK_SLOTS, &[T::INT8OID])?;
        for row in client.update(&*p, None, &[l.sku_id.into()])? {
            bins.entry(l.sku_id).or_default().push(Bin {
                location_id: row.get(1)?.unwrap_or_default(),
                slot: row.get(2)?,
                available: row.get(3)?.unwrap_or_default(),
            });
        }
    }
    let mut deltas = Vec::new();
    let mut sold: Vec<(i32, i32, Option<i32>, i32)> = Vec::new();
    let mut short = Vec::new();
    for l in &lines {
        let b = bins.get(&l.sku_id).map(Vec::as_slice).unwrap_or(&[]);
        match allocate(b, l.qty) {
            Ok(takes) => {
                for (i, q) in takes {
                    deltas.push(Delta {
                        sku_id: l.sku_id,
                        location_id: b[i].location_id,
                        slot: b[i].slot,
                        on_hand: -q,
                        reserved: 0,
                    });
                    sold.push((l.line_no, b[i].location_id, b[i].slot, q));
                }
            }
            Err(available) => short.push(Shortage { sku: l.code.clone(), requested: l.qty as i64, available }),
        }
    }
    if !short.is_empty() {
        return Err(shortage_error(&short).hint("The order's hold had ended and the stock was sold meanwhile."));
    }
    lock_and_apply(client, &deltas)?;
    let p = plan(
        client,
        INSERT_SOLD,
        &[T::INT8OID, T::INT8OID, T::INT4ARRAYOID, T::INT4ARRAYOID, T::INT4ARRAYOID, T::INT4ARRAYOID],
    )?;
    client.update(
        &*p,
        None,
        &[
            customer_id.into(),
            order_id.into(),
            sold.iter().map(|s| s.0).collect::<Vec<i32>>().into(),
            sold.iter().map(|s| s.1).collect::<Vec<i32>>().into(),
            sold.iter().map(|s| s.2).collect::<Vec<Option<i32>>>().into(),
            sold.iter().map(|s| s.3).collect::<Vec<i32>>().into(),
        ],
    )?;
    Ok(())
}

pub fn record_payment(
    order_id: Option<i64>,
    amount_cents: Option<i64>,
    succeeded: Option<bool>,
    provider_ref: Option<&str>,
) -> StoreResult<String> {
    let order_id = order_id.ok_or_else(|| StoreError::null("order id"))?;
    let amount = amount_cents.ok_or_else(|| StoreError::null("amount"))?;
    let succeeded = succeeded.ok_or_else(|| StoreError::null("succeeded"))?;
    let provider_ref = match provider_ref.map(str::trim) {
        Some(r) if !r.is_empty() && r.len() <= 255 => r.to_string(),
        _ => return Err(StoreError::invalid("provider reference must have 1 to 255 characters")),
    };
    if amount < 0 {
        return Err(StoreError::invalid("payment amount must not be negative"));
    }
    Spi::connect_mut(|client| {
        let order = lock_order(client, order_id)?;
        // idempotent per provider reference
        let p = plan(client, FIND_PAYMENT, &[T::INT8OID, T::TEXTOID])?;
        let t = client.update(&*p, Some(1), &[order.customer_id.into(), provider_ref.as_str().into()])?;
        if !t.is_empty() {
            let row = t.first();
            let same = row.get::<i64>(1)? == Some(order_id)
                && row.get::<i64>(2)? == Some(amount)
                && row.get::<bool>(3)? == Some(succeeded);
            if same {
                return Ok(row.get::<String>(4)?.unwrap_or_default());
            }
            return Err(StoreError::new(Kind::Unique, "payment reference was already used for another payment")
                .detail(format!("Provider reference \"{provider_ref}\" is recorded with another order, amount or outcome.")));
        }
        let to = if succeeded { Status::Paid } else { Status::PaymentFailed };
        let what = if succeeded { "pay" } else { "record a failed payment for" };
        match order.status {
            Status::Cancelled | Status::Paid | Status::Shipped | Status::Delivered => {
                return Err(illegal_move(order_id, order.status, to, what));
            }
            _ => {}
        }
        if amount != order.total_cents {
            return Err(StoreError::invalid("payment amount does not match the order total")
                .detail(format!("Order {order_id} totals {}; the payment is {amount}.", order.total_cents)));
        }
        let outcome = if succeeded {
            if order.status == Status::Pending {
                end_holds(client, order.customer_id, order_id, "consumed")?;
            } else {
                resell(client, order.customer_id, order_id)?;
            }
            record_status(
                client,
                &[(order.customer_id, order_id, order.status)],
                Status::Paid,
                serde_json::json!({"provider_ref": provider_ref, "amount_cents": amount}),
            )?;
            Status::Paid
        } else if order.status == Status::Pending {
            end_holds(client, order.customer_id, order_id, "released")?;
            record_status(
                client,
                &[(order.customer_id, order_id, order.status)],
                Status::PaymentFailed,
                serde_json::json!({"provider_ref": provider_ref, "amount_cents": amount}),
            )?;
            Status::PaymentFailed
        } else {
            // another failed attempt on an order that holds nothing: recorded, no move
            order.status
        };
        let p = plan(
            client,
            INSERT_PAYMENT,
            &[T::INT8OID, T::INT8OID, T::TEXTOID, T::INT8OID, T::BOOLOID, T::TEXTOID],
        )?;
        client.update(
            &*p,
            None,
            &[
                order.customer_id.into(),
                order_id.into(),
                provider_ref.as_str().into(),
                amount.into(),
                succeeded.into(),
                outcome.as_str().into(),
            ],
        )?;
        Ok(outcome.as_str().to_string())
    })
}

/// cancel, ship, deliver: one legal move; cancelling a pending order
/// releases its holds.
pub fn move_order(order_id: Option<i64>, to: Status, reason: Option<&str>) -> StoreResult<String> {
    let order_id = order_id.ok_or_else(|| StoreError::null("order id"))?;
    let what = match to {
        Status::Cancelled => "cancel",
        Status::Shipped => "ship",
        Status::Delivered => "deliver",
        _ => "move",
    };
    Spi::connect_mut(|client| {
        let order = lock_order(client, order_id)?;
        if !can_move(Some(order.status), to) {
            return Err(illegal_move(order_id, order.status, to, what));
        }
        if order.status.holds_stock() {
            end_holds(client, order.customer_id, order_id, "released")?;
        }
        let detail = match reason {
            Some(r) => serde_json::json!({ "reason": r }),
            None => serde_json::json!({}),
        };
        record_status(client, &[(order.customer_id, order_id, order.status)], to, detail)?;
        Ok(to.as_str().to_string())
    })
}

const EXPIRABLE: &str = "SELECT o.customer_id, o.order_id
    FROM storefront.orders o
    WHERE (o.customer_id, o.order_id) IN (
            SELECT r.customer_id, r.order_id FROM storefront.reservation r
            WHERE r.state = 'held' AND r.expires_at <= $1
            ORDER BY r.expires_at
            LIMIT $2)
      AND o.status = 'pending'
    ORDER BY o.customer_id, o.order_id
    FOR NO KEY UPDATE OF o SKIP LOCKED";

const EXPIRED_HOLDS: &str = "SELECT l.sku_id, r.location_id, r.slot::integer, r.qty
    FROM storefront.reservation r
    JOIN storefront.order_line l
      ON l.customer_id = r.customer_id AND l.order_id = r.order_id AND l.line_no = r.line_no
    JOIN unnest($1::bigint[], $2::bigint[]) AS o(customer_id, order_id)
      ON o.customer_id = r.customer_id AND o.order_id = r.order_id
    WHERE r.customer_id = ANY ($1::bigint[]) AND r.order_id = ANY ($2::bigint[]) AND r.state = 'held'";

const EXPIRE_HOLDS: &str = "UPDATE storefront.reservation r SET state = 'expired', ended_at = now()
    FROM unnest($1::bigint[], $2::bigint[]) AS o(customer_id, order_id)
    WHERE r.customer_id = ANY ($1::bigint[]) AND r.order_id = ANY ($2::bigint[])
      AND r.customer_id = o.customer_id AND r.order_id = o.order_id AND r.state = 'held'";

/// Expire up to `batch` pending orders whose holds ended by `as_of`:
/// their stock is released and they move to `expired`. Orders another
/// session holds (being paid or cancelled) are skipped, so concurrent
/// sweepers never wait on each other. Returns the reservations released.
pub fn expire_reservations(as_of: Option<TimestampWithTimeZone>, batch: Option<i32>) -> StoreResult<i32> {
    let as_of = as_of.ok_or_else(|| StoreError::null("as_of"))?;
    let batch = batch.ok_or_else(|| StoreError::null("batch"))?;
    if !(1..=100_000).contains(&batch) {
        return Err(StoreError::invalid("batch must be between 1 and 100000")
            .detail(format!("The batch given was {batch}.")));
    }
    Spi::connect_mut(|client| {
        let p = plan(client, EXPIRABLE, &[T::TIMESTAMPTZOID, T::INT4OID])?;
        let mut orders = Vec::new();
        for row in client.update(&*p, None, &[as_of.into(), batch.into()])? {
            orders.push((row.get::<i64>(1)?.unwrap_or_default(), row.get::<i64>(2)?.unwrap_or_default()));
        }
        if orders.is_empty() {
            return Ok(0);
        }
        let custs: Vec<i64> = orders.iter().map(|o| o.0).collect();
        let ids: Vec<i64> = orders.iter().map(|o| o.1).collect();
        let p = plan(client, EXPIRED_HOLDS, &[T::INT8ARRAYOID, T::INT8ARRAYOID])?;
        let mut deltas = Vec::new();
        for row in client.update(&*p, None, &[custs.clone().into(), ids.clone().into()])? {
            let qty: i32 = row.get(4)?.unwrap_or_default();
            deltas.push(Delta {
                sku_id: row.get(1)?.unwrap_or_default(),
                location_id: row.get(2)?.unwrap_or_default(),
                slot: row.get(3)?,
                on_hand: 0,
                reserved: -qty,
            });
        }
        lock_and_apply(client, &deltas)?;
        let p = plan(client, EXPIRE_HOLDS, &[T::INT8ARRAYOID, T::INT8ARRAYOID])?;
        client.update(&*p, None, &[custs.into(), ids.into()])?;
        let moved: Vec<(i64, i64, Status)> = orders.iter().map(|o| (o.0, o.1, Status::Pending)).collect();
        record_status(client, &moved, Status::Expired, serde_json::json!({"reason": "hold expired"}))?;
        Ok(deltas.len() as i32)
    })
}
