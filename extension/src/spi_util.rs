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
