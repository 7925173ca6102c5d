//! Time series: `time_bucket` in every TimescaleDB form, gap filling,
//! events, rollups and retention. The `#[pg_extern]`s here are thin
//! wrappers; the arithmetic is in `bucket.rs` (pure), time zones in
//! `zone.rs`, gap filling in `gapfill.rs`.

pub mod bucket;
pub mod fast;
pub mod gapfill;
pub mod rollup;
pub mod zone;

use crate::errors::{Kind, StoreError};
use bucket::{BucketError, Plan, Width};
use pgrx::datum::{Date, Interval, TimestampWithTimeZone};
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

// ------------------------------------------------------- gap filling --

fn gap_error(e: gapfill::GapError, w: Width) -> ErrorReport {
    match e {
        gapfill::GapError::Bucket(b) => bucket_error(b, w),
        gapfill::GapError::TooMany => StoreError::invalid("too many buckets")
            .detail(format!("A series has at most {} buckets, and both ends must be finite.", gapfill::MAX_BUCKETS))
            .into(),
        gapfill::GapError::Duplicate(_) => StoreError::invalid("more than one value for a bucket")
            .hint("Aggregate the values per bucket first (GROUP BY time_bucket(...)).")
            .into(),
        gapfill::GapError::Lengths(a, b) => StoreError::invalid("times and values must have the same length")
            .detail(format!("There are {a} times and {b} values."))
            .into(),
    }
}

/// A grid of bucket starts, in UTC or in a time zone.
struct Grid {
    plan: Plan,
    w: Width,
    zone: Option<(zone::Zone, pg_sys::Datum)>,
}

impl Grid {
    fn new(bucket_width: &Interval, timezone: Option<&str>) -> Result<Grid, ErrorReport> {
        let (plan, w) = plan(bucket_width)?;
        let zone = match timezone {
            None => None,
            Some(tz) => {
                let d = tz.into_datum().ok_or_else(|| ErrorReport::from(StoreError::null("timezone")))?;
                let mut z = zone::Zone::empty();
                // SAFETY: d is a non-null text datum
                unsafe { zone::ensure(&mut z, d) };
                Some((z, d))
            }
        };
        Ok(Grid { plan, w, zone })
    }

    /// The bucket (UTC instant) a time falls in.
    fn bucket(&mut self, t: i64) -> Result<i64, gapfill::GapError> {
        match &mut self.zone {
            None => Ok(bucket::bucket_ts(self.plan, t, None)?),
            Some((z, d)) => {
                let local = zone::to_local(z, *d, t);
                let b = bucket::bucket_ts(self.plan, local, None)?;
                Ok(zone::to_utc(z, *d, b))
            }
        }
    }

    fn series(&mut self, start: i64, finish: i64) -> Result<Vec<i64>, gapfill::GapError> {
        match &mut self.zone {
            None => gapfill::grid(self.plan, start, finish, None),
            Some((z, d)) => {
                if !bucket::is_finite(start) || !bucket::is_finite(finish) {
                    return Err(gapfill::GapError::TooMany);
                }
                let (z, d) = (z, *d);
                let step = match self.plan {
                    Plan::Fixed(p) => Width::new(0, 0, p),
                    Plan::Months(m) => Width::new(m, 0, 0),
                };
                // walk local bucket starts; report each as a UTC instant
                let mut local = bucket::bucket_ts(self.plan, zone::to_local(z, d, start), None)?;
                let mut out = Vec::new();
                loop {
                    let utc = zone::to_utc(z, d, local);
                    if utc >= finish {
                        break;
                    }
                    if out.len() >= gapfill::MAX_BUCKETS {
                        return Err(gapfill::GapError::TooMany);
                    }
                    if out.last().is_none_or(|&l| utc > l) {
                        out.push(utc);
                    }
                    local = bucket::add_interval(local, step)?;
                }
                Ok(out)
            }
        }
    }
}

/// Every bucket start in [start, finish): the bucket holding `start` and
/// each following one that starts before `finish`.
#[pg_extern(name = "time_bucket_series", immutable, strict, parallel_safe)]
fn time_bucket_series(
    bucket_width: Interval,
    start: TimestampWithTimeZone,
    finish: TimestampWithTimeZone,
) -> Result<SetOfIterator<'static, TimestampWithTimeZone>, ErrorReport> {
    series(&bucket_width, start, finish, None)
}

/// The same, with buckets aligned to local time in `timezone`.
#[pg_extern(name = "time_bucket_series", immutable, strict, parallel_safe)]
fn time_bucket_series_tz(
    bucket_width: Interval,
    start: TimestampWithTimeZone,
    finish: TimestampWithTimeZone,
    timezone: &str,
) -> Result<SetOfIterator<'static, TimestampWithTimeZone>, ErrorReport> {
    series(&bucket_width, start, finish, Some(timezone))
}

fn series(
    bucket_width: &Interval,
    start: TimestampWithTimeZone,
    finish: TimestampWithTimeZone,
    timezone: Option<&str>,
) -> Result<SetOfIterator<'static, TimestampWithTimeZone>, ErrorReport> {
    let mut g = Grid::new(bucket_width, timezone)?;
    let w = g.w;
    let starts = g.series(start.into_inner(), finish.into_inner()).map_err(|e| gap_error(e, w))?;
    let out: Vec<TimestampWithTimeZone> =
        starts.into_iter().filter_map(|b| TimestampWithTimeZone::try_from(b).ok()).collect();
    Ok(SetOfIterator::new(out))
}

/// Gap filling: one row per bucket in [start, finish), with the value given
/// for it in (times, vals), or — where there is none — NULL ('none'), the
/// last value before it ('locf') or the linear interpolation between its
/// neighbours ('linear'). Times are bucketed first; values before `start`
/// seed LOCF, values on both sides anchor interpolation.
#[pg_extern(immutable, parallel_safe)]
#[allow(clippy::type_complexity)]
fn gapfill(
    bucket_width: Option<Interval>,
    start: Option<TimestampWithTimeZone>,
    finish: Option<TimestampWithTimeZone>,
    times: Option<Vec<Option<TimestampWithTimeZone>>>,
    vals: Option<Vec<Option<f64>>>,
    fill: default!(Option<&str>, "'none'"),
    timezone: default!(Option<&str>, "NULL"),
) -> Result<
    TableIterator<'static, (name!(bucket, TimestampWithTimeZone), name!(value, Option<f64>))>,
    ErrorReport,
> {
    let (bucket_width, start, finish) = match (bucket_width, start, finish) {
        (Some(w), Some(s), Some(f)) => (w, s.into_inner(), f.into_inner()),
        _ => return Ok(TableIterator::new(Vec::new())),
    };
    let how = match fill {
        None => gapfill::Fill::None,
        Some(f) => gapfill::Fill::parse(f).ok_or_else(|| {
            ErrorReport::from(
                StoreError::invalid(format!("unknown fill method \"{f}\""))
                    .hint("Use 'none', 'locf' or 'linear'."),
            )
        })?,
    };
    let mut g = Grid::new(&bucket_width, timezone)?;
    let w = g.w;
    let times = times.unwrap_or_default();
    let vals = vals.unwrap_or_default();
    if times.len() != vals.len() {
        return Err(gap_error(gapfill::GapError::Lengths(times.len(), vals.len()), w));
    }
    let mut points = Vec::with_capacity(times.len());
    for (t, v) in times.into_iter().zip(vals) {
        if let Some(t) = t {
            let b = g.bucket(t.into_inner()).map_err(|e| gap_error(e, w))?;
            points.push((b, v));
        }
    }
    points.sort_by_key(|p| p.0);
    let grid = g.series(start, finish).map_err(|e| gap_error(e, w))?;
    let values = gapfill::fill(&grid, &points, how).map_err(|e| gap_error(e, w))?;
    let rows: Vec<(TimestampWithTimeZone, Option<f64>)> = grid
        .into_iter()
        .zip(values)
        .filter_map(|(b, v)| TimestampWithTimeZone::try_from(b).ok().map(|b| (b, v)))
        .collect();
    Ok(TableIterator::new(rows))
}
