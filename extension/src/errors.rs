//! The error contract in one place: every failure a caller can cause maps to
//! one standard SQLSTATE (see DESIGN.md), with a PostgreSQL-style message
//! (lower case, no trailing period) and full-sentence DETAIL / HINT.
//!
//! Pure modules return `Result<_, StoreError>`; `#[pg_extern]` wrappers return
//! `Result<_, ErrorReport>` and pgrx raises the report with its SQLSTATE.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;
use std::fmt;

/// What went wrong, independent of PostgreSQL; `sqlstate()` is the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 22023: a parameter is out of range or malformed (qty <= 0, bad email, ...)
    InvalidParameter,
    /// 22P02: a value has the wrong shape (items JSON not an array of objects)
    InvalidText,
    /// 23514: not enough stock
    CheckViolation,
    /// 23503: refers to something that does not exist (unknown SKU, customer)
    ForeignKey,
    /// 23505: a unique key is already taken (email, idempotency key)
    Unique,
    /// 55000: the object is not in a state that allows the operation
    PrerequisiteState,
    /// P0002: the thing asked for does not exist (unknown order id)
    NoDataFound,
    /// 42703: undefined column
    UndefinedColumn,
    /// 42P01: undefined table
    UndefinedTable,
    /// 42704: undefined object (a rollup name)
    UndefinedObject,
    /// 2BP01: something else depends on the object
    DependentObjects,
    /// 22004: a NULL where a value is required
    NullValue,
    /// 22008: a date/time result outside PostgreSQL's range
    DatetimeOverflow,
    /// 40001: a concurrent transaction got there first; retry the call
    SerializationFailure,
    /// 53000: the server has no room for it (no free background worker slot)
    InsufficientResources,
    /// 53200: an allocation failed (reported, never an abort of the backend)
    OutOfMemory,
    /// 22003: a price, quantity or total beyond the documented limits
    NumericOutOfRange,
    /// 21000: a source with two rows for one key at one time
    CardinalityViolation,
    /// 23502: a NULL in a column that must have a value (a key column)
    NotNullViolation,
    /// 42501: the caller lacks the right (role, or acting for another customer)
    InsufficientPrivilege,
    /// 55P03: a lock wait passed the function's lock_timeout
    LockNotAvailable,
    /// 25001: must not run inside a transaction block (it commits)
    ActiveSqlTransaction,
    /// 0A000: not supported in this context (a refresh under REPEATABLE READ)
    FeatureNotSupported,
    /// XX000: a bug; never caused by the caller
    Internal,
}

impl Kind {
    pub fn sqlstate(self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Kind::InvalidParameter => ERRCODE_INVALID_PARAMETER_VALUE,
            Kind::InvalidText => ERRCODE_INVALID_TEXT_REPRESENTATION,
            Kind::CheckViolation => ERRCODE_CHECK_VIOLATION,
            Kind::ForeignKey => ERRCODE_FOREIGN_KEY_VIOLATION,
            Kind::Unique => ERRCODE_UNIQUE_VIOLATION,
            Kind::PrerequisiteState => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Kind::NoDataFound => ERRCODE_NO_DATA_FOUND,
            Kind::UndefinedColumn => ERRCODE_UNDEFINED_COLUMN,
            Kind::UndefinedTable => ERRCODE_UNDEFINED_TABLE,
            Kind::NullValue => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Kind::UndefinedObject => ERRCODE_UNDEFINED_OBJECT,
            Kind::DependentObjects => ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            Kind::DatetimeOverflow => ERRCODE_DATETIME_FIELD_OVERFLOW,
            Kind::SerializationFailure => ERRCODE_T_R_SERIALIZATION_FAILURE,
            Kind::InsufficientResources => ERRCODE_INSUFFICIENT_RESOURCES,
            Kind::OutOfMemory => ERRCODE_OUT_OF_MEMORY,
            Kind::NumericOutOfRange => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            Kind::CardinalityViolation => ERRCODE_CARDINALITY_VIOLATION,
            Kind::NotNullViolation => ERRCODE_NOT_NULL_VIOLATION,
            Kind::InsufficientPrivilege => ERRCODE_INSUFFICIENT_PRIVILEGE,
            Kind::LockNotAvailable => ERRCODE_LOCK_NOT_AVAILABLE,
            Kind::ActiveSqlTransaction => ERRCODE_ACTIVE_SQL_TRANSACTION,
            Kind::FeatureNotSupported => ERRCODE_FEATURE_NOT_SUPPORTED,
            Kind::Internal => ERRCODE_INTERNAL_ERROR,
        }
    }
}

/// A domain error: kind plus message, optional detail and hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub kind: Kind,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl StoreError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        StoreError { kind, message: message.into(), detail: None, hint: None }
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidParameter, message)
    }
    pub fn null(what: &str) -> Self {
        Self::new(Kind::NullValue, format!("{what} must not be null"))
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, message)
    }
    pub fn out_of_range(message: impl Into<String>) -> Self {
        Self::new(Kind::NumericOutOfRange, message)
    }
    /// 53200 for a failed allocation of `bytes` for `what`.
    pub fn out_of_memory(what: &str, bytes: usize) -> Self {
        Self::new(Kind::OutOfMemory, "out of memory")
            .detail(format!("Failed on a request of size {bytes} for {what}."))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {}

impl From<StoreError> for ErrorReport {
    #[track_caller]
    fn from(e: StoreError) -> ErrorReport {
        let mut report = ErrorReport::new(e.kind.sqlstate(), e.message, "storefront");
        if let Some(d) = e.detail {
            report = report.set_detail(d);
        }
        if let Some(h) = e.hint {
            report = report.set_hint(h);
        }
        report
    }
}

/// SPI failing by itself (not a PostgreSQL ERROR, which propagates with its
/// own SQLSTATE) is a bug in this extension: report it as internal.
impl From<pgrx::spi::SpiError> for StoreError {
    fn from(e: pgrx::spi::SpiError) -> StoreError {
        StoreError::internal(format!("storefront internal SPI error: {e}"))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Convert a domain result into what `#[pg_extern]` returns.
pub fn report<T>(r: StoreResult<T>) -> Result<T, ErrorReport> {
    r.map_err(ErrorReport::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_documented_sqlstates() {
        use PgSqlErrorCode::*;
        assert_eq!(Kind::CheckViolation.sqlstate(), ERRCODE_CHECK_VIOLATION);
        assert_eq!(Kind::ForeignKey.sqlstate(), ERRCODE_FOREIGN_KEY_VIOLATION);
        assert_eq!(Kind::Unique.sqlstate(), ERRCODE_UNIQUE_VIOLATION);
        assert_eq!(Kind::PrerequisiteState.sqlstate(), ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE);
        assert_eq!(Kind::NoDataFound.sqlstate(), ERRCODE_NO_DATA_FOUND);
        assert_eq!(Kind::InvalidParameter.sqlstate(), ERRCODE_INVALID_PARAMETER_VALUE);
        assert_eq!(Kind::InvalidText.sqlstate(), ERRCODE_INVALID_TEXT_REPRESENTATION);
        assert_eq!(Kind::UndefinedColumn.sqlstate(), ERRCODE_UNDEFINED_COLUMN);
        assert_eq!(Kind::UndefinedTable.sqlstate(), ERRCODE_UNDEFINED_TABLE);
        assert_eq!(Kind::InsufficientResources.sqlstate(), ERRCODE_INSUFFICIENT_RESOURCES);
        assert_eq!(Kind::OutOfMemory.sqlstate(), ERRCODE_OUT_OF_MEMORY);
        assert_eq!(Kind::NumericOutOfRange.sqlstate(), ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE);
        assert_eq!(Kind::CardinalityViolation.sqlstate(), ERRCODE_CARDINALITY_VIOLATION);
        assert_eq!(Kind::NotNullViolation.sqlstate(), ERRCODE_NOT_NULL_VIOLATION);
        assert_eq!(Kind::InsufficientPrivilege.sqlstate(), ERRCODE_INSUFFICIENT_PRIVILEGE);
        assert_eq!(Kind::LockNotAvailable.sqlstate(), ERRCODE_LOCK_NOT_AVAILABLE);
        assert_eq!(Kind::ActiveSqlTransaction.sqlstate(), ERRCODE_ACTIVE_SQL_TRANSACTION);
        assert_eq!(Kind::FeatureNotSupported.sqlstate(), ERRCODE_FEATURE_NOT_SUPPORTED);
    }

    #[test]
    fn display_includes_detail() {
        let e = StoreError::invalid("qty must be positive").detail("Line 1 has qty 0.");
        assert_eq!(e.to_string(), "qty must be positive (Line 1 has qty 0.)");
    }
}
