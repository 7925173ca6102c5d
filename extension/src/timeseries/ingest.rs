//! Batched event ingestion at COPY speed.
//!
//! `track_events(kinds, ats, customer_ids, props)` validates the batch in
//! Rust, encodes it in COPY's binary format and hands it to PostgreSQL's own
//! COPY FROM machinery (BeginCopyFrom / CopyFrom with a data-source
//! callback), so rows go in through the same multi-insert path as
//! `COPY storefront.event FROM STDIN`, partition routing and triggers
//! included. An INSERT ... SELECT FROM unnest(...) would insert row by row.
//!
//! Binary COPY decodes text through the client encoding; when it differs
//! from the database encoding the batch goes in with INSERT instead.

use crate::errors::{report, Kind, StoreError, StoreResult};
use crate::args::JsonbText;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::CString;

/// Event times are from 1970-01-01 up to, but not including, 3000-01-01
/// (UTC), in PostgreSQL's timestamp representation; the event table's
/// CHECK constraint says the same.
pub const MIN_EVENT_TIME: i64 = -946_684_800_000_000;
pub const END_EVENT_TIME: i64 = 31_556_995_200_000_000;

pub fn time_ok(t: i64) -> bool {
    (MIN_EVENT_TIME..END_EVENT_TIME).contains(&t)
}

/// An event kind: 1 to 64 of a-z 0-9 _ . starting with a letter.
pub fn kind_ok(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'.')
}

/// One event, borrowed from the argument arrays.
pub struct Event<'a> {
    pub at: Option<i64>,
    pub kind: &'a str,
    pub customer_id: Option<i64>,
    /// JSON text of an object
    pub props: Option<String>,
}

/// COPY BINARY encoding of (at, kind, customer_id, props) rows; `now`
/// stands in for a NULL time.
pub fn encode(events: &[Event<'_>], now: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(19 + events.len() * 64);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0u32.to_be_bytes()); // flags
    out.extend_from_slice(&0u32.to_be_bytes()); // header extension length
    for e in events {
        out.extend_from_slice(&4i16.to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&e.at.unwrap_or(now).to_be_bytes());
        out.extend_from_slice(&(e.kind.len() as i32).to_be_bytes());
        out.extend_from_slice(e.kind.as_bytes());
        match e.customer_id {
            Some(c) => {
                out.extend_from_slice(&8i32.to_be_bytes());
                out.extend_from_slice(&c.to_be_bytes());
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        let props = e.props.as_deref().unwrap_or("{}");
        // jsonb binary: version 1, then the text
        out.extend_from_slice(&((props.len() + 1) as i32).to_be_bytes());
        out.push(1);
        out.extend_from_slice(props.as_bytes());
    }
    out.extend_from_slice(&(-1i16).to_be_bytes()); // trailer
    out
}

thread_local! {
    /// The bytes CopyFrom reads through `feed` (the callback has no
    /// context argument), and how far it has read.
    static FEED: RefCell<(Vec<u8>, usize)> = const { RefCell::new((Vec::new(), 0)) };
}

unsafe extern "C-unwind" fn feed(outbuf: *mut std::ffi::c_void, _minread: i32, maxread: i32) -> i32 {
    FEED.with(|f| {
        let mut f = f.borrow_mut();
        let (buf, pos) = &mut *f;
        let n = (buf.len() - *pos).min(maxread.max(0) as usize);
        // SAFETY: CopyFrom gives a buffer of at least maxread bytes
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr().add(*pos), outbuf as *mut u8, n) };
        *pos += n;
        n as i32
    })
}

/// COPY the encoded rows into storefront.event; returns rows written.
fn copy_in(data: Vec<u8>) -> StoreResult<i64> {
    FEED.with(|f| *f.borrow_mut() = (data, 0));
    let cols = ["at", "kind", "customer_id", "props"];
    // SAFETY: the sequence DoCopy follows for COPY FROM, with our callback
    // as the data source; the relation is opened and closed here; all
    // allocations are palloc'd in the current (per-call) memory context.
    let n = unsafe {
        let relid = pgrx::direct_function_call::<pg_sys::Oid>(
            pg_sys::to_regclass,
            &["storefront.event".into_datum()],
        )
        .ok_or_else(|| StoreError::internal("storefront.event is missing"))?;
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let rel = pg_sys::table_open(relid, lock);
        let pstate = pg_sys::make_parsestate(std::ptr::null_mut());
        let source = CString::new("storefront.track_events").unwrap_or_default();
        (*pstate).p_sourcetext = pg_sys::pstrdup(source.as_ptr());
        let nsitem = pg_sys::addRangeTableEntryForRelation(pstate, rel, lock as i32, std::ptr::null_mut(), false, false);
        (*(*nsitem).p_rte).requiredPerms = pg_sys::ACL_INSERT as pg_sys::AclMode;
        let mut attlist: *mut pg_sys::List = std::ptr::null_mut();
        for c in cols {
            let c = CString::new(c).unwrap_or_default();
            attlist = pg_sys::lappend(attlist, pg_sys::makeString(pg_sys::pstrdup(c.as_ptr())) as *mut std::ffi::c_void);
        }
        let fmt = CString::new("format").unwrap_or_default();
        let bin = CString::new("binary").unwrap_or_default();
        let opt = pg_sys::makeDefElem(pg_sys::pstrdup(fmt.as_ptr()), pg_sys::makeString(pg_sys::pstrdup(bin.as_ptr())) as *mut pg_sys::Node, -1);
        let options = pg_sys::lappend(std::ptr::null_mut(), opt as *mut std::ffi::c_void);
        let cstate = pg_sys::BeginCopyFrom(pstate, rel, std::ptr::null_mut(), std::ptr::null(), false, Some(feed), attlist, options);
        let n = pg_sys::CopyFrom(cstate);
        pg_sys::EndCopyFrom(cstate);
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        n
    };
    FEED.with(|f| *f.borrow_mut() = (Vec::new(), 0));
    Ok(n as i64)
}

/// The fallback: one INSERT from the arrays.
fn insert_in(events: &[Event<'_>]) -> StoreResult<i64> {
    let ats: Vec<Option<TimestampWithTimeZone>> =
        events.iter().map(|e| e.at.and_then(|a| TimestampWithTimeZone::try_from(a).ok())).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    let custs: Vec<Option<i64>> = events.iter().map(|e| e.customer_id).collect();
    let props: Vec<String> = events.iter().map(|e| e.props.clone().unwrap_or_else(|| "{}".into())).collect();
    Spi::connect_mut(|c| {
        let t = c.update(
            "INSERT INTO storefront.event (at, kind, customer_id, props)
             SELECT coalesce(a, now()), k, cid, p::jsonb FROM unnest($1, $2, $3, $4) AS x(a, k, cid, p)",
            None,
            &[ats.into(), kinds.into(), custs.into(), props.into()],
        )?;
        Ok(t.len() as i64)
    })
}

fn bad_time(n: usize, t: i64) -> StoreError {
    let shown = match t {
        i64::MIN => "-infinity".to_string(),
        i64::MAX => "infinity".to_string(),
        _ => TimestampWithTimeZone::try_from(t).map(|t| t.to_string()).unwrap_or_else(|_| t.to_string()),
    };
    StoreError::new(Kind::DatetimeOverflow, "event time is out of range").detail(format!(
        "Event {n} has time {shown}; an event time is from 1970-01-01 up to, but not including, 3000-01-01 (UTC)."
    ))
}

fn bad_kind() -> StoreError {
    StoreError::invalid("invalid event kind in batch")
        .detail("An event kind has 1 to 64 lower-case letters, digits, \"_\" or \".\", starting with a letter.")
}

fn track_events_inner(
    kinds: Option<pgrx::Array<'_, &str>>,
    ats: Option<pgrx::Array<'_, TimestampWithTimeZone>>,
    customer_ids: Option<pgrx::Array<'_, i64>>,
    props: Option<pgrx::Array<'_, JsonbText>>,
) -> StoreResult<i64> {
    let n = kinds.as_ref().map(|a| a.len()).unwrap_or(0);
    let lengths_ok = ats.as_ref().map(|a| a.len()).unwrap_or(0) == n
        && customer_ids.as_ref().is_none_or(|a| a.len() == n)
        && props.as_ref().is_none_or(|a| a.len() == n);
    if !lengths_ok {
        return Err(StoreError::invalid("event arrays must have the same length").detail(format!(
            "kinds has {n} elements, ats {}.",
            ats.as_ref().map(|a| a.len()).unwrap_or(0)
        )));
    }
    if n == 0 {
        return Ok(0);
    }
    let kinds = kinds.ok_or_else(bad_kind)?;
    let mut events = Vec::with_capacity(n);
    let mut at_iter = ats.as_ref().map(|a| a.iter());
    let mut c_iter = customer_ids.as_ref().map(|a| a.iter());
    let mut p_iter = props.as_ref().map(|a| a.iter());
    for (n, k) in kinds.iter().enumerate() {
        let kind = k.filter(|k| kind_ok(k)).ok_or_else(bad_kind)?;
        let at = at_iter.as_mut().and_then(|i| i.next()).flatten().map(|t| t.into_inner());
        if let Some(t) = at {
            if !time_ok(t) {
                return Err(bad_time(n + 1, t));
            }
        }
        let customer_id = c_iter.as_mut().and_then(|i| i.next()).flatten();
        // props go in as jsonb printed them: exact numbers, no re-parse here
        let props = match p_iter.as_mut().and_then(|i| i.next()).flatten() {
            None => None,
            Some(j) if j.is_object() => Some(j.0),
            Some(j) => {
                return Err(StoreError::invalid("event props must be a JSON object")
                    .detail(format!("Event {} has props that are a JSON {}.", n + 1, j.type_name())))
            }
        };
        events.push(Event { at, kind, customer_id, props });
    }
    // SAFETY: plain reads of the session's encodings
    let same_encoding = unsafe { pg_sys::pg_get_client_encoding() == pg_sys::GetDatabaseEncoding() };
    if same_encoding {
        // SAFETY: the transaction start time, as now() reports it
        let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
        copy_in(encode(&events, now))
    } else {
        insert_in(&events)
    }
}

/// Record many events in one call (arrays of equal length), through
/// PostgreSQL's COPY machinery. A NULL time means now(); NULL props '{}'.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn track_events(
    kinds: Option<pgrx::Array<'_, &str>>,
    ats: Option<pgrx::Array<'_, TimestampWithTimeZone>>,
    customer_ids: default!(Option<pgrx::Array<'_, i64>>, "NULL"),
    props: default!(Option<pgrx::Array<'_, JsonbText>>, "NULL"),
) -> Result<i64, ErrorReport> {
    report(track_events_inner(kinds, ats, customer_ids, props))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert!(kind_ok("page_view"));
        assert!(kind_ok("order.placed2"));
        for bad in ["", "Page", "1x", "a b", "a-b", &"x".repeat(65)] {
            assert!(!kind_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn event_times() {
        // 1970-01-01 and 3000-01-01, in microseconds since 2000-01-01
        assert_eq!(MIN_EVENT_TIME, -10_957 * 86_400_000_000);
        assert_eq!(END_EVENT_TIME, crate::timeseries::bucket::days_from_civil(3000, 1, 1) * 86_400_000_000);
        assert!(time_ok(0));
        assert!(time_ok(MIN_EVENT_TIME));
        assert!(!time_ok(MIN_EVENT_TIME - 1));
        assert!(!time_ok(END_EVENT_TIME));
        assert!(!time_ok(i64::MIN) && !time_ok(i64::MAX));
    }

    #[test]
    fn binary_rows() {
        let e = [Event { at: Some(1), kind: "ab", customer_id: None, props: None }];
        let b = encode(&e, 0);
        assert_eq!(&b[..11], b"PGCOPY\n\xff\r\n\0");
        let row = &b[19..b.len() - 2];
        assert_eq!(&row[..2], &4i16.to_be_bytes());
        assert_eq!(&row[2..6], &8i32.to_be_bytes());
        assert_eq!(&row[6..14], &1i64.to_be_bytes());
        assert_eq!(&row[14..18], &2i32.to_be_bytes());
        assert_eq!(&row[18..20], b"ab");
        assert_eq!(&row[20..24], &(-1i32).to_be_bytes());
        assert_eq!(&row[24..28], &3i32.to_be_bytes());
        assert_eq!(&row[28..], b"\x01{}");
        assert_eq!(&b[b.len() - 2..], &(-1i16).to_be_bytes());
    }
}
