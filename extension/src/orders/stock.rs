//! Stock locking and row-locked changes to stock levels, in one place for
//! every path that moves stock (place, pay, fail, cancel, expire, a late
//! payment's re-sale).
//!
//! Lock order, everywhere:
//! 1. the order row (payments and moves; FOR NO KEY UPDATE);
//! 2. the SKU rows, by sku_id, FOR KEY SHARE: the weakest row lock, which
//!    only set_hot_stock's FOR UPDATE conflicts with. Every path that reads
//!    a SKU's stock mode (normal or hot) or where its units live takes it
//!    first, so a switch of mode waits for every transaction using the
//!    SKU's stock and none starts while the switch runs. (Foreign-key
//!    checks on order lines take the same lock anyway.)
//! 3. `inventory` rows by (sku_id, location_id);
//! 4. hot-stock `inventory_slot` rows by (sku_id, location_id, slot).
//!
//! Row locks are FOR NO KEY UPDATE, never FOR UPDATE: no key changes, and
//! FOR UPDATE would also block the FOR KEY SHARE locks that foreign-key
//! checks take on these rows (inserting a slot or a stock movement, or
//! updating a slot row twice in one transaction, checks its inventory row),
//! which turns a wait into a deadlock.
//!
//! Every UPDATE of a stock row must hit the row it was computed for: a
//! statement that hits fewer raises 40001 (retry), never a silent loss.
//!
//! Statements join `unnest($n)` arrays with the stock tables and also say
//! `sku_id = ANY ($1)`: plans are generic (planned once, kept), and the
//! ANY restriction is what makes the generic plan an index probe rather
//! than a scan of every stock row.

use super::items::Bin;
use crate::errors::{Kind, StoreError, StoreResult};
use crate::spi_util::{plan, T};
use pgrx::spi::SpiClient;
use std::collections::BTreeMap;

/// A change to one stock row (`slot = None`) or one hot-stock slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta {
    pub sku_id: i64,
    pub location_id: i32,
    pub slot: Option<i32>,
    pub on_hand: i32,
    pub reserved: i32,
}

/// Merge deltas on the same row and split them into base rows and slots,
/// each sorted in lock order.
pub fn plan_deltas(deltas: &[Delta]) -> (Vec<Delta>, Vec<Delta>) {
    let mut merged: BTreeMap<(bool, i64, i32, i32), Delta> = BTreeMap::new();
    for d in deltas {
        let key = (d.slot.is_some(), d.sku_id, d.location_id, d.slot.unwrap_or(-1));
        merged
            .entry(key)
            .and_modify(|m| {
                m.on_hand += d.on_hand;
                m.reserved += d.reserved;
            })
            .or_insert(*d);
    }
    let (slots, base): (Vec<Delta>, Vec<Delta>) = merged
        .into_values()
        .filter(|d| d.on_hand != 0 || d.reserved != 0)
        .partition(|d| d.slot.is_some());
    (base, slots)
}

/// The 40001 for a stock statement that hit fewer rows than it must.
pub fn moved_under_us(what: &str, expected: usize, got: usize) -> StoreError {
    StoreError::new(
        Kind::SerializationFailure,
        "could not serialize access due to a concurrent change of stock",
    )
    .detail(format!("The {what} should have changed {expected} row(s) but changed {got}."))
    .hint("Retry the call in a new transaction.")
}

/// Check that an UPDATE hit every row it was computed for.
pub fn expect_rows(what: &str, expected: usize, got: usize) -> StoreResult<()> {
    if expected == got {
        Ok(())
    } else {
        Err(moved_under_us(what, expected, got))
    }
}

const LOCK_SKUS: &str = "SELECT s.sku_id, s.hot_slots::integer FROM storefront.sku s
    WHERE s.sku_id = ANY ($1::bigint[])
    ORDER BY s.sku_id
    FOR KEY SHARE OF s";

/// Lock SKU rows FOR KEY SHARE in sku_id order (step 2 of the lock
/// order); returns each SKU's hot-stock slot count as of now.
pub fn lock_skus(client: &mut SpiClient<'_>, sku_ids: &[i64]) -> StoreResult<BTreeMap<i64, i32>> {
    let mut ids = sku_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut out = BTreeMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let p = plan(client, LOCK_SKUS, &[T::INT8ARRAYOID])?;
    for row in client.update(&*p, None, &[ids.into()])? {
        out.insert(row.get::<i64>(1)?.unwrap_or_default(), row.get::<i32>(2)?.unwrap_or_default());
    }
    Ok(out)
}

const LOCK_STOCK: &str = "SELECT i.sku_id, i.location_id, i.on_hand - i.reserved
    FROM storefront.inventory i
    WHERE i.sku_id = ANY ($1::bigint[])
    ORDER BY i.sku_id, i.location_id
    FOR NO KEY UPDATE OF i";

/// Lock the stock rows of normal-mode SKUs (every location) and return
/// what is available in each, per SKU in location order.
pub fn lock_stock_bins(client: &mut SpiClient<'_>, sku_ids: &[i64]) -> StoreResult<BTreeMap<i64, Vec<Bin>>> {
    let mut bins: BTreeMap<i64, Vec<Bin>> = BTreeMap::new();
    if sku_ids.is_empty() {
        return Ok(bins);
    }
    let p = plan(client, LOCK_STOCK, &[T::INT8ARRAYOID])?;
    for row in client.update(&*p, None, &[sku_ids.to_vec().into()])? {
        bins.entry(row.get::<i64>(1)?.unwrap_or_default()).or_default().push(Bin {
            location_id: row.get(2)?.unwrap_or_default(),
            slot: None,
            available: row.get(3)?.unwrap_or_default(),
        });
    }
    Ok(bins)
}

/// Claim one slot of a hot SKU that alone covers the quantity, skipping
/// slots other transactions hold; the start point is spread by backend.
const CLAIM_SLOT: &str = "SELECT s.location_id, s.slot::integer, s.on_hand - s.reserved
    FROM storefront.inventory_slot s
    WHERE s.sku_id = $1 AND s.on_hand - s.reserved >= $2
    ORDER BY s.location_id, (s.slot + $3) % $4
    LIMIT 1
    FOR NO KEY UPDATE OF s SKIP LOCKED";

/// One free slot of hot SKU `sku_id` holding at least `qty`, locked; None
/// when every such slot is taken by other transactions (or none has it).
pub fn claim_slot(client: &mut SpiClient<'_>, sku_id: i64, qty: i32, slots: i32) -> StoreResult<Option<Bin>> {
    // SAFETY: reads the backend's process id
    let spread = (unsafe { pgrx::pg_sys::MyProcPid } as i64).rem_euclid(slots.max(1) as i64) as i32;
    let p = plan(client, CLAIM_SLOT, &[T::INT8OID, T::INT4OID, T::INT4OID, T::INT4OID])?;
    let t = client.update(&*p, Some(1), &[sku_id.into(), qty.into(), spread.into(), slots.max(1).into()])?;
    if t.is_empty() {
        return Ok(None);
    }
    let row = t.first();
    Ok(Some(Bin {
        location_id: row.get(1)?.unwrap_or_default(),
        slot: row.get(2)?,
        available: row.get(3)?.unwrap_or_default(),
    }))
}

const LOCK_SLOTS: &str = "SELECT s.location_id, s.slot::integer, s.on_hand - s.reserved
    FROM storefront.inventory_slot s
    WHERE s.sku_id = $1
    ORDER BY s.location_id, s.slot
    FOR NO KEY UPDATE OF s";

/// Lock every slot of hot SKU `sku_id`, in order, and return them.
pub fn lock_slot_bins(client: &mut SpiClient<'_>, sku_id: i64) -> StoreResult<Vec<Bin>> {
    let p = plan(client, LOCK_SLOTS, &[T::INT8OID])?;
    let mut bins = Vec::new();
    for row in client.update(&*p, None, &[sku_id.into()])? {
        bins.push(Bin {
            location_id: row.get(1)?.unwrap_or_default(),
            slot: row.get(2)?,
            available: row.get(3)?.unwrap_or_default(),
        });
    }
    Ok(bins)
}

const LOCK_BASE: &str = "SELECT 1 FROM storefront.inventory i
    JOIN unnest($1::bigint[], $2::integer[]) AS d(sku_id, location_id)
      ON i.sku_id = d.sku_id AND i.location_id = d.location_id
    WHERE i.sku_id = ANY ($1::bigint[])
    ORDER BY i.sku_id, i.location_id
    FOR NO KEY UPDATE OF i";

const APPLY_BASE: &str = "UPDATE storefront.inventory i
    SET on_hand = i.on_hand + d.on_hand, reserved = i.reserved + d.reserved, updated_at = now()
    FROM unnest($1::bigint[], $2::integer[], $3::integer[], $4::integer[]) AS d(sku_id, location_id, on_hand, reserved)
    WHERE i.sku_id = ANY ($1::bigint[]) AND i.sku_id = d.sku_id AND i.location_id = d.location_id";

const LOCK_SLOT_ROWS: &str = "SELECT 1 FROM storefront.inventory_slot i
    JOIN unnest($1::bigint[], $2::integer[], $3::integer[]) AS d(sku_id, location_id, slot)
      ON i.sku_id = d.sku_id AND i.location_id = d.location_id AND i.slot = d.slot
    WHERE i.sku_id = ANY ($1::bigint[])
    ORDER BY i.sku_id, i.location_id, i.slot
    FOR NO KEY UPDATE OF i";

const APPLY_SLOTS: &str = "UPDATE storefront.inventory_slot i
    SET on_hand = i.on_hand + d.on_hand, reserved = i.reserved + d.reserved
    FROM unnest($1::bigint[], $2::integer[], $3::integer[], $4::integer[], $5::integer[])
         AS d(sku_id, location_id, slot, on_hand, reserved)
    WHERE i.sku_id = ANY ($1::bigint[]) AND i.sku_id = d.sku_id AND i.location_id = d.location_id AND i.slot = d.slot";

/// Lock the rows the deltas touch, in lock order, then apply them; the
/// caller holds the SKU locks already. Each delta must hit its row (40001
/// otherwise); the CHECK constraints (0 <= reserved <= on_hand) guard
/// every row.
pub fn lock_and_apply(client: &mut SpiClient<'_>, deltas: &[Delta]) -> StoreResult<()> {
    let (base, slots) = plan_deltas(deltas);
    if !base.is_empty() {
        let skus: Vec<i64> = base.iter().map(|d| d.sku_id).collect();
        let locs: Vec<i32> = base.iter().map(|d| d.location_id).collect();
        let lock = plan(client, LOCK_BASE, &[T::INT8ARRAYOID, T::INT4ARRAYOID])?;
        client.update(&*lock, None, &[skus.clone().into(), locs.clone().into()])?;
        let apply = plan(client, APPLY_BASE, &[T::INT8ARRAYOID, T::INT4ARRAYOID, T::INT4ARRAYOID, T::INT4ARRAYOID])?;
        let oh: Vec<i32> = base.iter().map(|d| d.on_hand).collect();
        let rs: Vec<i32> = base.iter().map(|d| d.reserved).collect();
        let done = client.update(&*apply, None, &[skus.into(), locs.into(), oh.into(), rs.into()])?.len();
        expect_rows("stock update", base.len(), done)?;
    }
    if !slots.is_empty() {
        let skus: Vec<i64> = slots.iter().map(|d| d.sku_id).collect();
        let locs: Vec<i32> = slots.iter().map(|d| d.location_id).collect();
        let nums: Vec<i32> = slots.iter().map(|d| d.slot.unwrap_or(-1)).collect();
        let lock = plan(client, LOCK_SLOT_ROWS, &[T::INT8ARRAYOID, T::INT4ARRAYOID, T::INT4ARRAYOID])?;
        client.update(&*lock, None, &[skus.clone().into(), locs.clone().into(), nums.clone().into()])?;
        let apply = plan(
            client,
            APPLY_SLOTS,
            &[T::INT8ARRAYOID, T::INT4ARRAYOID, T::INT4ARRAYOID, T::INT4ARRAYOID, T::INT4ARRAYOID],
        )?;
        let oh: Vec<i32> = slots.iter().map(|d| d.on_hand).collect();
        let rs: Vec<i32> = slots.iter().map(|d| d.reserved).collect();
        let done = client.update(&*apply, None, &[skus.into(), locs.into(), nums.into(), oh.into(), rs.into()])?.len();
        expect_rows("hot-stock slot update", slots.len(), done)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(sku: i64, loc: i32, slot: Option<i32>, oh: i32, r: i32) -> Delta {
        Delta { sku_id: sku, location_id: loc, slot, on_hand: oh, reserved: r }
    }

    #[test]
    fn deltas_merge_sort_and_split() {
        let (base, slots) = plan_deltas(&[
            d(9, 1, None, 0, -1),
            d(3, 2, Some(4), 0, -2),
            d(3, 1, None, -1, -1),
            d(9, 1, None, 0, -2),
            d(3, 2, Some(1), 0, -1),
            d(5, 1, None, 0, 0),
        ]);
        assert_eq!(base, vec![d(3, 1, None, -1, -1), d(9, 1, None, 0, -3)]);
        assert_eq!(slots, vec![d(3, 2, Some(1), 0, -1), d(3, 2, Some(4), 0, -2)]);
    }

    #[test]
    fn row_counts_must_match() {
        assert!(expect_rows("stock update", 2, 2).is_ok());
        let e = expect_rows("stock update", 2, 1).unwrap_err();
        assert_eq!(e.kind, Kind::SerializationFailure);
        assert!(e.detail.unwrap().contains("2 row(s) but changed 1"));
    }
}
