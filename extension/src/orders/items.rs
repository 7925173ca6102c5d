//! Pure logic of order placement: the item list (validation, merging,
//! fingerprint for idempotency), stock allocation over locations, and the
//! shortage report. No PostgreSQL types; tested with `#[test]`.

use crate::errors::{Kind, StoreError, StoreResult};
use serde_json::Value;
use std::collections::BTreeMap;

/// Most units of one SKU in one order (after merging repeated SKUs).
pub const MAX_QTY_PER_LINE: i64 = 1000;
/// Most distinct lines in one order (and most array elements accepted).
pub const MAX_LINES: usize = 100;
/// Longest hold a caller may ask for, in microseconds (7 days).
pub const MAX_HOLD_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;

/// One requested line: SKU code and quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub sku: String,
    pub qty: i32,
}

fn shape(detail: impl Into<String>) -> StoreError {
    StoreError::new(Kind::InvalidText, "invalid order items")
        .detail(detail)
        .hint("Pass a JSON array of objects such as [{\"sku\": \"TEE-BLK-M\", \"qty\": 2}].")
}

/// Parse `items`: a non-empty JSON array (at most MAX_LINES elements) of
/// objects with exactly the keys "sku" (a non-empty string) and "qty" (an
/// integer from 1 to MAX_QTY_PER_LINE). Repeated SKUs are merged (their
/// quantities added, the sum checked against the limit); the result is
/// sorted by SKU code, so it is also the canonical form of the request.
///
/// Wrong shapes are 22P02, out-of-range values 22023.
pub fn parse_items(items: &Value) -> StoreResult<Vec<Item>> {
    let arr = match items {
        Value::Array(a) => a,
        other => return Err(shape(format!("The items are a JSON {}, not an array.", json_type(other)))),
    };
    if arr.is_empty() {
        return Err(StoreError::invalid("an order needs at least one item")
            .detail("The items array is empty."));
    }
    if arr.len() > MAX_LINES {
        return Err(StoreError::invalid("too many order lines")
            .detail(format!("The items array has {} elements; an order has at most {MAX_LINES} lines.", arr.len())));
    }
    let mut merged: BTreeMap<String, i64> = BTreeMap::new();
    for (i, el) in arr.iter().enumerate() {
        let n = i + 1;
        let obj = match el {
            Value::Object(o) => o,
            other => return Err(shape(format!("Item {n} is a JSON {}, not an object.", json_type(other)))),
        };
        if let Some(extra) = obj.keys().find(|k| *k != "sku" && *k != "qty") {
            return Err(shape(format!("Item {n} has an unexpected key \"{extra}\"; only \"sku\" and \"qty\" are allowed.")));
        }
        let sku = match obj.get("sku") {
            Some(Value::String(s)) if !s.trim().is_empty() => {
                let code = s.trim();
                if !sku_code_ok(code) {
                    return Err(StoreError::invalid(format!("invalid SKU code \"{}\"", clip(code, 64)))
                        .detail(format!("Item {n}: {SKU_CODE_RULE}")));
                }
                code.to_string()
            }
            Some(Value::String(_)) => return Err(shape(format!("Item {n} has an empty \"sku\"."))),
            Some(other) => return Err(shape(format!("Item {n} has a \"sku\" that is a JSON {}, not a string.", json_type(other)))),
            None => return Err(shape(format!("Item {n} has no \"sku\"."))),
        };
        let qty = match obj.get("qty") {
            Some(Value::Number(num)) => match num.as_i64() {
                Some(q) => q,
                None => {
                    // numbers keep their exact text: a whole number beyond
                    // i64 is out of range, anything else is not whole
                    let text = num.to_string();
                    let digits = text.strip_prefix('-').unwrap_or(&text);
                    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                        if text.starts_with('-') {
                            return Err(StoreError::invalid("item quantity must be positive")
                                .detail(format!("Item {n} (SKU \"{sku}\") has qty {}.", clip(&text, 40))));
                        }
                        return Err(qty_too_big_text(&sku, &text));
                    }
                    return Err(shape(format!("Item {n} has qty {}, which is not a whole number.", clip(&text, 40))));
                }
            },
            Some(other) => return Err(shape(format!("Item {n} has a \"qty\" that is a JSON {}, not a number.", json_type(other)))),
            None => return Err(shape(format!("Item {n} has no \"qty\"."))),
        };
        if qty <= 0 {
            return Err(StoreError::invalid("item quantity must be positive")
                .detail(format!("Item {n} (SKU \"{sku}\") has qty {qty}.")));
        }
        if qty > MAX_QTY_PER_LINE {
            return Err(qty_too_big(&sku, qty));
        }
        let total = merged.entry(sku).or_insert(0);
        *total += qty;
    }
    merged
        .into_iter()
        .map(|(sku, qty)| {
            if qty > MAX_QTY_PER_LINE {
                Err(qty_too_big(&sku, qty))
            } else {
                Ok(Item { sku, qty: qty as i32 })
            }
        })
        .collect()
}

fn qty_too_big(sku: &str, qty: i64) -> StoreError {
    qty_too_big_text(sku, &qty.to_string())
}

fn qty_too_big_text(sku: &str, qty: &str) -> StoreError {
    StoreError::invalid("item quantity is above the per-line limit").detail(format!(
        "SKU \"{sku}\" asks for {} units; one order line has at most {MAX_QTY_PER_LINE}.",
        clip(qty, 40)
    ))
}

/// What a SKU code looks like (the sku.code CHECK constraint).
pub const SKU_CODE_RULE: &str =
    "A SKU code has 1 to 64 letters, digits, \".\", \"_\" or \"-\", and starts with a letter or digit.";

/// Does `code` match `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`?
pub fn sku_code_ok(code: &str) -> bool {
    let b = code.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// At most `max` characters of `s`, with an ellipsis when cut (for error
/// messages quoting what a caller sent).
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Check the hold: more than zero and at most 7 days. Months count as 30
/// days, as in PostgreSQL's interval comparison.
pub fn check_hold(months: i32, days: i32, micros: i64) -> StoreResult<i64> {
    let total = (months as i64 * 30 + days as i64)
        .checked_mul(86_400_000_000)
        .and_then(|d| d.checked_add(micros));
    match total {
        Some(t) if t > 0 && t <= MAX_HOLD_MICROS => Ok(t),
        _ => Err(StoreError::invalid("hold must be more than zero and at most 7 days")
            .detail("The hold is how long stock stays reserved for an unpaid order.")),
    }
}

/// The canonical text of a request, hashed to tell an idempotent replay
/// from a different request under the same key.
pub fn canonical_request(items: &[Item], hold_micros: i64) -> String {
    let mut s = String::new();
    for it in items {
        s.push_str(&it.sku);
        s.push('\u{1f}');
        s.push_str(&it.qty.to_string());
        s.push('\u{1e}');
    }
    s.push_str("hold=");
    s.push_str(&hold_micros.to_string());
    s
}

/// Stock of one SKU at one place (a location's row, or a hot-stock slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bin {
    pub location_id: i32,
    pub slot: Option<i32>,
    pub available: i32,
}

/// Take `qty` from `bins` in order, as much from each as it has. Returns
/// the takes (bin index, units), or the total available when short.
pub fn allocate(bins: &[Bin], qty: i32) -> Result<Vec<(usize, i32)>, i64> {
    let mut need = qty;
    let mut takes = Vec::new();
    for (i, b) in bins.iter().enumerate() {
        if need == 0 {
            break;
        }
        let take = b.available.max(0).min(need);
        if take > 0 {
            takes.push((i, take));
            need -= take;
        }
    }
    if need == 0 {
        Ok(takes)
    } else {
        Err(bins.iter().map(|b| b.available.max(0) as i64).sum())
    }
}

/// A SKU that cannot be covered: what was asked and what is available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
}

/// The 23514 error naming every short SKU.
pub fn shortage_error(shortages: &[Shortage]) -> StoreError {
    let detail = shortages
        .iter()
        .map(|s| format!("SKU \"{}\": requested {}, available {}.", s.sku, s.requested, s.available))
        .collect::<Vec<_>>()
        .join(" ");
    let message = if shortages.len() == 1 {
        "insufficient stock for 1 item".to_string()
    } else {
        format!("insufficient stock for {} items", shortages.len())
    };
    StoreError::new(Kind::CheckViolation, message)
        .detail(detail)
        .hint("Order fewer units, or retry after a restock.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn items(v: Value) -> StoreResult<Vec<Item>> {
        parse_items(&v)
    }

    #[test]
    fn merges_repeats_and_sorts() {
        let got = items(json!([{"sku": "B", "qty": 2}, {"sku": "A", "qty": 1}, {"sku": " B ", "qty": 3}])).unwrap();
        assert_eq!(got, vec![Item { sku: "A".into(), qty: 1 }, Item { sku: "B".into(), qty: 5 }]);
    }

    #[test]
    fn wrong_shapes_are_22p02() {
        for bad in [
            json!({"sku": "A", "qty": 1}),
            json!("A"),
            json!(null),
            json!([1]),
            json!([{"sku": "A"}]),
            json!([{"qty": 1}]),
            json!([{"sku": "A", "qty": 1, "price": 5}]),
            json!([{"sku": 7, "qty": 1}]),
            json!([{"sku": "", "qty": 1}]),
            json!([{"sku": "A", "qty": "2"}]),
            json!([{"sku": "A", "qty": 1.5}]),
            json!([{"sku": "A", "qty": null}]),
        ] {
            let e = items(bad.clone()).unwrap_err();
            assert_eq!(e.kind, Kind::InvalidText, "{bad}");
            assert!(e.detail.as_deref().is_some_and(|d| d.ends_with('.')), "{bad}");
        }
    }

    #[test]
    fn out_of_range_values_are_22023() {
        for bad in [
            json!([]),
            json!([{"sku": "A", "qty": 0}]),
            json!([{"sku": "A", "qty": -1}]),
            json!([{"sku": "A", "qty": 1001}]),
            json!([{"sku": "A", "qty": 600}, {"sku": "A", "qty": 401}]),
            json!([{"sku": "A", "qty": 9_223_372_036_854_775_807_i64}]),
            json!([{"sku": "A B", "qty": 1}]),
            json!([{"sku": "x".repeat(65), "qty": 1}]),
        ] {
            assert_eq!(items(bad.clone()).unwrap_err().kind, Kind::InvalidParameter, "{bad}");
        }
        let many: Vec<Value> = (0..=MAX_LINES).map(|i| json!({"sku": format!("S{i}"), "qty": 1})).collect();
        assert_eq!(items(Value::Array(many)).unwrap_err().kind, Kind::InvalidParameter);
        let max: Vec<Value> = (0..MAX_LINES).map(|i| json!({"sku": format!("S{i}"), "qty": 1})).collect();
        assert_eq!(items(Value::Array(max)).unwrap().len(), MAX_LINES);
        assert!(items(json!([{"sku": "A", "qty": 1000}])).is_ok());
    }

    #[test]
    fn huge_numbers_are_out_of_range_not_internal() {
        let big = format!("[{{\"sku\": \"A\", \"qty\": {}}}]", "9".repeat(400));
        let v: Value = serde_json::from_str(&big).unwrap();
        let e = parse_items(&v).unwrap_err();
        assert_eq!(e.kind, Kind::InvalidParameter);
        assert!(e.detail.unwrap().len() < 200, "the detail quotes a clipped number");
        let neg: Value = serde_json::from_str(&format!("[{{\"sku\": \"A\", \"qty\": -{}}}]", "9".repeat(400))).unwrap();
        assert_eq!(parse_items(&neg).unwrap_err().message, "item quantity must be positive");
        let frac: Value = serde_json::from_str("[{\"sku\": \"A\", \"qty\": 1.0}]").unwrap();
        assert_eq!(parse_items(&frac).unwrap_err().kind, Kind::InvalidText);
    }

    #[test]
    fn sku_codes() {
        assert!(sku_code_ok("TEE-BLK-M"));
        assert!(sku_code_ok("a.b_c-1"));
        assert!(!sku_code_ok(""));
        assert!(!sku_code_ok("-A"));
        assert!(!sku_code_ok("A B"));
        assert!(!sku_code_ok(&"x".repeat(65)));
        assert!(sku_code_ok(&"x".repeat(64)));
        assert_eq!(clip("abcdef", 3), "abc...");
        assert_eq!(clip("abc", 3), "abc");
    }

    #[test]
    fn holds() {
        assert!(check_hold(0, 0, 1).is_ok());
        assert!(check_hold(0, 7, 0).is_ok());
        assert!(check_hold(0, 7, 1).is_err());
        assert!(check_hold(0, 0, 0).is_err());
        assert!(check_hold(0, 0, -1).is_err());
        assert!(check_hold(1, 0, 0).is_err());
        assert!(check_hold(0, 1, -86_400_000_000).is_err());
        assert!(check_hold(i32::MAX, i32::MAX, i64::MAX).is_err());
    }

    #[test]
    fn canonical_form_ignores_order_and_repeats() {
        let a = items(json!([{"sku": "B", "qty": 2}, {"sku": "A", "qty": 1}])).unwrap();
        let b = items(json!([{"sku": "A", "qty": 1}, {"sku": "B", "qty": 1}, {"sku": "B", "qty": 1}])).unwrap();
        assert_eq!(canonical_request(&a, 900), canonical_request(&b, 900));
        assert_ne!(canonical_request(&a, 900), canonical_request(&a, 901));
        let c = items(json!([{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}])).unwrap();
        assert_ne!(canonical_request(&a, 900), canonical_request(&c, 900));
    }

    #[test]
    fn allocation_fills_bins_in_order() {
        let bins = [
            Bin { location_id: 1, slot: None, available: 2 },
            Bin { location_id: 2, slot: None, available: 0 },
            Bin { location_id: 3, slot: None, available: 5 },
        ];
        assert_eq!(allocate(&bins, 1), Ok(vec![(0, 1)]));
        assert_eq!(allocate(&bins, 4), Ok(vec![(0, 2), (2, 2)]));
        assert_eq!(allocate(&bins, 7), Ok(vec![(0, 2), (2, 5)]));
        assert_eq!(allocate(&bins, 8), Err(7));
        assert_eq!(allocate(&[], 1), Err(0));
    }

    #[test]
    fn shortage_detail_names_every_sku() {
        let e = shortage_error(&[
            Shortage { sku: "A".into(), requested: 3, available: 1 },
            Shortage { sku: "B".into(), requested: 1, available: 0 },
        ]);
        assert_eq!(e.kind, Kind::CheckViolation);
        assert_eq!(e.message, "insufficient stock for 2 items");
        assert_eq!(
            e.detail.as_deref(),
            Some("SKU \"A\": requested 3, available 1. SKU \"B\": requested 1, available 0.")
        );
    }
}
