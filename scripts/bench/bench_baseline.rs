//! Baseline for `scripts/bench.sh`: a bare axum JSON handler behind the
//! gateway's own TLS accept loop (`callgate::http::serve::serve`, rustls,
//! self-signed certificate from `callgate::app::tls`), so that the difference to
//! the gateway is only the gateway's per-request work (middleware, auth,
//! limits, schema, durable insert).
//!
//! Usage: `bench_baseline <listen addr> <data dir>`
//!
//! The certificate is generated into `<data dir>/tls/` exactly like the
//! gateway does. Routes: `GET /healthz` and `POST /v1/triggers/{id}` (parses
//! the JSON body, answers 202 with a small JSON object). Prints the bound
//! address on stdout once listening; stops on SIGTERM or Ctrl-C.

// A benchmark tool: it prints its figures and stops at the first failure.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use callgate::http::serve::{ServeOptions, serve};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The same allocator as the `callgate` binary, so the comparison measures
/// the gateway's work and not the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_baseline <listen addr, e.g. 127.0.0.1:9443> <data dir>";
    let addr: SocketAddr = args
        .next()
        .ok_or_else(|| anyhow::anyhow!(usage))?
        .parse()
        .map_err(|e| anyhow::anyhow!("{usage}: bad address: {e}"))?;
    let data_dir = PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!(usage))?);

    let (cert, key) = callgate::app::tls::ensure_self_signed(&data_dir, &[])?;
    let tls = callgate::app::tls::load_files(&cert, &key)?;

    let accepted = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/triggers/{trigger_id}", post(accept))
        .with_state(accepted);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("{}", listener.local_addr()?);

    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    // The gateway's defaults (`[server]` in callgate.toml).
    let options = ServeOptions {
        max_connections: 10_000,
        handshake_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(5),
    };
    serve(listener, Some(tls), app, options, token).await;
    Ok(())
}

/// Parses the JSON body (axum's `Json` extractor: content type check and
/// serde_json parse) and answers 202 with a small JSON object.
async fn accept(
    State(accepted): State<Arc<AtomicU64>>,
    Path(trigger_id): Path<String>,
    Json(input): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let n = accepted.fetch_add(1, Ordering::Relaxed) + 1;
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "job_id": format!("bench-{n}"),
            "status": "queued",
            "trigger_id": trigger_id,
            "fields": input.as_object().map_or(0, |o| o.len()),
        })),
    )
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
