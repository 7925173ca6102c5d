//! time_bucket arithmetic with TimescaleDB's semantics, on PostgreSQL's
//! timestamp representation (microseconds since 2000-01-01 00:00:00, with
//! i64::MIN / i64::MAX for -infinity / infinity) and dates (days since
//! 2000-01-01). Pure Rust: no PostgreSQL types, tested with `#[test]`.
//!
//! Rules (TimescaleDB 2.x):
//! - a width is either months (years are 12 months) or days + time; mixing
//!   both is an error, and the width must be positive;
//! - fixed widths: bucket = origin + floor((ts - origin) / width) * width,
//!   default origin 2000-01-03 00:00 (a Monday, so weeks start on Monday);
//! - month widths count whole months from the origin's year and month
//!   (its day is ignored), default origin 2000-01-01; the bucket starts on
//!   the first of its month at midnight;
//! - infinite timestamps are returned unchanged;
//! - dates bucket like timestamps at midnight; fixed widths for dates must
//!   be whole days.

use std::fmt;

pub const USECS_PER_DAY: i64 = 86_400_000_000;
pub const USECS_PER_SEC: i64 = 1_000_000;
/// 2000-01-03 00:00:00, in timestamp units.
pub const DEFAULT_ORIGIN: i64 = 2 * USECS_PER_DAY;
/// 2000-01-01, in date units.
pub const DEFAULT_MONTH_ORIGIN_DATE: i32 = 0;
pub const NOBEGIN: i64 = i64::MIN;
pub const NOEND: i64 = i64::MAX;
/// PostgreSQL's valid timestamp range: 4714-11-24 BC .. 294277-01-01 AD.
pub const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
pub const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;

/// An interval, as PostgreSQL stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Width {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

impl Width {
    pub const fn new(months: i32, days: i32, micros: i64) -> Self {
        Width { months, days, micros }
    }
}

/// PostgreSQL's default interval output style: "1 year 2 mons 3 days 04:05:06".
impl fmt::Display for Width {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let plural = |n: i64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let (years, months) = (self.months / 12, self.months % 12);
        if years != 0 {
            parts.push(plural(years as i64, "year", "years"));
        }
        if months != 0 {
            parts.push(plural(months as i64, "mon", "mons"));
        }
        if self.days != 0 {
            parts.push(plural(self.days as i64, "day", "days"));
        }
        if self.micros != 0 || parts.is_empty() {
            let sign = if self.micros < 0 { "-" } else { "" };
            let us = self.micros.unsigned_abs();
            let (h, m, s, frac) = (us / 3_600_000_000, us / 60_000_000 % 60, us / 1_000_000 % 60, us % 1_000_000);
            let mut t = format!("{sign}{h:02}:{m:02}:{s:02}");
            if frac != 0 {
                t.push_str(format!(".{frac:06}").trim_end_matches('0'));
            }
            parts.push(t);
        }
        f.write_str(&parts.join(" "))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketError {
    /// the width is zero or negative
    NonPositive,
    /// months mixed with days or time
    MixedMonths,
    /// a fixed width for dates that is not whole days
    NotWholeDays,
    /// the result would leave the timestamp range
    OutOfRange,
}

impl fmt::Display for BucketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BucketError::NonPositive => "bucket width must be greater than zero",
            BucketError::MixedMonths => "bucket width cannot mix months with days or time",
            BucketError::NotWholeDays => "bucket width for dates must be a whole number of days",
            BucketError::OutOfRange => "timestamp out of range",
        })
    }
}

pub type BResult<T> = Result<T, BucketError>;

/// The kind of a width, checked once per call (or once per query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// a fixed width in microseconds (> 0)
    Fixed(i64),
    /// a width in months (> 0)
    Months(i32),
}

pub fn plan(w: Width) -> BResult<Plan> {
    if w.months != 0 {
        if w.days != 0 || w.micros != 0 {
            return Err(BucketError::MixedMonths);
        }
        if w.months < 0 {
            return Err(BucketError::NonPositive);
        }
        return Ok(Plan::Months(w.months));
    }
    let period = (w.days as i64)
        .checked_mul(USECS_PER_DAY)
        .and_then(|d| d.checked_add(w.micros))
        .ok_or(BucketError::OutOfRange)?;
    if period <= 0 {
        return Err(BucketError::NonPositive);
    }
    Ok(Plan::Fixed(period))
}

#[inline]
pub fn is_finite(ts: i64) -> bool {
    ts != NOBEGIN && ts != NOEND
}

/// Fixed-width bucket: origin + floor((ts - origin) / period) * period.
#[inline]
pub fn fixed(period: i64, ts: i64, origin: i64) -> BResult<i64> {
    debug_assert!(period > 0);
    // the origin only matters modulo the period
    let shift = origin % period;
    let t = ts.checked_sub(shift).ok_or(BucketError::OutOfRange)?;
    let floor = t.div_euclid(period);
    floor
        .checked_mul(period)
        .and_then(|b| b.checked_add(shift))
        .ok_or(BucketError::OutOfRange)
}

/// Month bucket on dates (days since 2000-01-01): the first day of the
/// bucket's first month. Only the origin's year and month count.
pub fn months_date(period: i32, date: i32, origin: i32) -> BResult<i32> {
    debug_assert!(period > 0);
    let (y, m, _) = civil_from_days(date as i64);
    let (oy, om, _) = civil_from_days(origin as i64);
    let t = y * 12 + (m as i64 - 1);
    let o = oy * 12 + (om as i64 - 1);
    let p = period as i64;
    let shift = o % p;
    let b = (t - shift).div_euclid(p) * p + shift;
    let year = b.div_euclid(12);
    let month = (b.rem_euclid(12) + 1) as u32;
    let days = days_from_civil(year, month, 1);
    i32::try_from(days).map_err(|_| BucketError::OutOfRange)
}

/// Date of a timestamp (floor to midnight).
#[inline]
pub fn ts_date(ts: i64) -> i64 {
    ts.div_euclid(USECS_PER_DAY)
}

/// Bucket a timestamp (timestamp, or timestamptz taken in UTC).
#[inline]
pub fn bucket_ts(plan: Plan, ts: i64, origin: Option<i64>) -> BResult<i64> {
    if !is_finite(ts) {
        return Ok(ts);
    }
    match plan {
        Plan::Fixed(p) => fixed(p, ts, origin.unwrap_or(DEFAULT_ORIGIN)),
        Plan::Months(m) => {
            let date = i32::try_from(ts_date(ts)).map_err(|_| BucketError::OutOfRange)?;
            let odate = match origin {
                Some(o) if is_finite(o) => i32::try_from(ts_date(o)).map_err(|_| BucketError::OutOfRange)?,
                Some(_) => return Err(BucketError::OutOfRange),
                None => DEFAULT_MONTH_ORIGIN_DATE,
            };
            let d = months_date(m, date, odate)?;
            (d as i64).checked_mul(USECS_PER_DAY).ok_or(BucketError::OutOfRange)
        }
    }
}

/// Bucket a date. `origin` is a date.
pub fn bucket_date(plan: Plan, date: i32, origin: Option<i32>) -> BResult<i32> {
    if date == i32::MIN || date == i32::MAX {
        return Ok(date); // -infinity / infinity
    }
    match plan {
        Plan::Months(m) => months_date(m, date, origin.unwrap_or(DEFAULT_MONTH_ORIGIN_DATE)),
        Plan::Fixed(p) => {
            if p % USECS_PER_DAY != 0 {
                return Err(BucketError::NotWholeDays);
            }
            // in days: dates reach far beyond the timestamp range
            let origin = origin.map(|o| o as i64).unwrap_or(DEFAULT_ORIGIN / USECS_PER_DAY);
            let b = fixed(p / USECS_PER_DAY, date as i64, origin)?;
            i32::try_from(b).map_err(|_| BucketError::OutOfRange)
        }
    }
}

/// The offset of the date forms in days: whole days, zero or more, no
/// months (TimescaleDB refuses the others).
pub fn date_offset_days(off: Width) -> BResult<i32> {
    if off.months != 0 || off.micros != 0 || off.days < 0 {
        return Err(BucketError::NotWholeDays);
    }
    Ok(off.days)
}

/// Bucket a date with an offset in days: bucket(date - offset) + offset.
/// Fixed widths must be whole days, as for the other date forms.
pub fn bucket_date_offset(plan: Plan, date: i32, offset_days: i32) -> BResult<i32> {
    if date == i32::MIN || date == i32::MAX {
        return Ok(date); // -infinity / infinity
    }
    if let Plan::Fixed(p) = plan {
        if p % USECS_PER_DAY != 0 {
            return Err(BucketError::NotWholeDays);
        }
    }
    let shifted = date.checked_sub(offset_days).ok_or(BucketError::OutOfRange)?;
    bucket_date(plan, shifted, None)?.checked_add(offset_days).ok_or(BucketError::OutOfRange)
}

/// timestamp + interval, as PostgreSQL computes it for `timestamp` (and for
/// `timestamptz` in UTC): months by the calendar (the day clamped to the
/// month's last), then days, then microseconds.
pub fn add_interval(ts: i64, w: Width) -> BResult<i64> {
    if !is_finite(ts) {
        return Ok(ts);
    }
    let mut t = ts;
    if w.months != 0 {
        let day = ts_date(t);
        let time = t - day * USECS_PER_DAY;
        let (y, m, d) = civil_from_days(day);
        let total = y * 12 + (m as i64 - 1) + w.months as i64;
        let ny = total.div_euclid(12);
        let nm = (total.rem_euclid(12) + 1) as u32;
        let nd = d.min(days_in_month(ny, nm));
        t = days_from_civil(ny, nm, nd)
            .checked_mul(USECS_PER_DAY)
            .and_then(|x| x.checked_add(time))
            .ok_or(BucketError::OutOfRange)?;
    }
    t = (w.days as i64)
        .checked_mul(USECS_PER_DAY)
        .and_then(|d| t.checked_add(d))
        .and_then(|x| x.checked_add(w.micros))
        .ok_or(BucketError::OutOfRange)?;
    if !(MIN_TIMESTAMP..END_TIMESTAMP).contains(&t) {
        return Err(BucketError::OutOfRange);
    }
    Ok(t)
}

pub fn negate(w: Width) -> Width {
    Width { months: w.months.wrapping_neg(), days: w.days.wrapping_neg(), micros: w.micros.wrapping_neg() }
}

/// The offset forms: time_bucket(width, ts - offset) + offset.
pub fn bucket_ts_offset(plan: Plan, ts: i64, offset: Width) -> BResult<i64> {
    if !is_finite(ts) {
        return Ok(ts);
    }
    let shifted = add_interval(ts, negate(offset))?;
    add_interval(bucket_ts(plan, shifted, None)?, offset)
}

// ------------------------------------------------------------ calendar --

/// Days since 2000-01-01 of a proleptic Gregorian date (any year).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    // Howard Hinnant's algorithm, shifted from 1970-01-01 to 2000-01-01.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 - 10_957
}

/// (year, month, day) of a day number since 2000-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000;
    const MIN: i64 = 60_000_000;

    fn ts(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * USECS_PER_DAY + h * H + mi * MIN
    }

    /// A slow, obviously-correct reference: floor division in i128.
    fn reference_fixed(period: i64, t: i64, origin: i64) -> i64 {
        let (p, t, o) = (period as i128, t as i128, origin as i128);
        let q = (t - o).div_euclid(p);
        (o + q * p) as i64
    }

    #[test]
    fn calendar_round_trips() {
        assert_eq!(days_from_civil(2000, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 1, 3), 2);
        assert_eq!(days_from_civil(1970, 1, 1), -10_957);
        assert_eq!(days_from_civil(2024, 2, 29) - days_from_civil(2024, 2, 28), 1);
        for d in (-800_000..800_000).step_by(997) {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d, "{d}");
        }
        assert_eq!(civil_from_days(-1), (1999, 12, 31));
    }

    #[test]
    fn widths_are_checked() {
        assert_eq!(plan(Width::new(0, 0, 0)), Err(BucketError::NonPositive));
        assert_eq!(plan(Width::new(0, 0, -1)), Err(BucketError::NonPositive));
        assert_eq!(plan(Width::new(0, 1, -USECS_PER_DAY)), Err(BucketError::NonPositive));
        assert_eq!(plan(Width::new(-1, 0, 0)), Err(BucketError::NonPositive));
        assert_eq!(plan(Width::new(1, 1, 0)), Err(BucketError::MixedMonths));
        assert_eq!(plan(Width::new(1, 0, 1)), Err(BucketError::MixedMonths));
        assert_eq!(plan(Width::new(12, 0, 0)), Ok(Plan::Months(12)));
        assert_eq!(plan(Width::new(0, 1, H)), Ok(Plan::Fixed(USECS_PER_DAY + H)));
    }

    #[test]
    fn fixed_buckets_match_the_reference() {
        let periods = [1, 999, MIN, 15 * MIN, H, 7 * H + 13, USECS_PER_DAY, 7 * USECS_PER_DAY, 37 * USECS_PER_DAY + 1];
        let origins = [DEFAULT_ORIGIN, 0, -123_456_789, ts(2021, 6, 1, 12, 30), ts(1900, 1, 1, 0, 0)];
        let mut x: i64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            // xorshift: timestamps over roughly +-300 years
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = x % (300 * 365 * USECS_PER_DAY);
            for &p in &periods {
                for &o in &origins {
                    assert_eq!(fixed(p, t, o).unwrap(), reference_fixed(p, t, o), "p={p} t={t} o={o}");
                }
            }
        }
    }

    #[test]
    fn times_before_the_origin_floor() {
        // 1999-12-31 23:00 in day buckets from 2000-01-03 -> 1999-12-31 00:00
        let t = ts(1999, 12, 31, 23, 0);
        assert_eq!(bucket_ts(Plan::Fixed(USECS_PER_DAY), t, None), Ok(ts(1999, 12, 31, 0, 0)));
        // weeks start on Monday (2000-01-03 was a Monday)
        let sun = ts(2024, 3, 17, 10, 0);
        assert_eq!(bucket_ts(Plan::Fixed(7 * USECS_PER_DAY), sun, None), Ok(ts(2024, 3, 11, 0, 0)));
        // exactly on a boundary stays
        assert_eq!(bucket_ts(Plan::Fixed(H), ts(2024, 1, 1, 5, 0), None), Ok(ts(2024, 1, 1, 5, 0)));
        // one microsecond before goes back a whole bucket
        assert_eq!(bucket_ts(Plan::Fixed(H), ts(2024, 1, 1, 5, 0) - 1, None), Ok(ts(2024, 1, 1, 4, 0)));
    }

    #[test]
    fn months_and_years() {
        let t = ts(2024, 5, 17, 13, 45);
        assert_eq!(bucket_ts(Plan::Months(1), t, None), Ok(ts(2024, 5, 1, 0, 0)));
        assert_eq!(bucket_ts(Plan::Months(3), t, None), Ok(ts(2024, 4, 1, 0, 0)));
        assert_eq!(bucket_ts(Plan::Months(12), t, None), Ok(ts(2024, 1, 1, 0, 0)));
        // origin: only its year and month count
        let origin = ts(2000, 2, 15, 6, 0);
        assert_eq!(bucket_ts(Plan::Months(3), t, Some(origin)), Ok(ts(2024, 5, 1, 0, 0)));
        assert_eq!(bucket_ts(Plan::Months(12), t, Some(origin)), Ok(ts(2024, 2, 1, 0, 0)));
        // before the origin
        assert_eq!(bucket_ts(Plan::Months(12), ts(1999, 3, 1, 0, 0), None), Ok(ts(1999, 1, 1, 0, 0)));
        // 5-month buckets from January 2000 go back to August 1999
        assert_eq!(bucket_ts(Plan::Months(5), ts(1999, 12, 31, 23, 59), None), Ok(ts(1999, 8, 1, 0, 0)));
    }

    #[test]
    fn infinities_pass_through() {
        for p in [Plan::Fixed(H), Plan::Months(1)] {
            assert_eq!(bucket_ts(p, NOEND, None), Ok(NOEND));
            assert_eq!(bucket_ts(p, NOBEGIN, None), Ok(NOBEGIN));
        }
        assert_eq!(bucket_date(Plan::Months(1), i32::MAX, None), Ok(i32::MAX));
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        assert_eq!(fixed(H, i64::MIN + 1, H / 2), Err(BucketError::OutOfRange));
        assert_eq!(fixed(7 * USECS_PER_DAY, i64::MIN + 5, DEFAULT_ORIGIN), Err(BucketError::OutOfRange));
        assert!(add_interval(END_TIMESTAMP - 1, Width::new(0, 1, 0)).is_err());
    }

    #[test]
    fn dates() {
        let d = days_from_civil(2024, 3, 17) as i32; // a Sunday
        assert_eq!(bucket_date(Plan::Fixed(7 * USECS_PER_DAY), d, None), Ok(days_from_civil(2024, 3, 11) as i32));
        assert_eq!(bucket_date(Plan::Months(1), d, None), Ok(days_from_civil(2024, 3, 1) as i32));
        assert_eq!(bucket_date(Plan::Fixed(H), d, None), Err(BucketError::NotWholeDays));
        let origin = days_from_civil(2024, 3, 16) as i32;
        assert_eq!(bucket_date(Plan::Fixed(2 * USECS_PER_DAY), d, Some(origin)), Ok(origin));
    }

    #[test]
    fn dates_beyond_the_timestamp_range() {
        // 5874897-12-31, the last date PostgreSQL has
        let last = days_from_civil(5_874_897, 12, 31) as i32;
        let b = bucket_date(Plan::Fixed(7 * USECS_PER_DAY), last, None).unwrap();
        assert!(b <= last && last - b < 7);
        assert!(bucket_date(Plan::Fixed(USECS_PER_DAY), last, None).is_ok());
        assert!(bucket_date_offset(Plan::Fixed(USECS_PER_DAY), last, 0).is_ok());
    }

    #[test]
    fn date_offsets_are_whole_days() {
        assert_eq!(date_offset_days(Width::new(0, 2, 0)), Ok(2));
        assert_eq!(date_offset_days(Width::new(0, 0, 0)), Ok(0));
        for bad in [Width::new(0, 0, H), Width::new(0, -1, 0), Width::new(1, 0, 0), Width::new(0, 1, 1)] {
            assert!(date_offset_days(bad).is_err(), "{bad}");
        }
        let d = days_from_civil(2024, 3, 17) as i32; // a Sunday
        // weeks starting on Wednesday (Monday + 2 days)
        assert_eq!(bucket_date_offset(Plan::Fixed(7 * USECS_PER_DAY), d, 2), Ok(days_from_civil(2024, 3, 13) as i32));
        // months starting on the 2nd
        assert_eq!(bucket_date_offset(Plan::Months(1), days_from_civil(2024, 3, 1) as i32, 1), Ok(days_from_civil(2024, 2, 2) as i32));
        // the width check the other date forms make
        assert_eq!(bucket_date_offset(Plan::Fixed(H), d, 0), Err(BucketError::NotWholeDays));
        assert_eq!(bucket_date_offset(Plan::Months(1), i32::MAX, 3), Ok(i32::MAX));
    }

    #[test]
    fn interval_arithmetic_clamps_month_ends() {
        assert_eq!(add_interval(ts(2024, 1, 31, 10, 0), Width::new(1, 0, 0)), Ok(ts(2024, 2, 29, 10, 0)));
        assert_eq!(add_interval(ts(2023, 3, 31, 0, 0), Width::new(-1, 0, 0)), Ok(ts(2023, 2, 28, 0, 0)));
        assert_eq!(add_interval(ts(2024, 1, 1, 0, 0), Width::new(0, 1, 30 * MIN)), Ok(ts(2024, 1, 2, 0, 30)));
    }

    #[test]
    fn widths_print_like_postgresql() {
        assert_eq!(Width::new(0, 0, H).to_string(), "01:00:00");
        assert_eq!(Width::new(14, 3, 0).to_string(), "1 year 2 mons 3 days");
        assert_eq!(Width::new(1, 0, 0).to_string(), "1 mon");
        assert_eq!(Width::new(0, 0, 0).to_string(), "00:00:00");
        assert_eq!(Width::new(0, -1, -90 * USECS_PER_SEC - 500_000).to_string(), "-1 days -00:01:30.5");
    }

    #[test]
    fn offsets_shift_the_grid() {
        // hourly buckets starting at :15
        let t = ts(2024, 1, 1, 10, 5);
        assert_eq!(bucket_ts_offset(Plan::Fixed(H), t, Width::new(0, 0, 15 * MIN)), Ok(ts(2024, 1, 1, 9, 15)));
        // monthly buckets starting on the 2nd
        assert_eq!(
            bucket_ts_offset(Plan::Months(1), ts(2024, 3, 1, 12, 0), Width::new(0, 1, 0)),
            Ok(ts(2024, 2, 2, 0, 0))
        );
        // a negative offset
        assert_eq!(bucket_ts_offset(Plan::Fixed(H), t, Width::new(0, 0, -15 * MIN)), Ok(ts(2024, 1, 1, 9, 45)));
    }
}
