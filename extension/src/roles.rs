//! Who is calling, and for whom: the acting customer of a transaction
//! (`storefront.customer_id`, set by the caller per transaction as
//! PostgREST passes JWT claims) and the caller's role as `SET ROLE` left it
//! (which a `SECURITY DEFINER` function does not change). The grant
//! functions, the role registry and the row-level security policies are in
//! `sql/roles.sql`; the book page is `reference/roles.md`.
//!
//! The rule every function acting for a customer applies
//! (`check_acting_customer`):
//! - with an acting customer, the customer acted on must be that one
//!   (42501 otherwise);
//! - without one, the call is allowed unless row security is enabled
//!   (`enable_row_security()`) and the calling role is an application role
//!   (granted with `grant_app_role`) and no staff role (catalog or
//!   operations): an application session must say whom it acts for.

use crate::errors::{report, Kind, StoreError, StoreResult};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::ffi::CString;

pub static CUSTOMER_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub fn init() {
    GucRegistry::define_string_guc(
        c"storefront.customer_id",
        c"The customer this transaction acts for (set it with set_config(..., true)).",
        c"When set, functions acting for a customer only act for this one, and row-level security shows an application role this customer's rows only. Empty means no acting customer.",
        &CUSTOMER_ID,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// Parse the setting's text: empty is "no acting customer".
pub fn parse_customer(text: &str) -> StoreResult<Option<i64>> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    match t.parse::<i64>() {
        Ok(id) if id > 0 => Ok(Some(id)),
        _ => Err(StoreError::invalid("invalid value for storefront.customer_id")
            .detail(format!("\"{}\" is not a customer id.", crate::orders::items::clip(t, 40)))
            .hint("Set it to the customer's id, or to an empty string for none.")),
    }
}

/// The acting customer of this transaction, if any.
pub fn acting() -> StoreResult<Option<i64>> {
    match CUSTOMER_ID.get() {
        None => Ok(None),
        Some(s) => parse_customer(&s.to_string_lossy()),
    }
}

/// What the caller may do for `customer_id`, given the acting customer and
/// whether the session must name one (pure; see the module comment).
pub fn decide(acting: Option<i64>, customer_id: i64, must_act: impl FnOnce() -> StoreResult<bool>) -> StoreResult<()> {
    match acting {
        Some(a) if a == customer_id => Ok(()),
        Some(a) => Err(StoreError::new(Kind::InsufficientPrivilege, "the session acts for another customer")
            .detail(format!("The session acts for customer {a}; this is customer {customer_id}'s."))),
        None => {
            if must_act()? {
                Err(StoreError::new(Kind::InsufficientPrivilege, "an application session must set storefront.customer_id")
                    .detail("Row security is enabled, and the calling role is an application role.")
                    .hint("Run SELECT set_config('storefront.customer_id', '<customer id>', true) in the transaction."))
            } else {
                Ok(())
            }
        }
    }
}

/// Must this session name its customer? Row security is on and the
/// calling role is an application role, not a staff role or a superuser.
const MUST_ACT: &str = "SELECT EXISTS (SELECT 1 FROM storefront.config c WHERE c.name = 'row_security' AND c.value = 'on')
   AND EXISTS (SELECT 1 FROM storefront.role_kind k JOIN pg_catalog.pg_roles r ON r.rolname = k.role_name
               WHERE k.kind = 'app' AND pg_catalog.pg_has_role($1, r.oid, 'MEMBER'))
   AND NOT EXISTS (SELECT 1 FROM storefront.role_kind k JOIN pg_catalog.pg_roles r ON r.rolname = k.role_name
                   WHERE k.kind IN ('catalog', 'operations') AND pg_catalog.pg_has_role($1, r.oid, 'MEMBER'))
   AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = $1)";

/// The calling role: the current user as SET ROLE (or the login) left it,
/// which SECURITY DEFINER functions on the way do not change.
pub fn outer_role() -> pg_sys::Oid {
    // SAFETY: reads a backend global
    unsafe { pg_sys::GetOuterUserId() }
}

fn must_act() -> StoreResult<bool> {
    Ok(Spi::get_one_with_args::<bool>(MUST_ACT, &[outer_role().into()])?.unwrap_or(false))
}

/// Check that the caller may act for `customer_id` (42501 otherwise).
pub fn check(customer_id: i64) -> StoreResult<()> {
    decide(acting()?, customer_id, must_act)
}

/// The same check inside an open SPI connection.
pub fn check_in(client: &mut pgrx::spi::SpiClient<'_>, customer_id: i64) -> StoreResult<()> {
    decide(acting()?, customer_id, || {
        let t = client.update(MUST_ACT, Some(1), &[outer_role().into()])?;
        Ok(!t.is_empty() && t.first().get::<bool>(1)?.unwrap_or(false))
    })
}

/// The acting customer of the transaction (`storefront.customer_id`), or
/// NULL. Row-level security policies use it.
#[pg_extern(stable, parallel_safe)]
fn acting_customer() -> Result<Option<i64>, ErrorReport> {
    report(acting())
}

/// Raise 42501 unless the caller may act for `customer_id`; used by the
/// SQL functions that act for a customer.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn check_acting_customer(customer_id: Option<i64>) -> Result<(), ErrorReport> {
    let id = customer_id.ok_or_else(|| ErrorReport::from(StoreError::null("customer id")))?;
    report(check(id))
}

/// The calling role as SET ROLE left it (unchanged by SECURITY DEFINER).
#[pg_extern(stable, parallel_safe)]
fn calling_role() -> pg_sys::Oid {
    outer_role()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_parses() {
        assert_eq!(parse_customer("").unwrap(), None);
        assert_eq!(parse_customer("  ").unwrap(), None);
        assert_eq!(parse_customer("42").unwrap(), Some(42));
        for bad in ["x", "-1", "0", "1.5", "99999999999999999999"] {
            assert_eq!(parse_customer(bad).unwrap_err().kind, Kind::InvalidParameter, "{bad}");
        }
    }

    #[test]
    fn who_may_act_for_whom() {
        let never = || -> StoreResult<bool> { panic!("not asked when a customer is acting") };
        assert!(decide(Some(7), 7, never).is_ok());
        let e = decide(Some(7), 8, never).unwrap_err();
        assert_eq!(e.kind, Kind::InsufficientPrivilege);
        assert!(e.detail.unwrap().contains("customer 7"));
        assert!(decide(None, 8, || Ok(false)).is_ok());
        let e = decide(None, 8, || Ok(true)).unwrap_err();
        assert_eq!(e.message, "an application session must set storefront.customer_id");
    }
}
