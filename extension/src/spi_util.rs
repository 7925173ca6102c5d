//! Small SPI helpers that tell "no row" apart from a SQL NULL.

use crate::errors::StoreResult;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiTupleTable;

/// Run a statement and map its first row with `f`; `None` when it returned
/// no row. The statement may write (INSERT ... RETURNING).
pub fn first_row<'a, T>(
    sql: &str,
    args: &[DatumWithOid<'a>],
    f: impl FnOnce(&SpiTupleTable<'_>) -> Result<T, pgrx::spi::SpiError>,
) -> StoreResult<Option<T>> {
    Spi::connect_mut(|client| {
        let table = client.update(sql, Some(1), args)?;
        if table.is_empty() {
            return Ok(None);
        }
        let table = table.first();
        Ok(Some(f(&table)?))
    })
}

use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::PgOid;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

thread_local! {
    /// Prepared plans kept for the life of the backend (SPI_keepplan), by
    /// the address of their (static) statement text, so a lookup does not
    /// hash kilobytes of SQL. PostgreSQL revalidates them after DDL, like
    /// PL/pgSQL's cached plans.
    static PLANS: RefCell<HashMap<usize, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

/// The kept plan for `sql` (argument types `types`), preparing it on first
/// use. Plans are prepared as read-write, so each execution takes a fresh
/// snapshot in READ COMMITTED, as a plain statement would.
pub fn plan(
    client: &SpiClient<'_>,
    sql: &'static str,
    types: &[T],
) -> StoreResult<Rc<OwnedPreparedStatement>> {
    let key = sql.as_ptr() as usize;
    if let Some(p) = PLANS.with(|m| m.borrow().get(&key).cloned()) {
        return Ok(p);
    }
    let oids: Vec<PgOid> = types.iter().map(|t| PgOid::BuiltIn(*t)).collect();
    let p = Rc::new(client.prepare_mut(sql, &oids)?.keep());
    PLANS.with(|m| m.borrow_mut().insert(key, p.clone()));
    Ok(p)
}

/// Built-in type OIDs, for plan argument lists.
pub use pgrx::pg_sys::BuiltinOid as T;
