//! storefront-gateway: `serve` runs the HTTP gateway; `token` mints staff
//! tokens; `openapi` prints the document; `book` writes the book's HTTP API
//! reference from it.

use clap::Parser;
use std::process::ExitCode;
use storefront_gateway::auth::{Caller, Keys};
use storefront_gateway::config::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Token(t) => {
            let caller = match t.role.as_str() {
                "catalog" => Caller::Catalog,
                "operations" => Caller::Operations,
                other => {
                    eprintln!("error: --role must be catalog or operations, not {other:?} (customers log in)");
                    return ExitCode::from(2);
                }
            };
            let keys = match Keys::new(&t.jwt_secret, t.ttl_secs) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match keys.mint(caller, t.ttl_secs) {
                Ok((token, _)) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}", e.body.message);
                    ExitCode::FAILURE
                }
            }
        }
        Command::Openapi => match storefront_gateway::api::openapi_json() {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Book(b) => match storefront_gateway::book::write(&b.out) {
            Ok(path) => {
                println!("wrote {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn serve(args: storefront_gateway::config::ServeArgs) -> ExitCode {
    storefront_gateway::init_logging(args.log_format);
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %args.listen, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let running = match storefront_gateway::start(&args, listener, axum::Router::new()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = running.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing open requests");
        shutdown.cancel();
    });
    running.wait().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
