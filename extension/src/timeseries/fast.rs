//! The hot forms of time_bucket as plain fmgr V1 entry points.
//!
//! time_bucket runs once per row, often over millions of rows, and the
//! generic `#[pg_extern]` wrapper (argument unboxing, memory-context switch,
//! panic guard) costs more than the bucket arithmetic itself — measured at
//! about 2.2x date_bin for the plain form. These entry points read the
//! arguments straight from `fcinfo`, run the pure arithmetic of
//! `bucket.rs` (which cannot panic), and only on an error call a guarded
//! function that raises it. They are declared in sql/timeseries.sql.
//!
//! Safety: each function is called by PostgreSQL's fmgr with the argument
//! count and types its CREATE FUNCTION declares (STRICT, so no NULLs); no
//! value with a destructor is alive when the error path is taken (the
//! guarded raiser does not return; PostgreSQL's error longjmp passes over
//! this frame).

use super::bucket::{self, BucketError, Plan, Width};
use pgrx::pg_sys;

#[inline(always)]
unsafe fn arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> pg_sys::Datum {
    // SAFETY: fmgr passes at least the declared number of arguments
    unsafe { (*fcinfo).args.as_slice(n + 1)[n].value }
}

#[inline(always)]
unsafe fn width(d: pg_sys::Datum) -> Width {
    // SAFETY: the argument is declared interval: a pointer to an Interval
    let iv = unsafe { &*(d.cast_mut_ptr::<pg_sys::Interval>()) };
    Width::new(iv.month, iv.day, iv.time)
}

/// Raise a bucket error. Guarded: pgrx turns the report into a PostgreSQL
/// ERROR; it never returns.
#[pgrx::pg_guard]
#[cold]
#[inline(never)]
extern "C-unwind" fn raise(kind: u8, months: i32, days: i32, micros: i64) {
    let e = match kind {
        0 => BucketError::NonPositive,
        1 => BucketError::MixedMonths,
        2 => BucketError::NotWholeDays,
        _ => BucketError::OutOfRange,
    };
    let report = super::bucket_error(e, Width::new(months, days, micros));
    report.report(pgrx::PgLogLevel::ERROR);
}

#[inline(always)]
fn fail(e: BucketError, w: Width) -> ! {
    let kind = match e {
        BucketError::NonPositive => 0,
        BucketError::MixedMonths => 1,
        BucketError::NotWholeDays => 2,
        BucketError::OutOfRange => 3,
    };
    raise(kind, w.months, w.days, w.micros);
    // raise() reports an ERROR and does not come back; should it ever, stop
    // here instead of returning garbage.
    std::process::abort()
}

#[inline(always)]
fn checked_ts(v: i64, w: Width) -> i64 {
    if bucket::is_finite(v) && !(bucket::MIN_TIMESTAMP..bucket::END_TIMESTAMP).contains(&v) {
        fail(BucketError::OutOfRange, w)
    }
    v
}

macro_rules! finfo {
    ($finfo:ident) => {
        #[no_mangle]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}

finfo!(pg_finfo_storefront_time_bucket_ts);
/// time_bucket(interval, timestamptz) and time_bucket(interval, timestamp):
/// the same arithmetic (timestamptz buckets in UTC).
///
/// # Safety
/// Called by fmgr as declared in sql/timeseries.sql.
#[no_mangle]
pub unsafe extern "C-unwind" fn storefront_time_bucket_ts(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: see the module comment
    let (w, ts) = unsafe { (width(arg(fcinfo, 0)), arg(fcinfo, 1).value() as i64) };
    let p = match bucket::plan(w) {
        Ok(p) => p,
        Err(e) => fail(e, w),
    };
    let r = match p {
        Plan::Fixed(_) => bucket::bucket_ts(p, ts, None),
        Plan::Months(_) => {
            let mut local = MonthMemo::empty();
            // SAFETY: this entry point always keeps a MonthMemo in fn_extra
            let m = unsafe { extra(fcinfo, local) }.unwrap_or(&mut local);
            bucket_ts_memo(m, p, ts, None)
        }
    };
    match r {
        Ok(b) => pg_sys::Datum::from(checked_ts(b, w)),
        Err(e) => fail(e, w),
    }
}

finfo!(pg_finfo_storefront_time_bucket_ts_origin);
/// time_bucket(interval, timestamptz, origin timestamptz) and the timestamp
/// form.
///
/// # Safety
/// Called by fmgr as declared in sql/timeseries.sql.
#[no_mangle]
pub unsafe extern "C-unwind" fn storefront_time_bucket_ts_origin(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: see the module comment
    let (w, ts, origin) =
        unsafe { (width(arg(fcinfo, 0)), arg(fcinfo, 1).value() as i64, arg(fcinfo, 2).value() as i64) };
    let p = match bucket::plan(w) {
        Ok(p) => p,
        Err(e) => fail(e, w),
    };
    let r = match p {
        Plan::Fixed(_) => bucket::bucket_ts(p, ts, Some(origin)),
        Plan::Months(_) => {
            let mut local = MonthMemo::empty();
            // SAFETY: this entry point always keeps a MonthMemo in fn_extra
            let m = unsafe { extra(fcinfo, local) }.unwrap_or(&mut local);
            bucket_ts_memo(m, p, ts, Some(origin))
        }
    };
    match r {
        Ok(b) => pg_sys::Datum::from(checked_ts(b, w)),
        Err(e) => fail(e, w),
    }
}

finfo!(pg_finfo_storefront_time_bucket_ts_offset);
/// time_bucket(interval, timestamptz, "offset" interval) and the timestamp
/// form.
///
/// # Safety
/// Called by fmgr as declared in sql/timeseries.sql.
#[no_mangle]
pub unsafe extern "C-unwind" fn storefront_time_bucket_ts_offset(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: see the module comment
    let (w, ts, off) = unsafe { (width(arg(fcinfo, 0)), arg(fcinfo, 1).value() as i64, width(arg(fcinfo, 2))) };
    let p = match bucket::plan(w) {
        Ok(p) => p,
        Err(e) => fail(e, w),
    };
    match bucket::bucket_ts_offset(p, ts, off) {
        Ok(b) => pg_sys::Datum::from(checked_ts(b, w)),
        Err(e) => fail(e, w),
    }
}

finfo!(pg_finfo_storefront_rollup_bucket);
/// rollup_bucket(interval, timestamptz): time_bucket for rollups, total
/// over every storable time. Where time_bucket raises "timestamp out of
/// range" (a time so close to the start of the timestamp range that its
/// bucket would start before it), this returns -infinity, so no row of a
/// rollup's source can make a refresh fail. Bad widths still raise (a
/// rollup's width was checked when it was made).
///
/// # Safety
/// Called by fmgr as declared in sql/rollups.sql.
#[no_mangle]
pub unsafe extern "C-unwind" fn storefront_rollup_bucket(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: see the module comment
    let (w, ts) = unsafe { (width(arg(fcinfo, 0)), arg(fcinfo, 1).value() as i64) };
    let p = match bucket::plan(w) {
        Ok(p) => p,
        Err(e) => fail(e, w),
    };
    let r = match p {
        Plan::Fixed(_) => bucket::bucket_ts(p, ts, None),
        Plan::Months(_) => {
            let mut local = MonthMemo::empty();
            // SAFETY: this entry point always keeps a MonthMemo in fn_extra
            let m = unsafe { extra(fcinfo, local) }.unwrap_or(&mut local);
            bucket_ts_memo(m, p, ts, None)
        }
    };
    pg_sys::Datum::from(match r {
        Ok(b) if !bucket::is_finite(b) || (bucket::MIN_TIMESTAMP..bucket::END_TIMESTAMP).contains(&b) => b,
        _ => bucket::NOBEGIN,
    })
}

/// The plan of a width, for callers that bucket many values.
pub fn plan_or_fail(w: Width) -> Plan {
    match bucket::plan(w) {
        Ok(p) => p,
        Err(e) => fail(e, w),
    }
}

// ------------------------------------------------------------ memos --

/// Remembers the last month bucket: [lo, hi) all map to `result`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MonthMemo {
    valid: bool,
    months: i32,
    origin: i64,
    lo: i64,
    hi: i64,
    result: i64,
}

impl MonthMemo {
    pub const fn empty() -> MonthMemo {
        MonthMemo { valid: false, months: 0, origin: 0, lo: 0, hi: 0, result: 0 }
    }
}

/// bucket_ts with a memo for month widths (their arithmetic goes through
/// the calendar; consecutive rows mostly fall in the same month).
#[inline(always)]
pub fn bucket_ts_memo(m: &mut MonthMemo, p: Plan, ts: i64, origin: Option<i64>) -> Result<i64, BucketError> {
    match p {
        Plan::Fixed(_) => bucket::bucket_ts(p, ts, origin),
        Plan::Months(months) => {
            let key = origin.unwrap_or(i64::MIN);
            if m.valid && m.months == months && m.origin == key && ts >= m.lo && ts < m.hi {
                return Ok(m.result);
            }
            let b = bucket::bucket_ts(p, ts, origin)?;
            if bucket::is_finite(ts) {
                if let Ok(next) = bucket::add_interval(b, Width::new(months, 0, 0)) {
                    *m = MonthMemo { valid: true, months, origin: key, lo: b, hi: next, result: b };
                }
            }
            Ok(b)
        }
    }
}

#[pgrx::pg_guard]
#[cold]
#[inline(never)]
extern "C-unwind" fn alloc_extra(cx: pg_sys::MemoryContext, size: usize) -> *mut std::ffi::c_void {
    // SAFETY: fn_mcxt lives as long as the FmgrInfo that points at it
    unsafe { pg_sys::MemoryContextAllocZero(cx, size) }
}

/// This call site's cache in fn_extra (allocated and initialised on first
/// use), or None when there is no FmgrInfo to hang it on.
///
/// # Safety
/// `fcinfo` is a valid call; T is plain old data; every caller of one
/// entry point uses the same T.
#[inline(always)]
unsafe fn extra<T: Copy>(fcinfo: pg_sys::FunctionCallInfo, init: T) -> Option<&'static mut T> {
    // SAFETY: as documented
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        if flinfo.is_null() {
            return None;
        }
        if (*flinfo).fn_extra.is_null() {
            let p = alloc_extra((*flinfo).fn_mcxt, std::mem::size_of::<T>()) as *mut T;
            p.write(init);
            (*flinfo).fn_extra = p as *mut std::ffi::c_void;
        }
        Some(&mut *((*flinfo).fn_extra as *mut T))
    }
}

#[inline(always)]
unsafe fn is_null(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> bool {
    // SAFETY: fmgr passes at least the declared number of arguments
    unsafe { (*fcinfo).args.as_slice(n + 1)[n].isnull }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct TzExtra {
    zone: super::zone::Zone,
    memo: MonthMemo,
}

/// time_bucket of one instant in a time zone, with TimescaleDB's
/// semantics (2.28):
///
/// 1. an offset is applied in absolute time: `ts - offset` (interval
///    arithmetic in UTC, so the result does not depend on the session);
/// 2. that instant is read as local time in the zone and bucketed there
///    (local midnights, local month starts; the origin read in the zone);
/// 3. the local bucket start is turned back into an instant as
///    `timestamp AT TIME ZONE` does. At a fall-back change a local time
///    happens twice and PostgreSQL picks the later instant; when that is
///    after the time being bucketed, the bucket is the earlier one (the
///    local start read with the time's own UTC offset), so a bucket always
///    starts at or before the time it holds;
/// 4. the offset is added back, in absolute time.
///
/// `memo` speeds up month widths; `z` caches the zone.
#[inline(always)]
pub fn bucket_in_zone(
    z: &mut super::zone::Zone,
    tz: pg_sys::Datum,
    memo: &mut MonthMemo,
    p: Plan,
    ts: i64,
    origin: Option<i64>,
    offset: Option<Width>,
) -> Result<i64, BucketError> {
    use super::zone;
    if !bucket::is_finite(ts) {
        return Ok(ts);
    }
    let shifted = match offset {
        Some(off) => bucket::add_interval(ts, bucket::negate(off))?,
        None => ts,
    };
    let local = zone::to_local(z, tz, shifted);
    let origin = origin.map(|o| if bucket::is_finite(o) { zone::to_local(z, tz, o) } else { o });
    let start = bucket_ts_memo(memo, p, local, origin)?;
    let mut utc = zone::to_utc(z, tz, start);
    if utc > shifted {
        // `start` is ambiguous and PostgreSQL chose its later reading
        utc = start - (local - shifted);
    }
    match offset {
        Some(off) => bucket::add_interval(utc, off),
        None => Ok(utc),
    }
}

finfo!(pg_finfo_storefront_time_bucket_tz);
/// time_bucket(interval, timestamptz, timezone text, origin timestamptz
/// DEFAULT NULL, "offset" interval DEFAULT NULL): see `bucket_in_zone`.
/// Not STRICT: a NULL width, time or zone gives NULL; a NULL origin or
/// offset means "not given".
///
/// # Safety
/// Called by fmgr as declared in sql/timeseries.sql.
#[no_mangle]
pub unsafe extern "C-unwind" fn storefront_time_bucket_tz(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    use super::zone;
    // SAFETY: see the module comment; arguments are read only when not NULL
    unsafe {
        if is_null(fcinfo, 0) || is_null(fcinfo, 1) || is_null(fcinfo, 2) {
            (*fcinfo).isnull = true;
            return pg_sys::Datum::from(0);
        }
        let w = width(arg(fcinfo, 0));
        let ts = arg(fcinfo, 1).value() as i64;
        let tz = arg(fcinfo, 2);
        let nargs = (*fcinfo).nargs as usize;
        let origin = (nargs > 3 && !is_null(fcinfo, 3)).then(|| arg(fcinfo, 3).value() as i64);
        let offset = (nargs > 4 && !is_null(fcinfo, 4)).then(|| width(arg(fcinfo, 4)));
        let p = match bucket::plan(w) {
            Ok(p) => p,
            Err(e) => fail(e, w),
        };
        if !bucket::is_finite(ts) {
            return pg_sys::Datum::from(ts);
        }
        let mut local_cache = TzExtra { zone: zone::Zone::empty(), memo: MonthMemo::empty() };
        let x = match extra(fcinfo, local_cache) {
            Some(x) => x,
            None => &mut local_cache,
        };
        zone::ensure(&mut x.zone, tz);
        match bucket_in_zone(&mut x.zone, tz, &mut x.memo, p, ts, origin, offset) {
            Ok(b) => pg_sys::Datum::from(checked_ts(b, w)),
            Err(e) => fail(e, w),
        }
    }
}
