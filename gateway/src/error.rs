//! The error contract over HTTP: PostgREST's mapping from SQLSTATE to HTTP
//! status, and its body `{code, message, details, hint}` — the database's
//! own message, DETAIL and HINT, unchanged. Failures that happen before the
//! database is reached (a malformed body, a bad token, an unknown route) use
//! the same body with the SQLSTATE whose meaning fits, so a client handles
//! one shape of error everywhere.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::OnceLock;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// SQLSTATE (from the database, or the one whose meaning fits)
    #[schema(example = "23514")]
    pub code: String,
    /// PostgreSQL-style message: lower case, no trailing period
    #[schema(example = "insufficient stock for 1 items")]
    pub message: String,
    /// DETAIL: what exactly was wrong, as full sentences
    pub details: Option<String>,
    /// HINT: what to do about it
    pub hint: Option<String>,
    /// 23514 only: each SKU that is short, with the quantities
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_skus: Option<Vec<ShortSku>>,
}

/// A SKU an order asked more of than is available.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct ShortSku {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Box<ErrorBody>,
    /// seconds, for 503s a client may retry
    pub retry_after: Option<u32>,
    /// 401s carry `WWW-Authenticate: Bearer`
    pub challenge: Option<&'static str>,
}

/// How each SQLSTATE (or class) becomes an HTTP status. Rendered into the
/// OpenAPI document and the book, so the table and the code are one.
pub const SQLSTATE_TABLE: &[(&str, u16, &str)] = &[
    ("23514", 409, "check_violation: not enough stock; `short_skus` lists each short SKU"),
    ("23503", 409, "foreign_key_violation: an unknown or unsellable SKU or customer in the request body (404 when the SKU is the resource in the path)"),
    ("23505", 409, "unique_violation: idempotency key reused for another request, email already registered, provider reference used for another payment"),
    ("55000", 409, "object_not_in_prerequisite_state: an illegal status move (shipping an unpaid order, paying a cancelled one)"),
    ("22023", 400, "invalid_parameter_value (and every other class 22 code: 22P02, 22003, 22004, 22008)"),
    ("23502", 400, "not_null_violation"),
    ("P0002", 404, "no_data_found: unknown order"),
    ("42501", 403, "insufficient_privilege: the caller's role may not do this, or the order is another customer's (401 without a token)"),
    ("28000", 401, "invalid_authorization_specification: missing, malformed, expired or wrongly signed token or webhook signature"),
    ("28P01", 401, "invalid_password: wrong email or password at login"),
    ("55P03", 503, "lock_not_available: a row stayed locked past the function's lock_timeout; `Retry-After` says when to try again"),
    ("40001", 503, "serialization_failure and 40P01 deadlock_detected: retried inside the gateway first; 503 with `Retry-After` once the retries are spent"),
    ("53000", 503, "insufficient_resources (class 53), and 08006 when the database cannot be reached"),
    ("57014", 504, "query_canceled: the statement ran past the gateway's statement_timeout"),
    ("42704", 404, "no such route"),
    ("0A000", 415, "a request body that is not `application/json` (405 for a method the route does not have)"),
    ("54000", 413, "a request body over the size limit"),
    ("XX000", 500, "anything else, including a panic in a handler (the server keeps running)"),
];

fn short_sku_re() -> Option<&'static regex::Regex> {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r#"SKU "((?:[^"\\]|\\.)*)": requested (\d+), available (-?\d+)"#).ok())
        .as_ref()
}

/// The short SKUs named by a 23514 DETAIL (`SKU "X": requested 8, available 7.`).
pub fn parse_short_skus(detail: &str) -> Vec<ShortSku> {
    let Some(re) = short_sku_re() else { return Vec::new() };
    re.captures_iter(detail)
        .filter_map(|c| {
            Some(ShortSku {
                sku: c.get(1)?.as_str().to_string(),
                requested: c.get(2)?.as_str().parse().ok()?,
                available: c.get(3)?.as_str().parse().ok()?,
            })
        })
        .collect()
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: Box::new(ErrorBody {
                code: code.to_string(),
                message: message.into(),
                details: None,
                hint: None,
                short_skus: None,
            }),
            retry_after: None,
            challenge: None,
        }
    }

    pub fn details(mut self, d: impl Into<String>) -> Self {
        self.body.details = Some(d.into());
        self
    }

    pub fn hint(mut self, h: impl Into<String>) -> Self {
        self.body.hint = Some(h.into());
        self
    }

    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn code(&self) -> &str {
        &self.body.code
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "28000", message);
        e.challenge = Some("Bearer");
        e
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "42501", message)
    }

    pub fn not_json() -> Self {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "0A000", "request body must be JSON")
            .details("The request has no Content-Type: application/json header.")
            .hint("Send the body as JSON with Content-Type: application/json.")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "XX000", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "08006", message).retry_after(1)
    }

    /// 23503 for an unknown SKU means "no such thing" when the SKU is the
    /// resource itself (in the path): 404 instead of 409. (Other 23503s of
    /// the same call, such as an unknown location in the body, stay 409.)
    pub fn fk_as_not_found(mut self) -> Self {
        if self.body.code == "23503" && self.body.message.starts_with("product SKU") {
            self.status = StatusCode::NOT_FOUND;
        }
        self
    }

    /// An error from the database, mapped by its SQLSTATE.
    pub fn from_sqlx(err: &sqlx::Error) -> Self {
        use sqlx::postgres::PgDatabaseError;
        if let Some(db) = err.as_database_error() {
            if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
                let code = pg.code();
                let status = status_for_sqlstate(code);
                let mut e = ApiError::new(status, code, pg.message());
                e.body.details = pg.detail().map(str::to_string);
                e.body.hint = pg.hint().map(str::to_string);
                if code == "23514" {
                    let short = pg.detail().map(parse_short_skus).unwrap_or_default();
                    if !short.is_empty() {
                        e.body.short_skus = Some(short);
                    }
                }
                if matches!(code, "55P03" | "40001" | "40P01") || code.starts_with("53") {
                    e.retry_after = Some(1);
                }
                return e;
            }
            let code = db.code().map(|c| c.to_string()).unwrap_or_else(|| "XX000".into());
            return ApiError::new(status_for_sqlstate(&code), &code, db.message().to_string());
        }
        match err {
            sqlx::Error::PoolTimedOut => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "53300", "no database connection available")
                .details("Every connection of the gateway's pool was busy for the whole acquire timeout.")
                .retry_after(1),
            sqlx::Error::PoolClosed => ApiError::unavailable("the gateway is shutting down"),
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => {
                ApiError::unavailable("the database cannot be reached").details(err.to_string())
            }
            other => ApiError::internal("database call failed").details(other.to_string()),
        }
    }
}

/// PostgREST's table (https://postgrest.org/en/stable/references/errors.html),
/// with the store's own states: 55000 (an illegal status move) is a
/// conflict, 55P03 and class 53 are worth retrying (503).
pub fn status_for_sqlstate(code: &str) -> StatusCode {
    match code {
        "23514" | "23503" | "23505" | "55000" => StatusCode::CONFLICT,
        "23502" => StatusCode::BAD_REQUEST,
        "P0002" => StatusCode::NOT_FOUND,
        "42501" => StatusCode::FORBIDDEN,
        "28000" | "28P01" => StatusCode::UNAUTHORIZED,
        "55P03" | "40001" | "40P01" => StatusCode::SERVICE_UNAVAILABLE,
        "57014" => StatusCode::GATEWAY_TIMEOUT,
        "42883" | "42P01" | "42704" => StatusCode::NOT_FOUND,
        c if c.starts_with("22") => StatusCode::BAD_REQUEST,
        c if c.starts_with("53") || c.starts_with("08") || c.starts_with("57P") => StatusCode::SERVICE_UNAVAILABLE,
        c if c.starts_with("23") => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut resp = (status, axum::Json(self.body.as_ref())).into_response();
        let h = resp.headers_mut();
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(c) = self.challenge {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if status.is_server_error() {
            tracing::warn!(code = %self.body.code, message = %self.body.message, details = ?self.body.details, "request failed");
        }
        resp.extensions_mut().insert(ErrorCode(self.body.code));
        resp
    }
}

/// The SQLSTATE of an error response, for the access log and metrics.
#[derive(Clone, Debug)]
pub struct ErrorCode(pub String);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match &r {
            JsonRejection::MissingJsonContentType(_) => ApiError::not_json(),
            JsonRejection::JsonSyntaxError(e) => ApiError::new(StatusCode::BAD_REQUEST, "22P02", "malformed JSON in request body")
                .details(sentence(&body_error_text(e))),
            JsonRejection::JsonDataError(e) => ApiError::new(StatusCode::BAD_REQUEST, "22023", "invalid request body")
                .details(data_error_details(&body_error_text(e)))
                .hint("See the operation's request schema in /openapi.json."),
            JsonRejection::BytesRejection(_) => too_large_or_unreadable(r.status(), &r.body_text()),
            _ => ApiError::new(StatusCode::BAD_REQUEST, "22P02", "invalid request body").details(sentence(&r.body_text())),
        }
    }
}

fn too_large_or_unreadable(status: StatusCode, text: &str) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "54000", "request body is too large")
            .details("The body exceeds the gateway's size limit (--max-body-bytes).")
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "08P01", "request body could not be read").details(sentence(text))
    }
}

/// The innermost serde message of a JSON rejection (axum prefixes its own).
fn body_error_text<E: std::error::Error>(e: &E) -> String {
    let mut src: &dyn std::error::Error = e;
    while let Some(next) = src.source() {
        src = next;
    }
    src.to_string()
}

/// serde's "path: message" as a DETAIL: the message, then where.
fn data_error_details(text: &str) -> String {
    match text.split_once(": ") {
        Some((path, msg)) if !path.contains(' ') && path != "." => {
            if msg.starts_with("unknown field") {
                sentence(msg)
            } else {
                let msg = msg.trim_end_matches('.');
                sentence(&format!("{msg} (in {path})"))
            }
        }
        _ => sentence(text),
    }
}

/// A message as a DETAIL sentence: capitalized, ending with a period.
fn sentence(s: &str) -> String {
    let s = s.trim();
    let mut out: String = s.chars().take(1).flat_map(char::to_uppercase).chain(s.chars().skip(1)).collect();
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        too_large_or_unreadable(r.status(), &r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "22P02", "invalid path parameter").details(sentence(&r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "22023", "invalid query parameter").details(sentence(&r.body_text()))
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from_sqlx(&e)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_skus_from_detail() {
        let d = r#"SKU "TEE-BLK-M": requested 8, available 7. SKU "MUG-1": requested 2, available 1."#;
        assert_eq!(
            parse_short_skus(d),
            vec![
                ShortSku { sku: "TEE-BLK-M".into(), requested: 8, available: 7 },
                ShortSku { sku: "MUG-1".into(), requested: 2, available: 1 }
            ]
        );
        assert!(parse_short_skus("Something else.").is_empty());
    }

    #[test]
    fn statuses() {
        for (code, status) in [
            ("23514", 409),
            ("22023", 400),
            ("22P02", 400),
            ("22003", 400),
            ("23503", 409),
            ("23505", 409),
            ("P0002", 404),
            ("42501", 403),
            ("55P03", 503),
            ("40001", 503),
            ("40P01", 503),
            ("55000", 409),
            ("53200", 503),
            ("XX000", 500),
            ("0A000", 500),
        ] {
            assert_eq!(status_for_sqlstate(code).as_u16(), status, "{code}");
        }
    }

    #[test]
    fn table_matches_mapping() {
        for (code, status, _) in SQLSTATE_TABLE {
            if ["42704", "0A000", "54000", "XX000"].contains(code) {
                continue; // gateway-made errors, not mapped from the database
            }
            assert_eq!(status_for_sqlstate(code).as_u16(), *status, "{code}");
        }
    }

    #[test]
    fn data_errors() {
        assert_eq!(
            data_error_details("items[0].qty: invalid type: floating point `1.5`, expected i64 at line 1 column 38"),
            "Invalid type: floating point `1.5`, expected i64 at line 1 column 38 (in items[0].qty)."
        );
        assert_eq!(
            data_error_details("colour: unknown field `colour`, expected `name` at line 1 column 4"),
            "Unknown field `colour`, expected `name` at line 1 column 4."
        );
        assert_eq!(data_error_details("missing field `qty` at line 1 column 2"), "Missing field `qty` at line 1 column 2.");
    }

    #[test]
    fn sentences() {
        assert_eq!(sentence("unknown field `x`"), "Unknown field `x`.");
        assert_eq!(sentence("Done."), "Done.");
    }
}
