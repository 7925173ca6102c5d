//! place_order: validate, reserve every line or none, write the order, its
//! lines, reservations, first status event and outbox row — one
//! transaction, one round trip.
//!
//! Steps (statements are kept prepared plans):
//! 1. parse and merge the items (pure, `items.rs`), check the hold;
//! 2. with an idempotency key: an existing order under it is replayed
//!    (same request) or refused with 23505 (different request);
//! 3. look up the customer and the SKUs (23503 for unknown / unsellable);
//! 4. insert the order row; `ON CONFLICT DO NOTHING` on the idempotency key
//!    makes a concurrent duplicate wait for the first and then replay it;
//! 5. lock stock rows in (sku_id, location_id) order and read what is
//!    available; hot-stock SKUs claim slots with SKIP LOCKED (see below);
//! 6. allocate every line (pure); any shortage raises 23514 naming every
//!    short SKU, which rolls back the order row too;
//! 7. one statement writes the stock changes, lines, reservations, status
//!    history and outbox row, and sends NOTIFY (delivered at commit).

use super::items::{allocate, canonical_request, check_hold, parse_items, shortage_error, Bin, Item, Shortage};
use super::stock;
use super::Receipt;
use crate::errors::{Kind, StoreError, StoreResult};
use crate::relay::Delivery;
use crate::spi_util::{plan, T};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A line after lookup: the SKU row and the merged quantity.
#[derive(Debug, Clone)]
struct Line {
    code: String,
    sku_id: i64,
    price_cents: i64,
    hot_slots: i32,
    qty: i32,
}

/// One take of stock for one line.
#[derive(Debug, Clone, Copy)]
struct Take {
    line_no: i32,
    sku_id: i64,
    location_id: i32,
    slot: Option<i32>,
    qty: i32,
}

const FIND_BY_KEY: &str = "SELECT o.order_id, o.request_hash, o.status, o.total_cents, o.currency::text,
        (SELECT max(r.expires_at) FROM storefront.reservation r
          WHERE r.customer_id = o.customer_id AND r.order_id = o.order_id)
    FROM storefront.orders o
    WHERE o.customer_id = $1 AND o.idempotency_key = $2";

/// The SKUs named, locked FOR KEY SHARE in sku_id order (step 2 of the
/// lock order in `stock.rs`: their stock mode cannot change under us), with
/// the customer check in the same statement. Written with `= ANY ($2)` so
/// that even the generic plan (plans are kept and planned once) probes the
/// code index instead of scanning the catalog.
const LOOKUP: &str = "SELECT EXISTS (SELECT 1 FROM storefront.customer c WHERE c.customer_id = $1),
        s.code, s.sku_id, s.price_cents, s.currency::text, s.sellable, s.hot_slots::integer
    FROM storefront.sku s
    WHERE s.code = ANY ($2::text[])
    ORDER BY s.sku_id
    FOR KEY SHARE OF s";

/// The customer check alone (when no SKU matched).
const CUSTOMER_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM storefront.customer c WHERE c.customer_id = $1)";

const INSERT_ORDER: &str = "INSERT INTO storefront.orders
        (customer_id, status, currency, total_cents, idempotency_key, request_hash)
    VALUES ($1, 'pending', $2, $3, $4, $5)
    ON CONFLICT (customer_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING order_id, now() + $6::interval";

/// The statement shared by both delivery modes; the event goes out by
/// NOTIFY now (`WRITE_NOTIFY`) or into the relay's queue (`WRITE_QUEUE`).
macro_rules! write_sql {
    ($tail:literal) => {
        concat!(
            "WITH inv AS (
        UPDATE storefront.inventory i
        SET reserved = i.reserved + d.qty, updated_at = now()
        FROM unnest($3::bigint[], $4::integer[], $5::integer[]) AS d(sku_id, location_id, qty)
        WHERE i.sku_id = ANY ($3::bigint[]) AND i.sku_id = d.sku_id AND i.location_id = d.location_id
        RETURNING 1
    ), slots AS (
        UPDATE storefront.inventory_slot i
        SET reserved = i.reserved + d.qty
        FROM unnest($6::bigint[], $7::integer[], $8::integer[], $9::integer[]) AS d(sku_id, location_id, slot, qty)
        WHERE i.sku_id = ANY ($6::bigint[]) AND i.sku_id = d.sku_id AND i.location_id = d.location_id AND i.slot = d.slot
        RETURNING 1
    ), lines AS (
        INSERT INTO storefront.order_line (customer_id, order_id, line_no, sku_id, qty, unit_price_cents)
        SELECT $1, $2, l.line_no, l.sku_id, l.qty, l.price
        FROM unnest($10::integer[], $11::bigint[], $12::integer[], $13::bigint[]) AS l(line_no, sku_id, qty, price)
    ), res AS (
        INSERT INTO storefront.reservation (customer_id, order_id, line_no, location_id, slot, qty, expires_at)
        SELECT $1, $2, r.line_no, r.location_id, r.slot, r.qty, $14
        FROM unnest($15::integer[], $16::integer[], $17::integer[], $18::integer[]) AS r(line_no, location_id, slot, qty)
    ), hist AS (
        INSERT INTO storefront.order_status_history (customer_id, order_id, seq, status, at, detail)
        VALUES ($1, $2, 1, 'pending', $21, jsonb_build_object('lines', cardinality($10::integer[]), 'expires_at', $14))
    ), ob AS (
        INSERT INTO storefront.outbox (customer_id, aggregatetype, aggregateid, type, payload, created_at)
        VALUES ($1, 'order', $2::text, 'order.pending',
                jsonb_build_object('order_id', $2, 'customer_id', $1, 'seq', 1, 'status', 'pending',
                                   'previous', NULL, 'at', $21, 'total_cents', $19::bigint, 'currency', $20::text,
                                   'expires_at', $14),
                $21)
        RETURNING payload
    ), sent AS (
",
            $tail
        )
    };
}

const WRITE_NOTIFY: &str = write_sql!(
    "        SELECT pg_notify('storefront_order_events', storefront.notify_payload(ob.payload::text)) FROM ob
    )
    SELECT (SELECT count(*) FROM inv), (SELECT count(*) FROM slots), (SELECT count(*) FROM sent)"
);
const WRITE_QUEUE: &str = write_sql!(
    "        INSERT INTO storefront.order_event_queue (payload) SELECT ob.payload::text FROM ob RETURNING 1
    )
    SELECT (SELECT count(*) FROM inv), (SELECT count(*) FROM slots), (SELECT count(*) FROM sent)"
);

pub fn place_order(
    customer_id: Option<i64>,
    items: Option<&str>,
    idempotency_key: Option<&str>,
    hold: Option<Interval>,
) -> StoreResult<Receipt> {
    let customer_id = customer_id.ok_or_else(|| {
        StoreError::new(Kind::ForeignKey, "customer must not be null")
            .detail("Every order belongs to a registered customer.")
    })?;
    crate::roles::check(customer_id)?;
    let items = items.ok_or_else(|| StoreError::null("items"))?;
    let items = parse_items(&crate::args::parse_value(items, "order items")?)?;
    let hold = hold.ok_or_else(|| StoreError::null("hold"))?;
    let hold_micros = check_hold(hold.months(), hold.days(), hold.micros())?;
    let key = match idempotency_key {
        Some(k) if k.is_empty() || k.len() > 255 => {
            return Err(StoreError::invalid("idempotency key must have 1 to 255 characters"))
        }
        other => other,
    };
    // only keyed requests need the fingerprint
    let hash: Vec<u8> = match key {
        Some(_) => Sha256::digest(canonical_request(&items, hold_micros).as_bytes()).to_vec(),
        None => Vec::new(),
    };

    Spi::connect_mut(|client| {
        if let Some(key) = key {
            if let Some(r) = find_by_key(client, customer_id, key, &hash)? {
                return Ok(r);
            }
        }
        let (lines, currency) = lookup(client, customer_id, &items)?;
        let total = order_total(&lines.iter().map(|l| (l.code.as_str(), l.price_cents, l.qty)).collect::<Vec<_>>())?;

        let insert = plan(
            client,
            INSERT_ORDER,
            &[T::INT8OID, T::TEXTOID, T::INT8OID, T::TEXTOID, T::BYTEAOID, T::INTERVALOID],
        )?;
        let inserted = client.update(
            &*insert,
            Some(1),
            &[
                customer_id.into(),
                currency.as_str().into(),
                total.into(),
                key.into(),
                key.map(|_| hash.clone()).into(),
                hold.into(),
            ],
        )?;
        let (order_id, expires_at) = if inserted.is_empty() {
            // a concurrent call with the same key committed first
            let key = key.unwrap_or_default();
            return match find_by_key(client, customer_id, key, &hash)? {
                Some(r) => Ok(r),
                // the caller's snapshot predates the other order (REPEATABLE READ)
                None => Err(StoreError::new(
                    Kind::SerializationFailure,
                    "could not serialize access due to a concurrent order with the same idempotency key",
                )
                .hint("Retry the call in a new transaction.")),
            };
        } else {
            let row = inserted.first();
            (
                row.get::<i64>(1)?.ok_or_else(|| StoreError::internal("order insert returned no id"))?,
                row.get::<TimestampWithTimeZone>(2)?,
            )
        };

        let takes = reserve(client, &lines)?;
        write(client, customer_id, order_id, &lines, &takes, expires_at, total, &currency)?;
        Ok(Receipt {
            order_id,
            status: "pending".into(),
            total_cents: total,
            currency,
            expires_at,
            replayed: false,
        })
    })
}

fn find_by_key(client: &mut SpiClient<'_>, customer_id: i64, key: &str, hash: &[u8]) -> StoreResult<Option<Receipt>> {
    let p = plan(client, FIND_BY_KEY, &[T::INT8OID, T::TEXTOID])?;
    let t = client.update(&*p, Some(1), &[customer_id.into(), key.into()])?;
    if t.is_empty() {
        return Ok(None);
    }
    let row = t.first();
    let stored: Option<Vec<u8>> = row.get(2)?;
    if stored.as_deref() != Some(hash) {
        return Err(StoreError::new(Kind::Unique, "idempotency key was already used for a different request")
            .detail(format!("Customer {customer_id} used key \"{key}\" for an order with other items or another hold."))
            .hint("Use a new idempotency key for a new request."));
    }
    Ok(Some(Receipt {
        order_id: row.get::<i64>(1)?.unwrap_or_default(),
        status: row.get::<String>(3)?.unwrap_or_default(),
        total_cents: row.get::<i64>(4)?.unwrap_or_default(),
        currency: row.get::<String>(5)?.unwrap_or_default(),
        expires_at: row.get::<TimestampWithTimeZone>(6)?,
        replayed: true,
    }))
}

/// Resolve SKU codes and lock their rows (FOR KEY SHARE, sku_id order);
/// lines come back sorted by sku_id (the lock order).
fn lookup(client: &mut SpiClient<'_>, customer_id: i64, items: &[Item]) -> StoreResult<(Vec<Line>, String)> {
    struct Sku {
        sku_id: i64,
        price_cents: i64,
        currency: String,
        sellable: bool,
        hot_slots: i32,
    }
    let p = plan(client, LOOKUP, &[T::INT8OID, T::TEXTARRAYOID])?;
    let codes: Vec<String> = items.iter().map(|i| i.sku.clone()).collect();
    let mut customer_ok = None;
    let mut found: BTreeMap<String, Sku> = BTreeMap::new();
    for row in client.update(&*p, None, &[customer_id.into(), codes.into()])? {
        customer_ok = Some(row.get::<bool>(1)?.unwrap_or(false));
        if let (Some(code), Some(sku_id)) = (row.get::<String>(2)?, row.get::<i64>(3)?) {
            found.insert(
                code,
                Sku {
                    sku_id,
                    price_cents: row.get(4)?.unwrap_or_default(),
                    currency: row.get(5)?.unwrap_or_default(),
                    sellable: row.get(6)?.unwrap_or(false),
                    hot_slots: row.get(7)?.unwrap_or(0),
                },
            );
        }
    }
    let customer_ok = match customer_ok {
        Some(ok) => ok,
        None => {
            let p = plan(client, CUSTOMER_EXISTS, &[T::INT8OID])?;
            let t = client.update(&*p, Some(1), &[customer_id.into()])?;
            !t.is_empty() && t.first().get::<bool>(1)?.unwrap_or(false)
        }
    };
    if !customer_ok {
        return Err(StoreError::new(Kind::ForeignKey, format!("customer {customer_id} does not exist"))
            .hint("Register customers with storefront.register_customer()."));
    }
    let mut lines = Vec::with_capacity(items.len());
    let mut unknown = Vec::new();
    let mut unsellable = Vec::new();
    let mut currencies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in items {
        match found.get(&item.sku) {
            None => unknown.push(item.sku.clone()),
            Some(s) => {
                if !s.sellable {
                    unsellable.push(item.sku.clone());
                }
                currencies.entry(s.currency.clone()).or_default().push(item.sku.clone());
                lines.push(Line {
                    code: item.sku.clone(),
                    sku_id: s.sku_id,
                    price_cents: s.price_cents,
                    hot_slots: s.hot_slots,
                    qty: item.qty,
                });
            }
        }
    }
    if !unknown.is_empty() || !unsellable.is_empty() {
        let mut parts = Vec::new();
        if !unknown.is_empty() {
            parts.push(format!("Unknown: {}.", quote_list(&unknown)));
        }
        if !unsellable.is_empty() {
            parts.push(format!("Not for sale: {}.", quote_list(&unsellable)));
        }
        return Err(StoreError::new(Kind::ForeignKey, "order names SKUs that cannot be sold").detail(parts.join(" ")));
    }
    if currencies.len() > 1 {
        let detail = currencies
            .iter()
            .map(|(c, skus)| format!("{c}: {}.", quote_list(skus)))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(StoreError::invalid("order items must share one currency").detail(detail));
    }
    let currency = currencies.into_keys().next().unwrap_or_else(|| "USD".to_string());
    lines.sort_by_key(|l| l.sku_id);
    Ok((lines, currency))
}

fn quote_list(skus: &[String]) -> String {
    skus.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
}

/// Lock and allocate stock for every line; all or nothing. The SKU rows
/// are locked already (lookup), so each SKU's mode is the one it has now.
fn reserve(client: &mut SpiClient<'_>, lines: &[Line]) -> StoreResult<Vec<Take>> {
    let mut takes = Vec::new();
    let mut short = Vec::new();

    // normal SKUs: one statement locks all their rows in (sku, location) order
    let normal: Vec<i64> = lines.iter().filter(|l| l.hot_slots == 0).map(|l| l.sku_id).collect();
    let bins = stock::lock_stock_bins(client, &normal)?;
    for (i, line) in lines.iter().enumerate() {
        let line_no = i as i32 + 1;
        let result = if line.hot_slots == 0 {
            let b = bins.get(&line.sku_id).map(Vec::as_slice).unwrap_or(&[]);
            allocate(b, line.qty).map(|t| (b.to_vec(), t))
        } else {
            claim_hot(client, line)?
        };
        match result {
            Ok((b, t)) => takes.extend(t.into_iter().map(|(bi, qty)| Take {
                line_no,
                sku_id: line.sku_id,
                location_id: b[bi].location_id,
                slot: b[bi].slot,
                qty,
            })),
            Err(available) => short.push(Shortage { sku: line.code.clone(), requested: line.qty as i64, available }),
        }
    }
    if !short.is_empty() {
        return Err(shortage_error(&short));
    }
    Ok(takes)
}

/// Hot-stock SKU: first try to claim one free slot that covers the line
/// (SKIP LOCKED, so buyers of the same SKU spread over slots instead of
/// queueing on one row); failing that, lock every slot in order and
/// allocate across them, which is exact when stock runs low.
#[allow(clippy::type_complexity)]
fn claim_hot(client: &mut SpiClient<'_>, line: &Line) -> StoreResult<Result<(Vec<Bin>, Vec<(usize, i32)>), i64>> {
    if let Some(bin) = stock::claim_slot(client, line.sku_id, line.qty, line.hot_slots)? {
        return Ok(Ok((vec![bin], vec![(0, line.qty)])));
    }
    let bins = stock::lock_slot_bins(client, line.sku_id)?;
    Ok(allocate(&bins, line.qty).map(|t| (bins, t)))
}

/// An order's total from its lines (code, unit price, qty): checked, so a
/// total beyond bigint is a 22003 naming the line, never a wrapped value.
pub fn order_total(lines: &[(&str, i64, i32)]) -> StoreResult<i64> {
    let mut total: i64 = 0;
    for &(code, price, qty) in lines {
        let line = price.checked_mul(qty as i64).ok_or_else(|| {
            StoreError::out_of_range("order line total is out of range")
                .detail(format!("SKU \"{code}\": {qty} x {price} does not fit in a bigint."))
        })?;
        total = total.checked_add(line).ok_or_else(|| {
            StoreError::out_of_range("order total is out of range")
                .detail("The sum of the order's lines does not fit in a bigint.")
        })?;
    }
    Ok(total)
}

#[allow(clippy::too_many_arguments)]
fn write(
    client: &mut SpiClient<'_>,
    customer_id: i64,
    order_id: i64,
    lines: &[Line],
    takes: &[Take],
    expires_at: Option<TimestampWithTimeZone>,
    total: i64,
    currency: &str,
) -> StoreResult<()> {
    // per stock row (normal) and per slot (hot), summed
    let mut base: BTreeMap<(i64, i32), i32> = BTreeMap::new();
    let mut slots: BTreeMap<(i64, i32, i32), i32> = BTreeMap::new();
    for t in takes {
        match t.slot {
            None => *base.entry((t.sku_id, t.location_id)).or_default() += t.qty,
            Some(s) => *slots.entry((t.sku_id, t.location_id, s)).or_default() += t.qty,
        }
    }
    let sql = match crate::relay::delivery() {
        Delivery::Notify => WRITE_NOTIFY,
        Delivery::Relay => WRITE_QUEUE,
    };
    // the status change is stamped when it happens (see lifecycle.rs)
    // SAFETY: reads the clock
    let at = TimestampWithTimeZone::try_from(unsafe { pgrx::pg_sys::GetCurrentTimestamp() })
        .map_err(|_| StoreError::internal("the clock is outside the timestamp range"))?;
    let p = plan(
        client,
        sql,
        &[
            T::INT8OID,       // $1 customer
            T::INT8OID,       // $2 order
            T::INT8ARRAYOID,  // $3..$5 stock rows
            T::INT4ARRAYOID,
            T::INT4ARRAYOID,
            T::INT8ARRAYOID,  // $6..$9 slots
            T::INT4ARRAYOID,
            T::INT4ARRAYOID,
            T::INT4ARRAYOID,
            T::INT4ARRAYOID,  // $10..$13 lines
            T::INT8ARRAYOID,
            T::INT4ARRAYOID,
            T::INT8ARRAYOID,
            T::TIMESTAMPTZOID, // $14 expires_at
            T::INT4ARRAYOID,  // $15..$18 reservations
            T::INT4ARRAYOID,
            T::INT4ARRAYOID,
            T::INT4ARRAYOID,
            T::INT8OID,       // $19 total
            T::TEXTOID,       // $20 currency
            T::TIMESTAMPTZOID, // $21 the change's time
        ],
    )?;
    let args = [
        customer_id.into(),
        order_id.into(),
        base.keys().map(|k| k.0).collect::<Vec<i64>>().into(),
        base.keys().map(|k| k.1).collect::<Vec<i32>>().into(),
        base.values().copied().collect::<Vec<i32>>().into(),
        slots.keys().map(|k| k.0).collect::<Vec<i64>>().into(),
        slots.keys().map(|k| k.1).collect::<Vec<i32>>().into(),
        slots.keys().map(|k| k.2).collect::<Vec<i32>>().into(),
        slots.values().copied().collect::<Vec<i32>>().into(),
        (1..=lines.len() as i32).collect::<Vec<i32>>().into(),
        lines.iter().map(|l| l.sku_id).collect::<Vec<i64>>().into(),
        lines.iter().map(|l| l.qty).collect::<Vec<i32>>().into(),
        lines.iter().map(|l| l.price_cents).collect::<Vec<i64>>().into(),
        expires_at.into(),
        takes.iter().map(|t| t.line_no).collect::<Vec<i32>>().into(),
        takes.iter().map(|t| t.location_id).collect::<Vec<i32>>().into(),
        takes.iter().map(|t| t.slot).collect::<Vec<Option<i32>>>().into(),
        takes.iter().map(|t| t.qty).collect::<Vec<i32>>().into(),
        total.into(),
        currency.into(),
        at.into(),
    ];
    let t = client.update(&*p, Some(1), &args)?;
    let row = t.first();
    let (inv, slot, sent) = (
        row.get::<i64>(1)?.unwrap_or_default() as usize,
        row.get::<i64>(2)?.unwrap_or_default() as usize,
        row.get::<i64>(3)?.unwrap_or_default() as usize,
    );
    stock::expect_rows("stock update", base.len(), inv)?;
    stock::expect_rows("hot-stock slot update", slots.len(), slot)?;
    if sent != 1 {
        return Err(StoreError::internal("the order event was not recorded"));
    }
    Ok(())
}
