//! Row-locked changes to stock levels, shared by every path that moves
//! stock (place, pay, fail, cancel, expire).
//!
//! Lock order, everywhere: first `inventory` rows by (sku_id, location_id),
//! then hot-stock `inventory_slot` rows by (sku_id, location_id, slot). A
//! caller that also locks an order row takes it before any of these.
//!
//! Row locks are FOR NO KEY UPDATE, never FOR UPDATE: no key changes, and
//! FOR UPDATE would also block the FOR KEY SHARE locks that foreign-key
//! checks take on these rows (inserting a slot or a stock movement, or
//! updating a slot row twice in one transaction, checks its inventory row),
//! which turns a wait into a deadlock.
//!
//! Statements join `unnest($n)` arrays with the stock tables and also say
//! `sku_id = ANY ($1)`: plans are generic (planned once, kept), and the
//! ANY restriction is what makes the generic plan an index probe rather
//! than a scan of every stock row.

use crate::errors::StoreResult;
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

const LOCK_SLOTS: &str = "SELECT 1 FROM storefront.inventory_slot i
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

/// Lock the rows the deltas touch, in lock order, then apply them. The
/// CHECK constraints (0 <= reserved <= on_hand) guard every row.
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
        client.update(&*apply, None, &[skus.into(), locs.into(), oh.into(), rs.into()])?;
    }
    if !slots.is_empty() {
        let skus: Vec<i64> = slots.iter().map(|d| d.sku_id).collect();
        let locs: Vec<i32> = slots.iter().map(|d| d.location_id).collect();
        let nums: Vec<i32> = slots.iter().map(|d| d.slot.unwrap_or(-1)).collect();
        let lock = plan(client, LOCK_SLOTS, &[T::INT8ARRAYOID, T::INT4ARRAYOID, T::INT4ARRAYOID])?;
        client.update(&*lock, None, &[skus.clone().into(), locs.clone().into(), nums.clone().into()])?;
        let apply = plan(
            client,
            APPLY_SLOTS,
            &[T::INT8ARRAYOID, T::INT4ARRAYOID, T::INT4ARRAYOID, T::INT4ARRAYOID, T::INT4ARRAYOID],
        )?;
        let oh: Vec<i32> = slots.iter().map(|d| d.on_hand).collect();
        let rs: Vec<i32> = slots.iter().map(|d| d.reserved).collect();
        client.update(&*apply, None, &[skus.into(), locs.into(), nums.into(), oh.into(), rs.into()])?;
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
}
