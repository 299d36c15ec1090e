//! What the accept loop knows about one connection, and the socket wrapper
//! and body wrappers that keep it up to date.
//!
//! Policy: on shutdown an idle HTTP/1 connection is closed only once it is
//! seen waiting for input with nothing received (hyper's own graceful
//! shutdown closes an idle connection at once, dropping a request whose
//! bytes are already in the socket or in the TLS buffers). A connection
//! closed while its last request body was left unread (a 413, an early
//! 4xx) lingers: the answer and a FIN go out, then up to
//! [`LINGER_BYTES`] are read and discarded for up to [`LINGER_TIME`], so a
//! client that sends its whole body before reading gets the answer instead
//! of a reset.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Most a closing connection reads and discards (nginx stops at its
/// `lingering_time` only; a byte bound as well keeps a fast uploader from
/// holding the connection for the whole time).
pub const LINGER_BYTES: usize = 4 * 1024 * 1024;
/// Longest a closing connection waits for the client to finish its upload
/// and close (nginx's `lingering_time` is 30 s; ours is within a default
/// shutdown grace several times over).
pub const LINGER_TIME: Duration = Duration::from_secs(5);

// Where an HTTP/1 connection stands between requests (`inflight == 0`).
/// A response just finished; hyper has not yet waited for more input.
const SETTLING: u8 = 0;
/// hyper waited for input and the socket had nothing: nothing is pending.
const IDLE: u8 = 1;
/// Bytes arrived after `IDLE`: a request has started arriving.
const ARRIVING: u8 = 2;

// What the last probe of the socket found (only probed during shutdown).
const UNPROBED: u8 = 0;
const EMPTY: u8 = 1;
const DATA: u8 = 2;

/// Shared by the socket wrapper, the request/response wrappers and the
/// connection's task.
#[derive(Debug, Default)]
pub struct ConnState {
    inflight: AtomicUsize,
    phase: AtomicU8,
    probing: AtomicBool,
    probe: AtomicU8,
    body_unread: AtomicBool,
    h2: AtomicBool,
}

impl ConnState {
    /// A request was handed to the service; the returned guard ends it.
    pub fn request_started(self: &Arc<Self>, version: hyper::Version) -> InFlight {
        if version == hyper::Version::HTTP_2 {
            self.h2.store(true, Relaxed);
        }
        self.body_unread.store(false, Relaxed);
        self.inflight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// The last request's body was dropped before its end (the connection
    /// cannot carry another request; it lingers on close).
    pub fn body_left_unread(&self) -> bool {
        self.body_unread.load(Relaxed)
    }

    /// The connection speaks h2 (negotiated by ALPN).
    pub fn set_h2(&self) {
        self.h2.store(true, Relaxed);
    }

    /// From now on, a read that would block also asks the kernel whether
    /// bytes are waiting (tokio's readiness may not have caught up yet).
    pub fn start_probing(&self) {
        self.probing.store(true, Relaxed);
    }

    /// Forgets the last probe, before the connection is polled again.
    pub fn reset_probe(&self) {
        self.probe.store(UNPROBED, Relaxed);
    }

    /// Whether graceful shutdown can start now without dropping a request
    /// that has arrived: h2 (its GOAWAY serves every stream already sent),
    /// a request in flight (keep-alive is disabled, it is answered, then
    /// the connection closes), or an HTTP/1 connection that just waited for
    /// input and found none, in hyper's buffers, TLS's or the kernel's.
    pub fn may_close_now(&self) -> bool {
        self.h2.load(Relaxed)
            || self.inflight.load(Relaxed) > 0
            || (self.phase.load(Relaxed) == IDLE && self.probe.load(Relaxed) == EMPTY)
    }

    fn on_bytes(&self) {
        if self.inflight.load(Relaxed) == 0 {
            let _ = self
                .phase
                .compare_exchange(IDLE, ARRIVING, Relaxed, Relaxed);
        }
    }

    fn on_would_block(&self, io: &TcpStream) {
        if self.probing.load(Relaxed) {
            let probe = match peek(io) {
                Some(true) => DATA,
                _ => EMPTY,
            };
            self.probe.store(probe, Relaxed);
        }
        if self.inflight.load(Relaxed) == 0 {
            let _ = self
                .phase
                .compare_exchange(SETTLING, IDLE, Relaxed, Relaxed);
        }
    }
}

/// Ends a request when the response body is done with (or dropped).
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Relaxed) == 1 {
            self.0.phase.store(SETTLING, Relaxed);
        }
    }
}

/// Whether the kernel holds unread bytes: `Some(true)` data, `Some(false)`
/// end of stream, `None` nothing (or an error).
fn peek(io: &TcpStream) -> Option<bool> {
    let mut byte = [MaybeUninit::uninit()];
    match socket2::SockRef::from(io).peek(&mut byte) {
        Ok(n) => Some(n > 0),
        Err(_) => None,
    }
}

/// The accepted socket, under TLS: records arrivals and waits, and lingers
/// on close (see the module policy).
#[derive(Debug)]
pub struct Watched {
    io: TcpStream,
    state: Arc<ConnState>,
    linger: Option<Linger>,
}

#[derive(Debug)]
struct Linger {
    deadline: Pin<Box<Sleep>>,
    discarded: usize,
}

impl Watched {
    /// Wraps an accepted socket; `state` is the connection's.
    pub fn new(io: TcpStream, state: Arc<ConnState>) -> Self {
        Self {
            io,
            state,
            linger: None,
        }
    }

    /// Reads and discards until the client closes, or a bound is reached.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(linger) = self.linger.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [MaybeUninit::<u8>::uninit(); 16 * 1024];
        loop {
            if linger.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::uninit(&mut scratch);
            match ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Ok(()) => {
                    linger.discarded += buf.filled().len();
                    if linger.discarded >= LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                // The client is gone: nothing left to protect.
                Err(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.state.on_bytes(),
            Poll::Pending => this.state.on_would_block(&this.io),
            _ => {}
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// Sends FIN, then lingers if the client may still be sending: closing
    /// with unread bytes makes the kernel answer them with a reset, which
    /// can destroy the answer before the client reads it.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            let unread = !this.state.h2.load(Relaxed) && this.state.body_unread.load(Relaxed);
            if !unread && peek(&this.io) != Some(true) {
                return Poll::Ready(Ok(()));
            }
            this.linger = Some(Linger {
                deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
                discarded: 0,
            });
        }
        this.poll_linger(cx)
    }
}

/// A request body that notes when it is dropped before its end (the
/// connection then lingers on close).
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    state: Arc<ConnState>,
    ended: bool,
}

impl RequestBody {
    /// Wraps a request's body; `state` is its connection's.
    pub fn new(inner: Incoming, state: Arc<ConnState>) -> Self {
        Self {
            inner,
            state,
            ended: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if !self.ended && !self.inner.is_end_stream() {
            self.state.body_unread.store(true, Relaxed);
        }
    }
}

/// A response body that ends its request's [`InFlight`] when it is done
/// with.
#[derive(Debug)]
pub struct ResponseBody<B> {
    inner: B,
    _inflight: InFlight,
}

impl<B> ResponseBody<B> {
    /// Wraps a response's body; the request ends when it is dropped.
    pub fn new(inner: B, inflight: InFlight) -> Self {
        Self {
            inner,
            _inflight: inflight,
        }
    }
}

impl<B: Body + Unpin> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::io::Write;

    use tokio::net::TcpListener;

    use super::*;

    /// Polls one read, once: no yield, so tokio's reactor does not run.
    async fn read_once(io: &mut Watched) -> Poll<usize> {
        let mut scratch = [0u8; 256];
        poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut scratch);
            Poll::Ready(
                Pin::new(&mut *io)
                    .poll_read(cx, &mut buf)
                    .map(|r| r.map(|()| buf.filled().len()).unwrap()),
            )
        })
        .await
    }

    #[tokio::test]
    async fn on_shutdown_a_request_that_tokio_has_not_seen_yet_keeps_the_connection_open() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let state = Arc::new(ConnState::default());
        let mut io = Watched::new(server, state.clone());

        assert!(read_once(&mut io).await.is_pending());
        state.start_probing();
        state.reset_probe();
        assert!(read_once(&mut io).await.is_pending());
        assert!(state.may_close_now(), "nothing received: it may close");

        // The bytes are in the kernel, but the reactor has not run since
        // the last read found nothing: tokio still says "not ready".
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        state.reset_probe();
        assert!(read_once(&mut io).await.is_pending());
        assert!(!state.may_close_now(), "a request is waiting in the socket");

        // Once read, it is arriving until it is dispatched.
        let n = loop {
            if let Poll::Ready(n) = read_once(&mut io).await {
                break n;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(n, 18);
        state.reset_probe();
        assert!(!state.may_close_now());
        let inflight = state.request_started(hyper::Version::HTTP_11);
        assert!(state.may_close_now(), "in flight: answered, then closed");
        drop(inflight);
        state.reset_probe();
        assert!(
            !state.may_close_now(),
            "settling until a read finds nothing"
        );
        assert!(read_once(&mut io).await.is_pending());
        assert!(state.may_close_now());
    }
}
