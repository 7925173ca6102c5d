//! One transaction per request, under the caller's database role.
//!
//! The gateway logs in as one role (the authenticator, `NOINHERIT`: it has
//! no privileges of its own) and each request's transaction begins by
//! switching to the app, catalog or operations role (`SET LOCAL ROLE`, as
//! `set_config('role', ..., true)`) and, for a customer, setting
//! `storefront.customer_id` for the extension's row-level security — in the
//! one round trip that sends `BEGIN`. Only the role name (from the
//! configuration, quoted) and the customer id (an integer from a verified
//! token) are put into that text. Each connection gets the request
//! `statement_timeout` once, when it connects.
//!
//! 40001 and 40P01 are the caller's to retry (see the book's Errors page):
//! the whole transaction runs again, a bounded number of times, with
//! jittered back-off; what the closure does must be safe to repeat (it is
//! SQL inside the transaction, rolled back on failure).

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use futures_util::future::BoxFuture;
use rand::Rng;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Roles {
    pub app: String,
    pub catalog: String,
    pub operations: String,
}

#[derive(Clone)]
pub struct Db {
    pub pool: PgPool,
    pub roles: Roles,
    pub attempts: u32,
}

/// `"name"`, with embedded quotes doubled (PostgreSQL's quote_ident).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with embedded quotes doubled (PostgreSQL's quote_literal
/// for standard_conforming_strings).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The one round trip that opens a request's transaction: BEGIN, then the
/// role (`set_config('role', ..., true)` is `SET LOCAL ROLE`) and the acting
/// customer in one SELECT. Only a role name from the configuration (quoted)
/// and an integer from a verified token are put into the text.
pub fn begin_statement(role: &str, customer: Option<i64>) -> String {
    let role = quote_literal(role);
    match customer {
        Some(id) => format!("BEGIN; SELECT set_config('role', {role}, true), set_config('storefront.customer_id', '{id}', true)"),
        None => format!("BEGIN; SELECT set_config('role', {role}, true)"),
    }
}

/// The SQLSTATE of a database error.
pub fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error().and_then(|d| d.code()).map(|c| c.to_string())
}

/// The database a URL names (PostgreSQL's default: the user name).
pub fn database_name(url: &str) -> Result<String, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?;
    Ok(opts.get_database().unwrap_or(opts.get_username()).to_string())
}

/// The gateway's pool: connections named `storefront-gateway`, each with
/// the request statement_timeout set once, when it connects.
pub fn connect_pool(url: &str, size: u32, acquire_timeout: Duration, statement_timeout_ms: u64) -> Result<PgPool, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?
        .application_name("storefront-gateway")
        .options([("statement_timeout", statement_timeout_ms.to_string())]);
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .connect_lazy_with(opts))
}

impl Db {
    pub fn role_for(&self, caller: Caller) -> &str {
        match caller {
            Caller::Anonymous | Caller::Customer(_) => &self.roles.app,
            Caller::Catalog => &self.roles.catalog,
            Caller::Operations => &self.roles.operations,
        }
    }

    /// The statement that opens a request's transaction.
    pub fn begin_sql(&self, caller: Caller) -> String {
        begin_statement(self.role_for(caller), caller.customer_id())
    }

    /// Run `f` in a transaction as `caller`, retrying serialization
    /// failures and deadlocks; database errors become [`ApiError`]s by
    /// their SQLSTATE.
    pub async fn run<T, F>(&self, caller: Caller, mut f: F) -> ApiResult<T>
    where
        T: Send,
        F: for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send,
    {
        let begin = self.begin_sql(caller);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let res: Result<T, sqlx::Error> = async {
                let mut tx = self.pool.begin_with(begin.clone()).await?;
                let v = f(&mut tx).await?;
                tx.commit().await?;
                Ok(v)
            }
            .await;
            let e = match res {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let code = sqlstate(&e);
            let retryable = matches!(code.as_deref(), Some("40001") | Some("40P01"));
            if retryable && attempt < self.attempts.max(1) {
                metrics::counter!("storefront_gateway_tx_retries_total", "sqlstate" => code.clone().unwrap_or_default())
                    .increment(1);
                // 5, 10, 20, ... ms, each with up to 100% jitter
                let base = 5u64.saturating_mul(1u64 << attempt.min(8));
                let wait = base + rand::thread_rng().gen_range(0..=base);
                tracing::debug!(attempt, sqlstate = ?code, wait_ms = wait, "retrying transaction");
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
            let mut err = ApiError::from_sqlx(&e);
            if retryable {
                err = err
                    .details(format!(
                        "The transaction failed with SQLSTATE {} on each of {} attempts.",
                        code.unwrap_or_default(),
                        attempt
                    ))
                    .hint("Retry the request.");
            }
            if err.code() == "42501" && caller.is_anonymous() {
                // as PostgREST: anonymous is 401 (a token may help), the
                // SQLSTATE stays the database's
                err.status = axum::http::StatusCode::UNAUTHORIZED;
                err.challenge = Some("Bearer");
                err.body.hint = Some("This needs a token: log in with POST /auth/login, or use a staff token.".into());
            }
            return Err(err);
        }
    }

    /// Checks at start-up that the login role can take each role.
    pub async fn check_roles(&self) -> Result<(), String> {
        for (caller, what) in [(Caller::Anonymous, "app"), (Caller::Catalog, "catalog"), (Caller::Operations, "operations")] {
            let role = self.role_for(caller).to_string();
            self.run(caller, |c| {
                Box::pin(async move { sqlx::query("SELECT 1").execute(&mut *c).await.map(|_| ()) })
            })
            .await
            .map_err(|e| {
                format!(
                    "cannot act as the {what} role \"{role}\": {} ({}); create the roles and grant them \
                     (scripts/gateway.sh: gateway_roles)",
                    e.body.message, e.body.code
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("storefront_app"), "\"storefront_app\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(
            begin_statement("storefront_app", Some(42)),
            "BEGIN; SELECT set_config('role', 'storefront_app', true), set_config('storefront.customer_id', '42', true)"
        );
        assert_eq!(begin_statement("o'brien", None), "BEGIN; SELECT set_config('role', 'o''brien', true)");
    }
}
