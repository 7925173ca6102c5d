//! The HTTP API: routes, the OpenAPI document generated from the handlers,
//! and the extractors that turn every malformed request into the error
//! contract's 4xx.

pub mod accounts;
pub mod catalog;
pub mod dashboard;
pub mod operations;
pub mod orders;
pub mod payments;
pub mod service;

use crate::error::{ApiError, ErrorBody, ShortSku, SQLSTATE_TABLE};
use crate::state::AppState;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "storefront HTTP API",
        description = "The storefront extension's SQL API over HTTP.",
        license(name = "MIT")
    ),
    tags(
        (name = "catalog", description = "Browsing the catalog (anyone) and changing it (catalog tokens)."),
        (name = "accounts", description = "Registering and logging in. Passwords are hashed with argon2id inside the database; the gateway never sees a hash."),
        (name = "orders", description = "Placing, reading, cancelling and following orders (customer tokens; operations tokens for every customer's)."),
        (name = "payments", description = "The payment provider's webhook, signed with HMAC-SHA256."),
        (name = "operations", description = "Shipping, delivery and the order pipeline (operations tokens)."),
        (name = "dashboard", description = "The live dashboard and its data (operations tokens)."),
        (name = "service", description = "Health, readiness, metrics and this document.")
    ),
    components(schemas(ErrorBody, ShortSku)),
    modifiers(&Conventions)
)]
pub struct ApiDoc;

/// Security scheme and the error table, added to the generated document.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut OpenApiDoc) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An HS256 token: a customer's from POST /auth/login, or a staff token (catalog, operations) \
                         minted with `storefront-gateway token --role ...`.",
                    ))
                    .build(),
            ),
        );
        let mut d = String::from(
            "The storefront extension's SQL API over HTTP, following PostgREST's conventions where they fit.\n\n\
             Each request runs in its own transaction under the database role of its caller — the app role \
             (anonymous or a customer token, with `storefront.customer_id` set for row-level security), the \
             catalog role or the operations role — so the database decides what each caller may do.\n\n\
             Errors have one shape, `{code, message, details, hint}`: the SQLSTATE and PostgreSQL's own message, \
             DETAIL and HINT. The status follows the SQLSTATE:\n\n| SQLSTATE | status | when |\n|---|---|---|\n",
        );
        for (code, status, when) in SQLSTATE_TABLE {
            d.push_str(&format!("| `{code}` | {status} | {when} |\n"));
        }
        doc.info.description = Some(d);
    }
}

/// The operations in the order the book presents (and runs the examples
/// of) them: a store is set up before it is browsed, an order placed
/// before it is paid, paid before it ships.
pub const BOOK_ORDER: &[&str] = &[
    "put_product",
    "set_sellable",
    "restock",
    "list_products",
    "get_product",
    "get_stock",
    "register",
    "login",
    "track_event",
    "place_order",
    "get_order",
    "order_timeline",
    "order_events",
    "cancel_order",
    "payment_webhook",
    "ship_order",
    "deliver_order",
    "pipeline",
    "dashboard_page",
    "dashboard_data",
    "dashboard_stream",
    "healthz",
    "readyz",
    "metrics",
    "openapi",
];

/// The API's routes and the document generated from them.
pub fn api_router() -> (axum::Router<AppState>, OpenApiDoc) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        // catalog: staff set up products first in the book's examples
        .routes(routes!(catalog::put_product))
        .routes(routes!(catalog::set_sellable))
        .routes(routes!(catalog::restock))
        .routes(routes!(catalog::list_products))
        .routes(routes!(catalog::get_product))
        .routes(routes!(catalog::get_stock))
        // accounts
        .routes(routes!(accounts::register))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::track_event))
        // orders
        .routes(routes!(orders::place_order))
        .routes(routes!(orders::get_order))
        .routes(routes!(orders::timeline))
        .routes(routes!(orders::events))
        .routes(routes!(orders::cancel))
        // payments
        .routes(routes!(payments::webhook))
        // operations
        .routes(routes!(operations::ship))
        .routes(routes!(operations::deliver))
        .routes(routes!(operations::pipeline))
        // dashboard
        .routes(routes!(dashboard::page))
        .routes(routes!(dashboard::data))
        .routes(routes!(dashboard::stream))
        // service
        .routes(routes!(service::healthz))
        .routes(routes!(service::readyz))
        .routes(routes!(service::metrics))
        .routes(routes!(service::openapi))
        .split_for_parts()
}

/// The OpenAPI document.
pub fn openapi() -> OpenApiDoc {
    api_router().1
}

/// The OpenAPI document as served at /openapi.json (built once).
pub fn openapi_json() -> Result<&'static str, String> {
    static DOC: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    DOC.get_or_init(|| openapi().to_pretty_json().map_err(|e| e.to_string())).as_deref().map_err(Clone::clone)
}

/// `Json<T>` whose rejections follow the error contract.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(r.into()),
        }
    }
}

/// `Path<T>` whose rejections follow the error contract.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(r) => Err(r.into()),
        }
    }
}

/// `Query<T>` whose rejections follow the error contract.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(r.into()),
        }
    }
}

/// A JSON body that may be left out entirely (no body, no content type).
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| ct.split(';').next())
            .map(str::trim)
            .is_some_and(|m| m.eq_ignore_ascii_case("application/json") || m.to_ascii_lowercase().ends_with("+json"));
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(ApiError::from)?;
        if bytes.is_empty() {
            return Ok(OptionalJson(None));
        }
        if !json_type {
            return Err(ApiError::not_json());
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(OptionalJson(Some(v))),
            Err(r) => Err(r.into()),
        }
    }
}

/// A JSON response from an already-encoded body (what the cache holds).
pub fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `X-Cache: hit | miss | bypass`.
pub fn with_cache_header(mut r: Response, lookup: &crate::cache::Lookup) -> Response {
    r.headers_mut().insert("x-cache", HeaderValue::from_static(lookup.header()));
    r
}

pub fn encode<T: serde::Serialize>(v: &T) -> Result<String, ApiError> {
    serde_json::to_string(v).map_err(|e| ApiError::internal("cannot encode the response").details(e.to_string()))
}

/// 401 without a token, else `Ok`.
pub fn require_token(caller: crate::auth::Caller) -> Result<(), ApiError> {
    if caller.is_anonymous() {
        return Err(ApiError::unauthorized("this needs a token")
            .hint("Log in with POST /auth/login and send Authorization: Bearer <token>."));
    }
    Ok(())
}

/// 403 unless the caller is operations staff.
pub fn require_operations(caller: crate::auth::Caller) -> Result<(), ApiError> {
    require_token(caller)?;
    if caller != crate::auth::Caller::Operations {
        return Err(ApiError::forbidden("this needs an operations token"));
    }
    Ok(())
}
