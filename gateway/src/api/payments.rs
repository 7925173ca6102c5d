//! The payment provider's webhook: signed with HMAC-SHA256, idempotent by
//! the provider's reference (record_payment is).

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

pub const SIGNATURE_HEADER: &str = "storefront-signature";

/// What the provider reports.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentEvent {
    pub order_id: i64,
    /// must equal the order's total
    pub amount_cents: i64,
    pub succeeded: bool,
    /// the provider's reference; a repeat of it changes nothing
    #[schema(example = "psp_3QfX1")]
    pub provider_ref: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct PaymentResult {
    pub order_id: i64,
    /// the order's status after the payment
    pub status: String,
    pub provider_ref: String,
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (several v1 while
/// secrets rotate): the value of the Storefront-Signature header.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail
    match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => format!("t={timestamp}"),
    }
}

/// Check a signature header against the body, in constant time, and that
/// its timestamp is within `tolerance` seconds of `now`.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance: u64) -> Result<(), ApiError> {
    let bad = |why: &str| {
        ApiError::unauthorized("invalid webhook signature")
            .details(why.to_string())
            .hint("Sign \"<t>.<body>\" with HMAC-SHA256 and send Storefront-Signature: t=<t>,v1=<hex>.")
    };
    let mut t: Option<i64> = None;
    let mut sigs: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.trim().parse().ok(),
            Some(("v1", v)) => {
                if let Ok(s) = hex::decode(v.trim()) {
                    sigs.push(s);
                }
            }
            _ => {}
        }
    }
    let Some(t) = t else { return Err(bad("The header has no timestamp (t=).")) };
    if sigs.is_empty() {
        return Err(bad("The header has no hex signature (v1=)."));
    }
    if now.abs_diff(t) > tolerance {
        return Err(bad("The signed timestamp is too far from the gateway's clock."));
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|_| ApiError::internal("bad webhook secret"))?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    for s in &sigs {
        if mac.clone().verify_slice(s).is_ok() {
            return Ok(());
        }
    }
    Err(bad("The signature does not match the body."))
}

/// Payment provider webhook
///
/// Verifies the `Storefront-Signature` header (HMAC-SHA256 over
/// `"<t>.<raw body>"` with the shared secret, timestamp within 5 minutes),
/// then records the payment for the order's customer with
/// `record_payment`. Providers retry webhooks: a repeat of the same
/// `provider_ref` returns the first answer and changes nothing.
///
/// ```sh
/// BODY='{"order_id": 1, "amount_cents": 4897, "succeeded": true, "provider_ref": "psp_3QfX1"}'
/// TS=$(date +%s)
/// SIG=$(printf '%s.%s' "$TS" "$BODY" | openssl dgst -sha256 -hmac "$WEBHOOK_SECRET" | sed 's/^.* //')
/// curl -s -X POST "$GATEWAY/payments/webhook" -H "Storefront-Signature: t=$TS,v1=$SIG" \
///      -H 'Content-Type: application/json' -d "$BODY"
/// ```
/// ```output
/// {"order_id":1,"status":"paid","provider_ref":"psp_3QfX1"}
/// ```
///
/// ```sh
/// curl -s -X POST "$GATEWAY/payments/webhook" -H "Storefront-Signature: t=$TS,v1=00ff" \
///      -H 'Content-Type: application/json' -d "$BODY"
/// ```
/// ```output
/// {"code":"28000","message":"invalid webhook signature","details":"The signature does not match the body.","hint":"Sign \"<t>.<body>\" with HMAC-SHA256 and send Storefront-Signature: t=<t>,v1=<hex>."}
/// ```
#[utoipa::path(
    post,
    path = "/payments/webhook",
    tag = "payments",
    operation_id = "payment_webhook",
    request_body = PaymentEvent,
    params(("Storefront-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">")),
    responses(
        (status = 200, description = "recorded (or a repeat of a recorded one)", body = PaymentResult),
        (status = 400, description = "a bad body or an amount that is not the total (22023)", body = ErrorBody),
        (status = 401, description = "a missing or wrong signature", body = ErrorBody),
        (status = 404, description = "no such order (P0002)", body = ErrorBody),
        (status = 409, description = "the order cannot take this payment (55000, 23505, 23514)", body = ErrorBody),
    )
)]
pub async fn webhook(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<axum::Json<PaymentResult>> {
    let sig = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("invalid webhook signature").details("The Storefront-Signature header is missing."))?;
    verify(&st.webhook_secret, sig, &body, chrono::Utc::now().timestamp(), st.webhook_tolerance_secs)?;
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !json_type {
        return Err(ApiError::not_json());
    }
    let ev: PaymentEvent = match axum::Json::<PaymentEvent>::from_bytes(&body) {
        Ok(axum::Json(v)) => v,
        Err(r) => return Err(r.into()),
    };
    let (order_id, reference) = (ev.order_id, ev.provider_ref.clone());
    let status: String = st
        .db
        .run(Caller::Anonymous, move |c| {
            let ev = ev.clone();
            Box::pin(async move {
                // act for the order's customer (row-level security), as its
                // own session would
                sqlx::query("SELECT set_config('storefront.customer_id', storefront.order_customer($1)::text, true)")
                    .bind(ev.order_id)
                    .execute(&mut *c)
                    .await?;
                sqlx::query_scalar("SELECT storefront.record_payment($1, $2, $3, $4)")
                    .bind(ev.order_id)
                    .bind(ev.amount_cents)
                    .bind(ev.succeeded)
                    .bind(ev.provider_ref)
                    .fetch_one(&mut *c)
                    .await
            })
        })
        .await?;
    Ok(axum::Json(PaymentResult { order_id, status, provider_ref: reference }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let secret = b"whsec_0123456789abcdef";
        let body = br#"{"order_id": 1}"#;
        let h = sign(secret, 1_000_000, body);
        assert!(verify(secret, &h, body, 1_000_010, 300).is_ok());
        // another body, another secret, too old, garbage
        assert!(verify(secret, &h, br#"{"order_id": 2}"#, 1_000_010, 300).is_err());
        assert!(verify(b"another secret!!", &h, body, 1_000_010, 300).is_err());
        assert!(verify(secret, &h, body, 1_000_301, 300).is_err());
        assert!(verify(secret, "v1=zz", body, 1_000_000, 300).is_err());
        assert!(verify(secret, "", body, 1_000_000, 300).is_err());
        // rotation: any v1 may match
        let good = h.split("v1=").nth(1).unwrap();
        assert!(verify(secret, &format!("t=1000000,v1=00,v1={good}"), body, 1_000_000, 300).is_ok());
    }
}
