//! The watermark of the incremental loader (`load_warehouse()`, in
//! sql/warehouse.sql), as plain arithmetic.
//!
//! A load reads the OLTP rows written by transactions it has not seen
//! yet. Time stamps cannot say which those are (a transaction stamps its
//! rows when it starts and commits later, so a row can appear behind a
//! time watermark), but transaction ids can: every row version carries the
//! id of the transaction that wrote it (`xmin`), and a load notes the
//! oldest transaction still running when it starts (`xmin` of its
//! snapshot). Everything it did not see was written by that transaction
//! or a later one, subtransactions included (a subtransaction's id is
//! larger than its parent's); everything older it saw. The next load takes
//! the rows whose transaction id is at least that watermark: rows seen
//! twice are merged again with no effect, none is missed.
//!
//! PostgreSQL keeps 32-bit ids in rows; `age(xmin)` is the distance from
//! the current transaction, so "id at least the watermark" is "age at
//! most current − watermark". This file computes that limit.

use pgrx::prelude::*;

/// The largest `age(xmin)` of a row written at or after `watermark`, seen
/// from transaction `now` (64-bit ids); every row (`i32::MAX`, which is
/// also what `age()` says of frozen rows) when there is no watermark, when
/// it is ahead of `now` (a database restored into another cluster) or when
/// the distance does not fit an age.
pub fn max_age(now: i64, watermark: Option<i64>) -> i32 {
    match watermark {
        None => i32::MAX,
        Some(w) if w > now => i32::MAX,
        Some(w) => now.checked_sub(w).and_then(|d| i32::try_from(d).ok()).unwrap_or(i32::MAX),
    }
}

/// SQL face of [`max_age`]: `xact_age_limit(now_xid, watermark)`.
#[pg_extern(immutable, parallel_safe)]
fn xact_age_limit(now_xid: Option<i64>, watermark: Option<i64>) -> i32 {
    match now_xid {
        None => i32::MAX,
        Some(now) => max_age(now, watermark),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_watermark_takes_everything() {
        assert_eq!(max_age(1_000, None), i32::MAX);
    }

    #[test]
    fn rows_since_the_watermark() {
        // ids 900..=1000 are at or after the watermark: ages 0..=100
        assert_eq!(max_age(1_000, Some(900)), 100);
        assert_eq!(max_age(1_000, Some(1_000)), 0);
    }

    #[test]
    fn across_the_32_bit_boundary() {
        // the 64-bit ids keep counting where the 32-bit ones wrap
        let epoch = 1_i64 << 32;
        assert_eq!(max_age(epoch + 5, Some(epoch - 5)), 10);
    }

    #[test]
    fn a_watermark_from_elsewhere_means_a_full_load() {
        assert_eq!(max_age(1_000, Some(5_000)), i32::MAX);
        assert_eq!(max_age(i64::MAX / 2, Some(3)), i32::MAX);
        // nonsense in, everything out (no overflow)
        assert_eq!(max_age(1, Some(i64::MIN)), i32::MAX);
        assert_eq!(max_age(i64::MIN, Some(i64::MIN)), 0);
    }
}
