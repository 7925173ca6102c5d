//! Accounts: register and log in (argon2id stays in the database), and the
//! storefront's behavioural events (page views, carts).

use super::ApiJson;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    #[schema(example = "ada@example.com")]
    pub email: String,
    #[schema(example = "correct horse")]
    pub password: String,
    #[schema(example = "Ada Lovelace")]
    pub full_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    pub customer_id: i64,
}

/// Register a customer
///
/// `register_customer`: the password is hashed with argon2id inside the
/// database.
///
/// ```sh
/// curl -s -i -X POST "$GATEWAY/customers" -H 'Content-Type: application/json' \
///      -d '{"email": "ada@example.com", "password": "correct horse", "full_name": "Ada Lovelace"}'
/// ```
/// ```output
/// HTTP/1.1 201 Created
/// content-type: application/json
///
/// {"customer_id":1}
/// ```
///
/// ```sh
/// curl -s -X POST "$GATEWAY/customers" -H 'Content-Type: application/json' \
///      -d '{"email": "ada@example.com", "password": "again", "full_name": "Ada L"}'
/// ```
/// ```output
/// {"code":"23505","message":"email address is already registered","details":"Key (email)=(ada@example.com) already exists.","hint":"Sign in with authenticate(), or register with another address."}
/// ```
#[utoipa::path(
    post,
    path = "/customers",
    tag = "accounts",
    operation_id = "register",
    request_body = Registration,
    responses(
        (status = 201, description = "registered", body = Registered),
        (status = 400, description = "a malformed email, password or name (22023)", body = ErrorBody),
        (status = 409, description = "the email is taken (23505)", body = ErrorBody),
    )
)]
pub async fn register(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(r): ApiJson<Registration>,
) -> ApiResult<(StatusCode, axum::Json<Registered>)> {
    let id: i64 = st
        .db
        .run(caller, move |c| {
            let r = r.clone();
            Box::pin(async move {
                sqlx::query_scalar("SELECT storefront.register_customer($1, $2, $3)")
                    .bind(r.email)
                    .bind(r.password)
                    .bind(r.full_name)
                    .fetch_one(&mut *c)
                    .await
            })
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(Registered { customer_id: id })))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    #[schema(example = "ada@example.com")]
    pub email: String,
    #[schema(example = "correct horse")]
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenOut {
    /// send as `Authorization: Bearer <token>`
    pub token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// when the token stops working
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub customer_id: i64,
}

/// Log in
///
/// `authenticate`; returns a signed token (HS256) that carries the
/// customer id and expires.
///
/// ```sh
/// curl -s -X POST "$GATEWAY/auth/login" -H 'Content-Type: application/json' \
///      -d '{"email": "ada@example.com", "password": "correct horse"}'
/// ```
/// ```output
/// {"token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjdXN0b21lcjoxIn0.c2lnbmF0dXJl","token_type":"Bearer","expires_at":"2026-01-01T00:00:00Z","customer_id":1}
/// ```
///
/// The examples below keep it in `$TOKEN`:
///
/// ```sh
/// TOKEN=$(curl -s -X POST "$GATEWAY/auth/login" -H 'Content-Type: application/json' \
///         -d '{"email": "ada@example.com", "password": "correct horse"}' | jq -r .token)
/// ```
///
/// ```sh
/// curl -s -i -X POST "$GATEWAY/auth/login" -H 'Content-Type: application/json' \
///      -d '{"email": "ada@example.com", "password": "wrong"}'
/// ```
/// ```output
/// HTTP/1.1 401 Unauthorized
/// content-type: application/json
/// www-authenticate: Bearer
///
/// {"code":"28P01","message":"invalid email or password","details":null,"hint":null}
/// ```
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "accounts",
    operation_id = "login",
    request_body = Login,
    responses(
        (status = 200, description = "a token", body = TokenOut),
        (status = 401, description = "wrong email or password (28P01)", body = ErrorBody),
    )
)]
pub async fn login(State(st): State<AppState>, ApiJson(l): ApiJson<Login>) -> ApiResult<axum::Json<TokenOut>> {
    let id: Option<i64> = st
        .db
        .run(Caller::Anonymous, move |c| {
            let l = l.clone();
            Box::pin(async move {
                sqlx::query_scalar("SELECT storefront.authenticate($1, $2)")
                    .bind(l.email)
                    .bind(l.password)
                    .fetch_one(&mut *c)
                    .await
            })
        })
        .await?;
    let Some(id) = id else {
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "28P01", "invalid email or password");
        e.challenge = Some("Bearer");
        return Err(e);
    };
    let (token, exp) = st.keys.mint(Caller::Customer(id), st.keys.token_ttl_secs)?;
    let expires_at = chrono::DateTime::from_timestamp(exp, 0).unwrap_or_default();
    Ok(axum::Json(TokenOut { token, token_type: "Bearer".into(), expires_at, customer_id: id }))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackEvent {
    /// 1 to 64 lower-case letters, digits, '_' or '.': page_view, add_to_cart, ...
    #[schema(example = "page_view")]
    pub kind: String,
    /// a JSON object (default {}); anonymous visitors should carry a session id
    #[schema(value_type = Option<Object>)]
    pub props: Option<serde_json::Value>,
}

/// Record a storefront event
///
/// `track_event` at the current time, for the customer of the token (if
/// any): the page views and carts behind the dashboard's funnel.
///
/// ```sh
/// curl -s -i -X POST "$GATEWAY/events" -H 'Content-Type: application/json' \
///      -d '{"kind": "page_view", "props": {"path": "/products/TEE-BLK-M", "session": "s-1"}}'
/// ```
/// ```output
/// HTTP/1.1 202 Accepted
/// ```
#[utoipa::path(
    post,
    path = "/events",
    tag = "accounts",
    operation_id = "track_event",
    request_body = TrackEvent,
    responses(
        (status = 202, description = "recorded"),
        (status = 400, description = "a bad kind or props (22023)", body = ErrorBody),
    )
)]
pub async fn track_event(State(st): State<AppState>, caller: Caller, ApiJson(ev): ApiJson<TrackEvent>) -> ApiResult<StatusCode> {
    let customer = caller.customer_id();
    st.db
        .run(caller, move |c| {
            let ev = ev.clone();
            Box::pin(async move {
                // props left out take the function's default
                let q = match ev.props {
                    Some(p) => sqlx::query("SELECT storefront.track_event(kind => $1, customer_id => $2, props => $3)")
                        .bind(ev.kind)
                        .bind(customer)
                        .bind(p),
                    None => sqlx::query("SELECT storefront.track_event(kind => $1, customer_id => $2)")
                        .bind(ev.kind)
                        .bind(customer),
                };
                q.execute(&mut *c).await.map(|_| ())
            })
        })
        .await?;
    Ok(StatusCode::ACCEPTED)
}
