//! Everything after placement: payments, cancellation, shipping, delivery
//! and expiry of holds. Each call locks the order row first (FOR NO KEY UPDATE, so
//! calls on one order serialize), then stock rows in lock order (see
//! `stock.rs`), checks the move against the status machine (`status.rs`)
//! and records it with history, outbox row and NOTIFY in one statement.

use super::status::{can_move, Status};
use super::stock::{expect_rows, lock_and_apply, lock_skus, lock_slot_bins, lock_stock_bins, Delta};
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
/// `$6` is when the change happens (taken after the order rows are locked,
/// so changes of one order get increasing times in seq order; `greatest`
/// keeps them so should the clock step back).
macro_rules! record_status_sql {
    ($tail:literal) => {
        concat!(
            "WITH c AS (
        SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS c(customer_id, order_id, previous)
    ), u AS (
        UPDATE storefront.orders o SET status = $4, updated_at = $6
        FROM c WHERE o.order_id = ANY ($2::bigint[]) AND o.customer_id = c.customer_id AND o.order_id = c.order_id
        RETURNING 1
    ), h AS (
        INSERT INTO storefront.order_status_history (customer_id, order_id, seq, status, at, detail)
        SELECT c.customer_id, c.order_id, p.seq, $4, p.at, $5
        FROM c CROSS JOIN LATERAL (
            SELECT coalesce(max(x.seq), 0) + 1 AS seq, greatest($6, max(x.at)) AS at
            FROM storefront.order_status_history x
            WHERE x.customer_id = c.customer_id AND x.order_id = c.order_id) p
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

/// ... announced by NOTIFY now (event_delivery = notify) or queued for the
/// relay; returns (orders updated, events sent or queued).
const RECORD_STATUS_NOTIFY: &str = record_status_sql!(
    "    SELECT (SELECT count(*) FROM u),
           (SELECT count(pg_notify('storefront_order_events', storefront.notify_payload(payload::text))) FROM ob)"
);
const RECORD_STATUS_QUEUE: &str = record_status_sql!(
    ", q AS (INSERT INTO storefront.order_event_queue (payload) SELECT payload::text FROM ob RETURNING 1)
    SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM q)"
);

/// The SKUs of an order's lines (the lines never change).
const ORDER_SKUS: &str = "SELECT DISTINCT l.sku_id FROM storefront.order_line l
    WHERE l.customer_id = $1 AND l.order_id = $2";

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

const ORDER_LINES: &str = "SELECT l.line_no, l.sku_id, l.qty, s.code
    FROM storefront.order_line l JOIN storefront.sku s ON s.sku_id = l.sku_id
    WHERE l.customer_id = $1 AND l.order_id = $2
    ORDER BY l.sku_id";

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

/// The moment a status change happens: now, by the clock (not the
/// transaction's start, which can be earlier than a change another
/// transaction committed to the same order meanwhile).
fn change_time() -> StoreResult<TimestampWithTimeZone> {
    // SAFETY: reads the clock
    TimestampWithTimeZone::try_from(unsafe { pgrx::pg_sys::GetCurrentTimestamp() })
        .map_err(|_| StoreError::internal("the clock is outside the timestamp range"))
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
    let at = change_time()?;
    let sql = match crate::relay::delivery() {
        crate::relay::Delivery::Notify => RECORD_STATUS_NOTIFY,
        crate::relay::Delivery::Relay => RECORD_STATUS_QUEUE,
    };
    let p = plan(
        client,
        sql,
        &[T::INT8ARRAYOID, T::INT8ARRAYOID, T::TEXTARRAYOID, T::TEXTOID, T::JSONBOID, T::TIMESTAMPTZOID],
    )?;
    let t = client.update(
        &*p,
        Some(1),
        &[
            orders.iter().map(|o| o.0).collect::<Vec<i64>>().into(),
            orders.iter().map(|o| o.1).collect::<Vec<i64>>().into(),
            orders.iter().map(|o| o.2.as_str().to_string()).collect::<Vec<String>>().into(),
            to.as_str().into(),
            pgrx::JsonB(detail).into(),
            at.into(),
        ],
    )?;
    let row = t.first();
    let updated = row.get::<i64>(1)?.unwrap_or_default() as usize;
    let events = row.get::<i64>(2)?.unwrap_or_default() as usize;
    if updated != orders.len() || events != orders.len() {
        return Err(StoreError::new(Kind::SerializationFailure, "could not serialize access due to a concurrent change of an order")
            .detail(format!("{} order(s) should have moved to {}, {updated} did.", orders.len(), to.as_str()))
            .hint("Retry the call in a new transaction."));
    }
    Ok(())
}

/// Lock the SKU rows of an order's lines (step 2 of the lock order in
/// `stock.rs`), so where its units live cannot change under us.
fn lock_order_skus(client: &mut SpiClient<'_>, customer_id: i64, order_id: i64) -> StoreResult<BTreeMap<i64, i32>> {
    let p = plan(client, ORDER_SKUS, &[T::INT8OID, T::INT8OID])?;
    let mut skus = Vec::new();
    for row in client.update(&*p, None, &[customer_id.into(), order_id.into()])? {
        skus.push(row.get::<i64>(1)?.unwrap_or_default());
    }
    lock_skus(client, &skus)
}

/// End the order's live holds: `consumed` (sold: on_hand and reserved both
/// drop), or `released` / `expired` (reserved drops).
fn end_holds(client: &mut SpiClient<'_>, customer_id: i64, order_id: i64, state: &str) -> StoreResult<i64> {
    // lock the SKUs first, then read where the held units live now
    lock_order_skus(client, customer_id, order_id)?;
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
    let ended = client.update(&*p, None, &[customer_id.into(), order_id.into(), state.into()])?.len();
    expect_rows("end of the order's holds", deltas.len(), ended)?;
    Ok(units)
}

/// A late payment (after expiry or a failed attempt): take the lines' stock
/// again, now, and sell it at once; 23514 if it is no longer there.
fn resell(client: &mut SpiClient<'_>, customer_id: i64, order_id: i64) -> StoreResult<()> {
    let modes = lock_order_skus(client, customer_id, order_id)?;
    let p = plan(client, ORDER_LINES, &[T::INT8OID, T::INT8OID])?;
    struct L {
        line_no: i32,
        sku_id: i64,
        qty: i32,
        code: String,
    }
    let mut lines = Vec::new();
    for row in client.update(&*p, None, &[customer_id.into(), order_id.into()])? {
        lines.push(L {
            line_no: row.get(1)?.unwrap_or_default(),
            sku_id: row.get(2)?.unwrap_or_default(),
            qty: row.get(3)?.unwrap_or_default(),
            code: row.get(4)?.unwrap_or_default(),
        });
    }
    let hot = |sku: i64| modes.get(&sku).copied().unwrap_or(0) > 0;
    // lock: normal rows first (sorted), then each hot SKU's slots in order
    let normal: Vec<i64> = lines.iter().filter(|l| !hot(l.sku_id)).map(|l| l.sku_id).collect();
    let mut bins: BTreeMap<i64, Vec<Bin>> = lock_stock_bins(client, &normal)?;
    for l in lines.iter().filter(|l| hot(l.sku_id)) {
        let slots = lock_slot_bins(client, l.sku_id)?;
        bins.entry(l.sku_id).or_default().extend(slots);
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
        crate::roles::check_in(client, order.customer_id)?;
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
/// Longest cancellation reason (characters). Free text that enters an
/// order event is bounded, so its NOTIFY payload always fits.
pub const MAX_REASON_CHARS: usize = 500;

pub fn check_reason(reason: Option<&str>) -> StoreResult<Option<&str>> {
    match reason {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => Err(StoreError::invalid("cancellation reason is too long")
            .detail(format!("A reason has at most {MAX_REASON_CHARS} characters; this one has {}.", r.chars().count()))),
        other => Ok(other),
    }
}

pub fn move_order(order_id: Option<i64>, to: Status, reason: Option<&str>) -> StoreResult<String> {
    let order_id = order_id.ok_or_else(|| StoreError::null("order id"))?;
    let reason = check_reason(reason)?;
    let what = match to {
        Status::Cancelled => "cancel",
        Status::Shipped => "ship",
        Status::Delivered => "deliver",
        _ => "move",
    };
    Spi::connect_mut(|client| {
        let order = lock_order(client, order_id)?;
        crate::roles::check_in(client, order.customer_id)?;
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

/// The SKUs of the orders being expired.
const EXPIRED_SKUS: &str = "SELECT DISTINCT l.sku_id
    FROM storefront.order_line l
    JOIN unnest($1::bigint[], $2::bigint[]) AS o(customer_id, order_id)
      ON o.customer_id = l.customer_id AND o.order_id = l.order_id
    WHERE l.customer_id = ANY ($1::bigint[]) AND l.order_id = ANY ($2::bigint[])";

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
        // lock the SKUs first, then read where the held units live now
        let p = plan(client, EXPIRED_SKUS, &[T::INT8ARRAYOID, T::INT8ARRAYOID])?;
        let mut skus = Vec::new();
        for row in client.update(&*p, None, &[custs.clone().into(), ids.clone().into()])? {
            skus.push(row.get::<i64>(1)?.unwrap_or_default());
        }
        lock_skus(client, &skus)?;
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
        let ended = client.update(&*p, None, &[custs.into(), ids.into()])?.len();
        expect_rows("expiry of holds", deltas.len(), ended)?;
        let moved: Vec<(i64, i64, Status)> = orders.iter().map(|o| (o.0, o.1, Status::Pending)).collect();
        record_status(client, &moved, Status::Expired, serde_json::json!({"reason": "hold expired"}))?;
        Ok(deltas.len() as i32)
    })
}
