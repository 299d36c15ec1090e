//! The accept loop: TLS (or plain HTTP when configured), HTTP/1.1 and h2,
//! peer addresses for the limiter, graceful shutdown.
//!
//! Policy: at most `server.max_connections` connections are served at once
//! (further ones wait in the kernel backlog); a client gets
//! `server.handshake_timeout` to finish TLS and send its request headers. On
//! shutdown the listener closes first; in-flight requests finish, and so do
//! requests already received on idle keep-alive connections (answered with
//! `Connection: close`); a request that has started arriving gets the rest
//! of `server.handshake_timeout`; idle connections with nothing received are
//! closed; all of it bounded by `server.shutdown_grace`. A connection closed
//! with its request body unread lingers briefly so the client can read the
//! answer (see [`tracking`]).

mod tracking;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use tracking::{ConnState, RequestBody, ResponseBody, Watched};

/// Listener settings taken from the config.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    options: ServeOptions,
    shutdown: CancellationToken,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.handshake_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);
    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));

    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        let handshake_timeout = options.handshake_timeout;
        connections.spawn(async move {
            let _permit = permit;
            let state = Arc::new(ConnState::default());
            let stream = Watched::new(stream, state.clone());
            let conn = Conn {
                peer,
                state,
                shutdown,
                partial_wait: handshake_timeout,
            };
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                                conn.state.set_h2();
                            }
                            conn.serve(tls, app, &builder).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => conn.serve(stream, app, &builder).await,
            }
        });
    }
    drop(listener);
    connections.close();
    tracing::info!("listener closed; draining connections");
    if tokio::time::timeout(options.shutdown_grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?options.shutdown_grace, "connections still open after the shutdown grace period");
    }
}

/// One accepted connection.
struct Conn {
    peer: SocketAddr,
    state: Arc<ConnState>,
    shutdown: CancellationToken,
    /// How long, once shutdown starts, a request that has started arriving
    /// may take to arrive whole.
    partial_wait: Duration,
}

impl Conn {
    async fn serve<I>(self, io: I, mut app: Router, builder: &Builder<TokioExecutor>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            peer,
            state,
            shutdown,
            partial_wait,
        } = self;
        let tracked = state.clone();
        let service = tower::service_fn(move |req: hyper::Request<Incoming>| {
            let inflight = tracked.request_started(req.version());
            let http1 = req.version() < hyper::Version::HTTP_2;
            let mut req =
                req.map(|body| axum::body::Body::new(RequestBody::new(body, tracked.clone())));
            req.extensions_mut().insert(ConnectInfo(peer));
            let response = app.call(req);
            let tracked = tracked.clone();
            async move {
                let mut response = response.await?;
                // Answered without reading the whole body (a 401 or 429
                // before the upload): hyper cannot reuse the connection, so
                // say so, or a client may send its next request into a
                // connection that is being closed.
                if http1 && tracked.body_left_unread() {
                    response.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| ResponseBody::new(body, inflight)),
                )
            }
        });
        let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        let mut conn = pin!(conn);
        let mut cancelled = pin!(shutdown.cancelled());
        // Set once shutdown starts: until when a request may keep arriving.
        let mut stopping: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut closing = false;
        let ended = poll_fn(|cx| {
            loop {
                if stopping.is_none() && cancelled.as_mut().poll(cx).is_ready() {
                    state.start_probing();
                    stopping = Some(Box::pin(tokio::time::sleep(partial_wait)));
                }
                if stopping.is_some() && !closing {
                    state.reset_probe();
                }
                if let Poll::Ready(ended) = conn.as_mut().poll(cx) {
                    return Poll::Ready(ended);
                }
                let Some(deadline) = stopping.as_mut().filter(|_| !closing) else {
                    return Poll::Pending;
                };
                // hyper's own graceful shutdown closes an idle HTTP/1
                // connection at once, even with a request waiting unread in
                // the socket: start it only once nothing can be lost.
                if state.may_close_now() || deadline.as_mut().poll(cx).is_ready() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    continue;
                }
                return Poll::Pending;
            }
        })
        .await;
        if let Err(e) = ended {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
