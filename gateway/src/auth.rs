//! Who is calling: a signed token (HS256 JWT) names a customer or a staff
//! role, and that decides the database role the request runs as — the
//! PostgREST model (JWT `role` claim → `SET LOCAL ROLE`), with the customer
//! id passed to row-level security as `storefront.customer_id`.
//!
//! Customers get tokens from `POST /auth/login`; staff tokens (catalog,
//! operations) are minted out of band with `storefront-gateway token`.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "storefront-gateway";

/// The token's claims.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// "customer:<id>" or the staff role
    pub sub: String,
    /// customer, catalog or operations
    pub role: String,
    /// the customer id (customer tokens only)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<i64>,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
}

/// The kinds of callers, each with its database role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// no token: browsing, registering, logging in (the app role, no customer)
    Anonymous,
    /// a logged-in customer (the app role, acting for this customer)
    Customer(i64),
    /// catalog staff (the catalog role)
    Catalog,
    /// operations staff (the operations role)
    Operations,
}

impl Caller {
    pub fn customer_id(&self) -> Option<i64> {
        match self {
            Caller::Customer(id) => Some(*id),
            _ => None,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Caller::Anonymous)
    }
}

#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub token_ttl_secs: u64,
}

impl Keys {
    pub fn new(secret: &str, token_ttl_secs: u64) -> Result<Keys, String> {
        if secret.len() < 32 {
            return Err("the JWT secret must have at least 32 bytes".into());
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        let bad = |e: jsonwebtoken::errors::Error| format!("unusable JWT secret: {e}");
        Ok(Keys {
            encoding: EncodingKey::from_secret(secret.as_bytes()).map_err(bad)?,
            decoding: DecodingKey::from_secret(secret.as_bytes()).map_err(bad)?,
            validation,
            token_ttl_secs,
        })
    }

    /// A token for `caller` valid for `ttl_secs`; returns it with its expiry (unix seconds).
    pub fn mint(&self, caller: Caller, ttl_secs: u64) -> Result<(String, i64), ApiError> {
        let now = chrono::Utc::now().timestamp();
        let exp = now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2));
        let (sub, role, customer_id) = match caller {
            Caller::Customer(id) => (format!("customer:{id}"), "customer", Some(id)),
            Caller::Catalog => ("catalog".to_string(), "catalog", None),
            Caller::Operations => ("operations".to_string(), "operations", None),
            Caller::Anonymous => return Err(ApiError::internal("cannot mint a token for an anonymous caller")),
        };
        let claims = Claims { sub, role: role.to_string(), customer_id, iss: ISSUER.to_string(), iat: now, exp };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map(|t| (t, exp))
            .map_err(|e| ApiError::internal("could not sign a token").details(e.to_string()))
    }

    /// The caller a token names; 401 for anything but a valid, unexpired,
    /// correctly signed token of a known role.
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            let why = match e.kind() {
                K::ExpiredSignature => "The token has expired.",
                K::InvalidSignature => "The token's signature does not match.",
                K::InvalidIssuer => "The token was not issued by this gateway.",
                K::InvalidAlgorithm => "The token is not signed with HS256.",
                _ => "The token is not a well-formed JWT with the required claims (sub, role, iss, exp).",
            };
            ApiError::unauthorized("invalid token").details(why).hint("Log in again with POST /auth/login.")
        })?;
        let c = data.claims;
        match (c.role.as_str(), c.customer_id) {
            ("customer", Some(id)) if c.sub == format!("customer:{id}") => Ok(Caller::Customer(id)),
            ("catalog", None) => Ok(Caller::Catalog),
            ("operations", None) => Ok(Caller::Operations),
            _ => Err(ApiError::unauthorized("invalid token")
                .details(format!("The token's role \"{}\" is not one this gateway knows.", c.role))),
        }
    }
}

fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(v) = parts.headers.get(axum::http::header::AUTHORIZATION) else { return Ok(None) };
    let v = v
        .to_str()
        .map_err(|_| ApiError::unauthorized("invalid authorization header").details("The header is not ASCII."))?;
    let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::unauthorized("invalid authorization header")
            .details("The Authorization header must be \"Bearer <token>\"."));
    }
    Ok(Some(token.trim()))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match bearer(parts)? {
            Some(t) => state.keys.verify(t),
            None => Ok(Caller::Anonymous),
        }
    }
}

/// The caller of an event stream: the Authorization header, or (because a
/// browser's EventSource cannot set headers) an `access_token` query
/// parameter. The access log never records query strings.
pub struct StreamCaller(pub Caller);

impl FromRequestParts<AppState> for StreamCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(t) = bearer(parts)? {
            return state.keys.verify(t).map(StreamCaller);
        }
        let token = axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|axum::extract::Query(mut q)| q.remove("access_token"));
        match token {
            Some(t) => state.keys.verify(&t).map(StreamCaller),
            None => Ok(StreamCaller(Caller::Anonymous)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip() {
        let k = Keys::new(SECRET, 60).unwrap();
        for c in [Caller::Customer(42), Caller::Catalog, Caller::Operations] {
            let (t, _) = k.mint(c, 60).unwrap();
            assert_eq!(k.verify(&t).unwrap(), c);
        }
    }

    #[test]
    fn rejects_other_secret_expired_and_garbage() {
        let k = Keys::new(SECRET, 60).unwrap();
        let other = Keys::new("another secret that is long enough!!", 60).unwrap();
        let (t, _) = other.mint(Caller::Customer(1), 60).unwrap();
        assert_eq!(k.verify(&t).unwrap_err().status.as_u16(), 401);
        assert_eq!(k.verify("not.a.token").unwrap_err().status.as_u16(), 401);
        // expired an hour ago
        let claims = Claims {
            sub: "customer:1".into(),
            role: "customer".into(),
            customer_id: Some(1),
            iss: ISSUER.into(),
            iat: 0,
            exp: chrono::Utc::now().timestamp() - 3600,
        };
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap()).unwrap();
        let e = k.verify(&t).unwrap_err();
        assert_eq!(e.body.details.as_deref(), Some("The token has expired."));
        // a customer claim whose sub names someone else
        let claims = Claims { sub: "customer:2".into(), exp: chrono::Utc::now().timestamp() + 60, ..claims };
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap()).unwrap();
        assert!(k.verify(&t).is_err());
    }

    #[test]
    fn short_secret_refused() {
        assert!(Keys::new("short", 60).is_err());
    }
}
