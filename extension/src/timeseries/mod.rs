//! Time series: `time_bucket` in every TimescaleDB form, gap filling,
//! events, rollups and retention. The `#[pg_extern]`s here are thin
//! wrappers; the arithmetic is in `bucket.rs` (pure), time zones in
//! `zone.rs`, gap filling in `gapfill.rs`.

pub mod bucket;
pub mod fast;
pub mod zone;

use crate::errors::{Kind, StoreError};
use bucket::{BucketError, Plan, Width};
use pgrx::datum::{Date, Interval};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

pub(crate) fn bucket_error(e: BucketError, w: Width) -> ErrorReport {
    let err = match e {
        BucketError::OutOfRange => StoreError::new(Kind::DatetimeOverflow, e.to_string()),
        BucketError::MixedMonths => StoreError::invalid(e.to_string())
            .detail(format!("The width given was {w}."))
            .hint("Use whole months or years, or days and time, such as '1 month' or '30 days'."),
        BucketError::NonPositive | BucketError::NotWholeDays => {
            StoreError::invalid(e.to_string()).detail(format!("The width given was {w}."))
        }
    };
    err.into()
}

#[inline]
fn width(w: &Interval) -> Width {
    Width::new(w.months(), w.days(), w.micros())
}

#[inline]
fn plan(w: &Interval) -> Result<(Plan, Width), ErrorReport> {
    let w = width(w);
    bucket::plan(w).map(|p| (p, w)).map_err(|e| bucket_error(e, w))
}

#[inline]
fn date(v: i32, w: Width) -> Result<Date, ErrorReport> {
    Date::try_from(v).map_err(|_| bucket_error(BucketError::OutOfRange, w))
}

// ------------------------------------------------------- timestamptz --
// time_bucket(interval, timestamptz | timestamp [, origin | "offset"]) are
// plain fmgr functions in fast.rs, declared in sql/timeseries.sql.

// The time-zone form is also a plain fmgr function (fast.rs).

// -------------------------------------------------------------- date --

#[pg_extern(name = "time_bucket", immutable, strict, parallel_safe)]
fn time_bucket_date(bucket_width: Interval, ts: Date) -> Result<Date, ErrorReport> {
    let (p, w) = plan(&bucket_width)?;
    let raw: i32 = ts.into();
    let b = bucket::bucket_date(p, raw, None).map_err(|e| bucket_error(e, w))?;
    date(b, w)
}

#[pg_extern(name = "time_bucket", immutable, strict, parallel_safe)]
fn time_bucket_date_origin(bucket_width: Interval, ts: Date, origin: Date) -> Result<Date, ErrorReport> {
    let (p, w) = plan(&bucket_width)?;
    let (raw, o): (i32, i32) = (ts.into(), origin.into());
    let b = bucket::bucket_date(p, raw, Some(o)).map_err(|e| bucket_error(e, w))?;
    date(b, w)
}

#[pg_extern(name = "time_bucket", immutable, strict, parallel_safe)]
fn time_bucket_date_offset(bucket_width: Interval, ts: Date, offset: Interval) -> Result<Date, ErrorReport> {
    let (p, w) = plan(&bucket_width)?;
    let raw: i32 = ts.into();
    if raw == i32::MIN || raw == i32::MAX {
        return date(raw, w);
    }
    // (time_bucket(width, ts - offset) + offset)::date, in timestamp arithmetic
    let b = bucket::bucket_ts_offset(p, raw as i64 * bucket::USECS_PER_DAY, width(&offset))
        .map_err(|e| bucket_error(e, w))?;
    date(bucket::ts_date(b) as i32, w)
}
