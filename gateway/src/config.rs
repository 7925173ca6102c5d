//! Configuration: every setting is a flag and an environment variable
//! (`STOREFRONT_GATEWAY_*`); secrets are best passed in the environment.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "storefront-gateway", version, about = "The storefront SQL API over HTTP")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP gateway
    Serve(Box<ServeArgs>),
    /// Print a signed staff token (catalog or operations) for the configured secret
    Token(TokenArgs),
    /// Print the OpenAPI document
    Openapi,
    /// Write the book's HTTP API reference page from the OpenAPI document
    Book(BookArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, env = "STOREFRONT_GATEWAY_LISTEN", default_value = "127.0.0.1:28830")]
    pub listen: SocketAddr,

    /// PostgreSQL URL of the gateway's login role (it switches to the app,
    /// catalog or operations role per request)
    #[arg(long, env = "STOREFRONT_GATEWAY_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Connections in the pool (plus one for LISTEN)
    #[arg(long, env = "STOREFRONT_GATEWAY_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,

    /// How long a request waits for a free connection (ms) before 503
    #[arg(long, env = "STOREFRONT_GATEWAY_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5000)]
    pub db_acquire_timeout_ms: u64,

    /// statement_timeout of each request's transaction (ms)
    #[arg(long, env = "STOREFRONT_GATEWAY_STATEMENT_TIMEOUT_MS", default_value_t = 10000)]
    pub statement_timeout_ms: u64,

    /// Attempts for a transaction that fails with 40001 or 40P01 before 503
    #[arg(long, env = "STOREFRONT_GATEWAY_TX_ATTEMPTS", default_value_t = 4)]
    pub tx_attempts: u32,

    /// Database role for customer-facing requests (set up with grant_app_role)
    #[arg(long, env = "STOREFRONT_GATEWAY_APP_ROLE", default_value = "storefront_app")]
    pub app_role: String,

    /// Database role for catalog tokens (grant_catalog_role)
    #[arg(long, env = "STOREFRONT_GATEWAY_CATALOG_ROLE", default_value = "storefront_catalog")]
    pub catalog_role: String,

    /// Database role for operations tokens (grant_operations_role)
    #[arg(long, env = "STOREFRONT_GATEWAY_OPERATIONS_ROLE", default_value = "storefront_operations")]
    pub operations_role: String,

    /// Redis URL for the read cache; without it the gateway reads the database every time
    #[arg(long, env = "STOREFRONT_GATEWAY_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Time to live of cached catalog and product reads (s)
    #[arg(long, env = "STOREFRONT_GATEWAY_CACHE_TTL_SECS", default_value_t = 30)]
    pub cache_ttl_secs: u64,

    /// Time to live of the cached dashboard (s)
    #[arg(long, env = "STOREFRONT_GATEWAY_DASHBOARD_TTL_SECS", default_value_t = 5)]
    pub dashboard_ttl_secs: u64,

    /// How stale catalog pages may get from orders moving stock (ms): order
    /// events invalidate the pages at most this often (a product's own
    /// entry is invalidated by every event that moves its stock)
    #[arg(long, env = "STOREFRONT_GATEWAY_LIST_STALENESS_MS", default_value_t = 2000)]
    pub list_staleness_ms: u64,

    /// Time limit of one Redis command (ms); past it the read goes to the database
    #[arg(long, env = "STOREFRONT_GATEWAY_REDIS_TIMEOUT_MS", default_value_t = 100)]
    pub redis_timeout_ms: u64,

    /// HS256 secret that signs and verifies tokens (at least 32 bytes)
    #[arg(long, env = "STOREFRONT_GATEWAY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,

    /// Lifetime of a login token (s)
    #[arg(long, env = "STOREFRONT_GATEWAY_TOKEN_TTL_SECS", default_value_t = 3600)]
    pub token_ttl_secs: u64,

    /// HMAC-SHA256 secret the payment provider signs webhooks with
    #[arg(long, env = "STOREFRONT_GATEWAY_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: String,

    /// How old a webhook's signed timestamp may be (s)
    #[arg(long, env = "STOREFRONT_GATEWAY_WEBHOOK_TOLERANCE_SECS", default_value_t = 300)]
    pub webhook_tolerance_secs: u64,

    /// Largest request body (bytes)
    #[arg(long, env = "STOREFRONT_GATEWAY_MAX_BODY_BYTES", default_value_t = 65536)]
    pub max_body_bytes: usize,

    /// Seconds between SSE keep-alive comments
    #[arg(long, env = "STOREFRONT_GATEWAY_SSE_KEEPALIVE_SECS", default_value_t = 15)]
    pub sse_keepalive_secs: u64,

    /// Directory of the dashboard page and its built JavaScript (scripts/gateway.sh builds it)
    #[arg(long, env = "STOREFRONT_GATEWAY_WEB_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/web"))]
    pub web_dir: PathBuf,

    /// Log format
    #[arg(long, env = "STOREFRONT_GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Seconds to wait for open requests at shutdown
    #[arg(long, env = "STOREFRONT_GATEWAY_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// catalog or operations
    #[arg(long)]
    pub role: String,
    /// Lifetime (s)
    #[arg(long, default_value_t = 86400)]
    pub ttl_secs: u64,
    /// The same secret the gateway verifies with
    #[arg(long, env = "STOREFRONT_GATEWAY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
}

#[derive(Args, Debug, Clone)]
pub struct BookArgs {
    /// Where to write reference.md
    #[arg(long, default_value = "book/src/http")]
    pub out: PathBuf,
}

impl ServeArgs {
    /// Settings for tests and tools that build a gateway in-process.
    pub fn for_database(database_url: &str, jwt_secret: &str, webhook_secret: &str) -> ServeArgs {
        ServeArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.to_string(),
            db_pool_size: 16,
            db_acquire_timeout_ms: 5000,
            statement_timeout_ms: 10000,
            tx_attempts: 4,
            app_role: "storefront_app".into(),
            catalog_role: "storefront_catalog".into(),
            operations_role: "storefront_operations".into(),
            redis_url: None,
            cache_ttl_secs: 30,
            dashboard_ttl_secs: 5,
            list_staleness_ms: 2000,
            redis_timeout_ms: 100,
            jwt_secret: jwt_secret.to_string(),
            token_ttl_secs: 3600,
            webhook_secret: webhook_secret.to_string(),
            webhook_tolerance_secs: 300,
            max_body_bytes: 65536,
            sse_keepalive_secs: 15,
            web_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/web")),
            log_format: LogFormat::Text,
            shutdown_grace_secs: 10,
        }
    }
}
