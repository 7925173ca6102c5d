//! Time-zone conversions for time_bucket's time-zone form, with
//! PostgreSQL's semantics (`ts AT TIME ZONE tz` both ways) and caching so
//! the common case costs a range check, not a time-zone lookup per row.
//!
//! A zone name is resolved as `timestamptz AT TIME ZONE` resolves it: first
//! as an abbreviation (fixed offsets such as "EST"; abbreviations whose
//! offset changed over time go to PostgreSQL for every value), then as a
//! zone name ("Europe/Berlin", or a POSIX spec). For named zones, UTC ->
//! local uses the offset in force and remembers the range of instants until
//! the next transition (`pg_next_dst_boundary`); local -> UTC asks
//! PostgreSQL's own `timestamp_zone` and remembers the last answer, since
//! consecutive rows mostly land in the same bucket.
//!
//! `Zone` is plain old data, so it can live in `fn_extra` (memory PostgreSQL
//! frees without running destructors) or on the stack.

use pgrx::pg_sys;

const USECS: i64 = 1_000_000;
/// Seconds from 1970-01-01 to 2000-01-01.
const UNIX_TO_PG: i64 = 946_684_800;
/// Longest zone name kept in the cache (PostgreSQL allows 255).
pub const NAME_CAP: usize = 64;

const KIND_NONE: u8 = 0;
const KIND_FIXED: u8 = 1;
const KIND_NAMED: u8 = 2;
const KIND_DYNAMIC: u8 = 3;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Zone {
    name_len: usize,
    name: [u8; NAME_CAP],
    kind: u8,
    /// fixed offset, microseconds east of UTC
    fixed: i64,
    tzp: *mut pg_sys::pg_tz,
    /// UTC instants [lo, hi) known to have offset `off`
    utc_valid: bool,
    utc_lo: i64,
    utc_hi: i64,
    utc_off: i64,
    /// the last local -> UTC answer
    back_valid: bool,
    back_local: i64,
    back_utc: i64,
}

impl Zone {
    pub const fn empty() -> Zone {
        Zone {
            name_len: 0,
            name: [0; NAME_CAP],
            kind: KIND_NONE,
            fixed: 0,
            tzp: std::ptr::null_mut(),
            utc_valid: false,
            utc_lo: 0,
            utc_hi: 0,
            utc_off: 0,
            back_valid: false,
            back_local: 0,
            back_utc: 0,
        }
    }

    /// Is this cache for the zone `name`?
    #[inline(always)]
    pub fn is(&self, name: &[u8]) -> bool {
        self.kind != KIND_NONE && self.name_len == name.len() && &self.name[..self.name_len] == name
    }
}

/// The bytes of a text datum when it is stored plainly (not compressed or
/// out of line); None otherwise.
///
/// # Safety
/// `d` must be a non-null text datum.
#[inline(always)]
pub unsafe fn plain_text(d: pg_sys::Datum) -> Option<&'static [u8]> {
    let p = d.cast_mut_ptr::<pg_sys::varlena>();
    // SAFETY: p is a varlena; only headers are read before deciding
    unsafe {
        if pgrx::varlena::varatt_is_1b_e(p) || pgrx::varlena::varatt_is_4b_c(p) {
            return None;
        }
        let len = pgrx::varlena::varsize_any_exhdr(p);
        let data = pgrx::varlena::vardata_any(p) as *const u8;
        Some(std::slice::from_raw_parts(data, len))
    }
}

/// The slow paths, guarded: anything here may raise a PostgreSQL ERROR
/// (an unknown zone, a timestamp out of range), which pgrx turns into a
/// proper ERROR at this boundary.
///
/// op 0: resolve the zone named by the text datum `tz` into `*z`;
/// op 1: `v AT TIME ZONE tz` for a timestamptz (PostgreSQL's timezone());
/// op 2: `v AT TIME ZONE tz` for a timestamp.
#[pgrx::pg_guard]
#[cold]
#[inline(never)]
pub extern "C-unwind" fn zone_slow(z: *mut Zone, op: u8, tz: pg_sys::Datum, v: i64) -> i64 {
    // SAFETY: z points to a live Zone; tz is a non-null text datum
    unsafe {
        match op {
            0 => {
                let name = pgrx::varlena::text_to_rust_str_unchecked(
                    pg_sys::pg_detoast_datum_packed(tz.cast_mut_ptr::<pg_sys::varlena>()),
                );
                *z = resolve(name);
                0
            }
            1 => pgrx::fcinfo::direct_function_call_as_datum(
                pg_sys::timestamptz_zone,
                &[Some(tz), Some(pg_sys::Datum::from(v))],
            )
            .map(|d| d.value() as i64)
            .unwrap_or(v),
            _ => pgrx::fcinfo::direct_function_call_as_datum(
                pg_sys::timestamp_zone,
                &[Some(tz), Some(pg_sys::Datum::from(v))],
            )
            .map(|d| d.value() as i64)
            .unwrap_or(v),
        }
    }
}

/// Resolve a zone name as PostgreSQL's timezone() does; an unknown name is
/// an ERROR (22023), like PostgreSQL's own.
fn resolve(name: &str) -> Zone {
    let mut z = Zone::empty();
    let bytes = name.as_bytes();
    if bytes.len() > 255 {
        fail_invalid(name);
    }
    let c = match std::ffi::CString::new(bytes) {
        Ok(c) => c,
        Err(_) => fail_invalid(name),
    };
    // SAFETY: PostgreSQL functions on a NUL-terminated copy; the lowered
    // copy is palloc'd; pg_tzset caches zones for the backend's lifetime.
    unsafe {
        let lower = pg_sys::downcase_truncate_identifier(c.as_ptr(), bytes.len() as i32, false);
        let mut val: i32 = 0;
        let mut tzp: *mut pg_sys::pg_tz = std::ptr::null_mut();
        let t = pg_sys::DecodeTimezoneAbbrev(0, lower, &mut val, &mut tzp) as u32;
        if t == pg_sys::TZ || t == pg_sys::DTZ {
            z.kind = KIND_FIXED;
            z.fixed = val as i64 * USECS;
        } else if t == pg_sys::DYNTZ {
            z.kind = KIND_DYNAMIC;
        } else {
            let zone = pg_sys::pg_tzset(c.as_ptr());
            if zone.is_null() {
                fail_invalid(name);
            }
            z.kind = KIND_NAMED;
            z.tzp = zone;
        }
    }
    if bytes.len() <= NAME_CAP {
        z.name[..bytes.len()].copy_from_slice(bytes);
        z.name_len = bytes.len();
    } else {
        // too long to cache by name: resolved again on every call
        z.name_len = usize::MAX;
    }
    z
}

fn fail_invalid(name: &str) -> ! {
    let e: pgrx::pg_sys::panic::ErrorReport =
        crate::errors::StoreError::invalid(format!("time zone \"{name}\" not recognized")).into();
    e.report(pgrx::PgLogLevel::ERROR);
    unreachable_error()
}

#[cold]
fn unreachable_error() -> ! {
    // ErrorReport::report(ERROR) does not return
    std::process::abort()
}

/// Make `z` the cache for the zone in text datum `tz`.
///
/// # Safety
/// `tz` must be a non-null text datum.
#[inline(always)]
pub unsafe fn ensure(z: &mut Zone, tz: pg_sys::Datum) {
    // SAFETY: as documented
    if let Some(name) = unsafe { plain_text(tz) } {
        if z.is(name) {
            return;
        }
    }
    zone_slow(z, 0, tz, 0);
}

/// `ts AT TIME ZONE tz` (timestamptz -> local timestamp).
#[inline(always)]
pub fn to_local(z: &mut Zone, tz: pg_sys::Datum, ts: i64) -> i64 {
    match z.kind {
        KIND_FIXED => ts + z.fixed,
        KIND_NAMED => {
            if z.utc_valid && ts >= z.utc_lo && ts < z.utc_hi {
                return ts + z.utc_off;
            }
            named_miss(z, tz, ts)
        }
        _ => zone_slow(z, 1, tz, ts),
    }
}

#[cold]
fn named_miss(z: &mut Zone, tz: pg_sys::Datum, ts: i64) -> i64 {
    let secs = ts.div_euclid(USECS) + UNIX_TO_PG;
    let (mut before, mut after): (std::ffi::c_long, std::ffi::c_long) = (0, 0);
    let (mut bdst, mut adst) = (0, 0);
    let mut boundary: pg_sys::pg_time_t = 0;
    // SAFETY: out-pointers are locals; tzp came from pg_tzset; this
    // function only reads the zone data and never raises an ERROR
    let r = unsafe {
        pg_sys::pg_next_dst_boundary(&secs, &mut before, &mut bdst, &mut boundary, &mut after, &mut adst, z.tzp)
    };
    if r < 0 {
        return zone_slow(z, 1, tz, ts);
    }
    let off = before as i64 * USECS;
    z.utc_lo = (secs - UNIX_TO_PG).saturating_mul(USECS);
    z.utc_hi = if r == 1 { (boundary as i64 - UNIX_TO_PG).saturating_mul(USECS) } else { i64::MAX };
    z.utc_off = off;
    z.utc_valid = true;
    ts + off
}

/// `local AT TIME ZONE tz` (local timestamp -> timestamptz), with
/// PostgreSQL's rules for local times in a gap or repeated.
#[inline(always)]
pub fn to_utc(z: &mut Zone, tz: pg_sys::Datum, local: i64) -> i64 {
    if z.kind == KIND_FIXED {
        return local - z.fixed;
    }
    if z.back_valid && z.back_local == local {
        return z.back_utc;
    }
    let u = zone_slow(z, 2, tz, local);
    z.back_valid = true;
    z.back_local = local;
    z.back_utc = u;
    u
}
