//! Argument types for `#[pg_extern]`s that take SQL values as they are,
//! so that the function, not the argument conversion, decides what a bad
//! value means (and raises its documented SQLSTATE).
//!
//! ## `JsonbText`: jsonb arguments as PostgreSQL prints them
//!
//! pgrx's `JsonB` parses every argument with serde_json as the call starts,
//! and panics (an internal error, XX000) on anything serde_json refuses
//! that jsonb accepts: documents nested deeper than 128 levels, numbers
//! beyond f64. `JsonbText` takes the text `jsonb_out` prints instead
//! (numbers exactly as stored), so each function decides what to do with
//! it: parse it with limits and map the failure to a SQLSTATE
//! (`parse_value`), or pass it on untouched (event props).

use crate::errors::{Kind, StoreError, StoreResult};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::datum::UnboxDatum;
use pgrx::nullable::Nullable;
use pgrx::pg_sys;
use pgrx::FromDatum;

/// The text of a jsonb value (as `jsonb_out` prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonbText(pub String);

impl JsonbText {
    /// Is the value a JSON object? (jsonb prints objects starting with `{`.)
    pub fn is_object(&self) -> bool {
        self.0.starts_with('{')
    }

    /// The JSON type of the value, as jsonb_typeof() names it.
    pub fn type_name(&self) -> &'static str {
        type_of_text(&self.0)
    }
}

/// jsonb_typeof() of the text jsonb_out printed.
pub fn type_of_text(s: &str) -> &'static str {
    match s.as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't') | Some(b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

/// Parse JSON text into a serde value for a function that needs the
/// structure. Numbers keep their exact text (serde_json's
/// arbitrary_precision); documents nested deeper than serde_json's limit
/// (128) are refused as 22P02 with `what` in the message, instead of
/// reaching a caller as an internal error.
pub fn parse_value(text: &str, what: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| {
        let why = e.to_string();
        let detail = if why.contains("recursion limit") {
            "The document is nested more than 128 levels deep.".to_string()
        } else if why.contains("number out of range") {
            "The document holds a number too large to read.".to_string()
        } else {
            format!("The document could not be read: {why}.")
        };
        StoreError::new(Kind::InvalidText, format!("invalid {what}")).detail(detail)
    })
}

impl FromDatum for JsonbText {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: `datum` is a non-null jsonb (the SQL signature says so);
        // jsonb_out returns a palloc'd, NUL-terminated UTF-8 string
        unsafe {
            let varlena = datum.cast_mut_ptr::<pg_sys::varlena>();
            let detoasted = pg_sys::pg_detoast_datum_packed(varlena);
            let cstr = pgrx::direct_function_call::<&core::ffi::CStr>(pg_sys::jsonb_out, &[Some(detoasted.into())])?;
            let text = String::from_utf8_lossy(cstr.to_bytes()).into_owned();
            pg_sys::pfree(cstr.as_ptr() as *mut core::ffi::c_void);
            if detoasted != varlena {
                pg_sys::pfree(detoasted as *mut core::ffi::c_void);
            }
            Some(JsonbText(text))
        }
    }
}

unsafe impl UnboxDatum for JsonbText {
    type As<'src>
        = JsonbText
    where
        Self: 'src;

    unsafe fn unbox<'src>(d: pgrx::datum::Datum<'src>) -> Self::As<'src>
    where
        Self: 'src,
    {
        // SAFETY: an array element of type jsonb, never NULL here (the
        // array iterator hands NULL elements over as None)
        unsafe { JsonbText::from_datum(d.sans_lifetime(), false) }
            .unwrap_or_else(|| JsonbText("null".into()))
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for JsonbText {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        // SAFETY: called for non-NULL arguments of type jsonb
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| JsonbText("null".into()))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        // SAFETY: an argument of type jsonb
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

pgrx::impl_sql_translatable!(JsonbText, arg_only = "jsonb");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_of_printed_values() {
        for (text, ty) in [
            ("{}", "object"),
            ("[1]", "array"),
            ("\"x\"", "string"),
            ("true", "boolean"),
            ("false", "boolean"),
            ("null", "null"),
            ("-1.5", "number"),
            ("12", "number"),
        ] {
            assert_eq!(type_of_text(text), ty, "{text}");
        }
    }

    #[test]
    fn limits_become_22p02() {
        let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
        let e = parse_value(&deep, "order items").unwrap_err();
        assert_eq!(e.kind, Kind::InvalidText);
        assert_eq!(e.message, "invalid order items");
        assert!(e.detail.unwrap().contains("128 levels"));
        let ok = parse_value("[{\"sku\": \"A\", \"qty\": 1}]", "order items").unwrap();
        assert!(ok.is_array());
    }
}

/// A `regclass` argument as its OID, without opening the relation. pgrx's
/// `PgRelation` opens it while converting the argument, so an OID that
/// names no relation (`0::regclass`, a dropped table) fails there with an
/// internal error; with this the function looks the OID up itself and
/// answers 42P01.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegClass(pub pg_sys::Oid);

impl FromDatum for RegClass {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            None
        } else {
            // SAFETY: a regclass datum is an Oid by value
            Some(RegClass(unsafe { pg_sys::Oid::from_datum(datum, false) }?))
        }
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for RegClass {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        // SAFETY: called for non-NULL arguments of type regclass
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or(RegClass(pg_sys::InvalidOid))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        // SAFETY: an argument of type regclass
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

pgrx::impl_sql_translatable!(RegClass, arg_only = "regclass");
