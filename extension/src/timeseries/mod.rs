//! Time series: `time_bucket` in every TimescaleDB form, gap filling,
//! events, rollups and retention. The `#[pg_extern]`s here are thin
//! wrappers; the arithmetic is in `bucket.rs` (pure), time zones in
//! `zone.rs`, gap filling in `gapfill.rs`.

pub mod bucket;
pub mod fast;
pub mod gapfill;
pub mod ingest;
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

/// time_bucket(width, date - offset) + offset, for dates: like
/// TimescaleDB, the offset must be whole days, zero or more (a sub-day,
/// negative or month offset is refused), and the width whole days or months.
#[pg_extern(name = "time_bucket", immutable, strict, parallel_safe)]
fn time_bucket_date_offset(bucket_width: Interval, ts: Date, offset: Interval) -> Result<Date, ErrorReport> {
    let (p, w) = plan(&bucket_width)?;
    let off = width(&offset);
    let days = bucket::date_offset_days(off).map_err(|_| {
        ErrorReport::from(
            StoreError::invalid("offset for dates must be zero or more whole days")
                .detail(format!("The offset given was {off}."))
                .hint("Use an offset such as '1 day' or '0'."),
        )
    })?;
    let raw: i32 = ts.into();
    let b = bucket::bucket_date_offset(p, raw, days).map_err(|e| bucket_error(e, w))?;
    date(b, w)
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
        gapfill::GapError::NotFinite(t) => StoreError::new(Kind::DatetimeOverflow, "gap filling needs finite times")
            .detail(format!("A time is {}.", if t < 0 { "-infinity" } else { "infinity" }))
            .into(),
    }
}

/// A grid of bucket starts, in UTC or in a time zone.
struct Grid {
    plan: Plan,
    w: Width,
    zone: Option<(zone::Zone, pg_sys::Datum)>,
    memo: fast::MonthMemo,
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
        Ok(Grid { plan, w, zone, memo: fast::MonthMemo::empty() })
    }

    /// The bucket (UTC instant) a finite time falls in: time_bucket's.
    fn bucket(&mut self, t: i64) -> Result<i64, gapfill::GapError> {
        match &mut self.zone {
            None => Ok(bucket::bucket_ts(self.plan, t, None)?),
            Some((z, d)) => Ok(fast::bucket_in_zone(z, *d, &mut self.memo, self.plan, t, None, None)?),
        }
    }

    /// Every bucket start in [bucket(start), finish). In a zone these are
    /// the instants time_bucket returns: the reading of each local bucket
    /// start, and at a fall-back change both readings of a start that
    /// happens twice (the earlier one holds the times before the change).
    fn series(&mut self, start: i64, finish: i64) -> Result<Vec<i64>, gapfill::GapError> {
        let plan = self.plan;
        let (z, d) = match &mut self.zone {
            None => return gapfill::grid(plan, start, finish, None),
            Some((z, d)) => (z, *d),
        };
        if !bucket::is_finite(start) || !bucket::is_finite(finish) {
            return Err(gapfill::GapError::TooMany);
        }
        let memo = &mut self.memo;
        let mut bucket_of =
            |z: &mut zone::Zone, t: i64| fast::bucket_in_zone(z, d, memo, plan, t, None, None);
        let first = bucket_of(z, start)?;
        let step = match plan {
            Plan::Fixed(p) => Width::new(0, 0, p),
            Plan::Months(m) => Width::new(m, 0, 0),
        };
        let mut local = bucket::bucket_ts(plan, zone::to_local(z, d, first), None)?;
        let mut out = Vec::new();
        loop {
            let utc = zone::to_utc(z, d, local);
            // the UTC offsets around this local start (both sides of any
            // change within a day of it)
            let offsets = [day_before(utc), utc, day_after(utc)].map(|x| zone::to_local(z, d, x) - x);
            let max_off = offsets.iter().copied().max().unwrap_or(0);
            // no later local start can be read as an instant before finish
            if local - max_off >= finish {
                break;
            }
            for c in std::iter::once(utc).chain(offsets.iter().map(|o| local - o)) {
                if c >= first && c < finish && bucket_of(z, c)? == c {
                    out.push(c);
                }
            }
            if out.len() > 3 * gapfill::MAX_BUCKETS {
                return Err(gapfill::GapError::TooMany);
            }
            local = bucket::add_interval(local, step)?;
        }
        out.sort_unstable();
        out.dedup();
        if out.len() > gapfill::MAX_BUCKETS {
            return Err(gapfill::GapError::TooMany);
        }
        Ok(out)
    }
}

fn day_before(t: i64) -> i64 {
    t.saturating_sub(bucket::USECS_PER_DAY).max(bucket::MIN_TIMESTAMP)
}

fn day_after(t: i64) -> i64 {
    t.saturating_add(bucket::USECS_PER_DAY).min(bucket::END_TIMESTAMP - 1)
}

/// Every bucket start in [start, finish): the bucket holding `start` and
/// each following one that starts before `finish`.
#[pg_extern(name = "time_bucket_series", immutable, strict, parallel_safe)]
pub fn time_bucket_series(
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
            let t = t.into_inner();
            if !bucket::is_finite(t) {
                return Err(gap_error(gapfill::GapError::NotFinite(t), w));
            }
            let b = g.bucket(t).map_err(|e| gap_error(e, w))?;
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

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    type R = Result<(), pgrx::spi::Error>;

    /// time_bucket agrees with date_bin wherever date_bin is defined (fixed
    /// widths), over random times, widths and origins, both types.
    #[pg_test]
    fn agrees_with_date_bin() -> R {
        let bad = Spi::get_one::<i64>(
            "WITH r AS (
               SELECT timestamptz '1900-01-01 00:00+00' + random() * interval '250 years' AS ts,
                      (ARRAY[interval '1 second', '7 seconds', '1 minute', '15 minutes', '1 hour',
                             '90 minutes', '1 day', '7 days', '3 days 7 hours'])[1 + floor(random() * 9)::int] AS w,
                      timestamptz '1970-01-01 00:00+00' + random() * interval '100 years' AS origin
               FROM generate_series(1, 20000))
             SELECT count(*) FROM r
             WHERE storefront.time_bucket(w, ts) <> date_bin(w, ts, timestamptz '2000-01-03 00:00+00')
                OR storefront.time_bucket(w, ts, origin) <> date_bin(w, ts, origin)
                OR storefront.time_bucket(w, ts::timestamp) <> date_bin(w, ts::timestamp, timestamp '2000-01-03')",
        )?;
        assert_eq!(bad, Some(0));
        Ok(())
    }

    #[pg_test]
    fn months_and_offsets() -> R {
        let r = Spi::get_one::<String>(
            "SET LOCAL timezone = 'UTC';
             SELECT concat_ws(' | ',
               storefront.time_bucket('1 month', timestamptz '2024-05-17 13:45+00'),
               storefront.time_bucket('3 months', timestamptz '2024-05-17 13:45+00'),
               storefront.time_bucket('1 year', timestamptz '1999-03-01 00:00+00'),
               storefront.time_bucket('1 hour', timestamptz '2024-01-01 10:05+00', interval '15 minutes'),
               storefront.time_bucket('1 week', date '2024-03-17'),
               storefront.time_bucket('1 month', date '2024-03-17', interval '1 day'))",
        )?;
        assert_eq!(
            r.as_deref(),
            Some(
                "2024-05-01 00:00:00+00 | 2024-04-01 00:00:00+00 | 1999-01-01 00:00:00+00 | \
                 2024-01-01 09:15:00+00 | 2024-03-11 | 2024-03-02"
            )
        );
        Ok(())
    }

    /// Day buckets in a zone align to local midnight and last 23 or 25
    /// hours across DST changes.
    #[pg_test]
    fn time_zone_buckets_follow_local_days() -> R {
        let lengths = Spi::get_one::<String>(
            "SELECT string_agg(len::text, ',' ORDER BY b) FROM (
               SELECT b, extract(epoch FROM lead(b) OVER (ORDER BY b) - b)::bigint AS len
               FROM (SELECT DISTINCT storefront.time_bucket('1 day', t, 'America/New_York') AS b
                     FROM generate_series(timestamptz '2021-03-13 12:00+00', '2021-03-16 12:00+00', '1 hour') t) d
             ) x WHERE len IS NOT NULL",
        )?;
        assert_eq!(lengths.as_deref(), Some("86400,82800,86400"));
        let fall = Spi::get_one::<f64>(
            "SELECT extract(epoch FROM storefront.time_bucket('1 day', timestamptz '2021-11-08 12:00+00', 'America/New_York')
                                   - storefront.time_bucket('1 day', timestamptz '2021-11-07 12:00+00', 'America/New_York'))::float8",
        )?;
        assert_eq!(fall, Some(90000.0));
        // the same as bucketing the local time by hand
        let mismatches = Spi::get_one::<i64>(
            "SELECT count(*) FROM generate_series(timestamptz '2020-01-01', '2022-12-31', '97 minutes') t
             WHERE storefront.time_bucket('1 day', t, 'Europe/Berlin')
                   <> (storefront.time_bucket('1 day', t AT TIME ZONE 'Europe/Berlin') AT TIME ZONE 'Europe/Berlin')
                OR storefront.time_bucket('1 month', t, 'Asia/Kolkata')
                   <> (storefront.time_bucket('1 month', t AT TIME ZONE 'Asia/Kolkata') AT TIME ZONE 'Asia/Kolkata')",
        )?;
        assert_eq!(mismatches, Some(0));
        Ok(())
    }

    /// The time-zone form is not STRICT: NULL origin or offset mean "not
    /// given"; NULL width, time or zone give NULL. Infinity passes through.
    #[pg_test]
    fn nulls_and_infinity() -> R {
        let r = Spi::get_three::<bool, bool, bool>(
            "SELECT storefront.time_bucket('1 day', timestamptz '2024-01-05 10:00+00', 'UTC', NULL, NULL)
                      = storefront.time_bucket('1 day', timestamptz '2024-01-05 10:00+00', 'UTC'),
                    storefront.time_bucket('1 day', NULL::timestamptz, 'UTC') IS NULL
                      AND storefront.time_bucket('1 day', now(), NULL::text) IS NULL,
                    storefront.time_bucket('1 hour', timestamptz 'infinity') = 'infinity'
                      AND storefront.time_bucket('1 month', timestamptz '-infinity') = '-infinity'",
        )?;
        assert_eq!(r, (Some(true), Some(true), Some(true)));
        let strict = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_proc WHERE proname = 'time_bucket'
               AND pronamespace = 'storefront'::regnamespace AND NOT proisstrict",
        )?;
        assert_eq!(strict, Some(1), "only the time-zone form is not STRICT");
        Ok(())
    }

    #[pg_test(error = "bucket width cannot mix months with days or time")]
    fn months_cannot_mix() -> R {
        Spi::run("SELECT storefront.time_bucket('1 month 2 days', now())")
    }

    #[pg_test]
    fn gapfill_and_locf() -> R {
        let filled = Spi::get_one::<String>(
            "SELECT string_agg(coalesce(value::text, '-'), ' ' ORDER BY bucket)
             FROM storefront.gapfill('1 hour', '2024-01-01 00:00+00', '2024-01-01 05:00+00',
                                     ARRAY['2024-01-01 01:10+00', '2024-01-01 03:00+00']::timestamptz[],
                                     ARRAY[10, 30]::float8[], 'locf')",
        )?;
        assert_eq!(filled.as_deref(), Some("- 10 10 30 30"));
        let carried = Spi::get_one::<String>(
            "SELECT string_agg(coalesce(v::text, '-'), ' ' ORDER BY b)
             FROM (SELECT b, storefront.locf(x.v) OVER (ORDER BY b) AS v
                   FROM storefront.time_bucket_series('1 day', '2024-01-01', '2024-01-05') b
                   LEFT JOIN (VALUES (timestamptz '2024-01-02', 7)) x(t, v) ON x.t = b) s",
        )?;
        assert_eq!(carried.as_deref(), Some("- 7 7 7"));
        Ok(())
    }
}
