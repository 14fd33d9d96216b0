//! Listeners: accept loops for the TLS and plain ports and the life of every connection. A connection with no
//! request in flight is closed once `Limits::idle_timeout` has passed since it was accepted (TLS handshake and
//! HTTP version sniffing included) or since its last response, over HTTP/1 and HTTP/2 alike; each listener holds
//! at most `Limits::max_connections`, and when it is full, or the process is out of file descriptors, the
//! connection idle the longest of the client address holding the most is closed to make room (one with a request
//! in flight never is). hyper's own header
//! limits sit well above ours so that the router answers oversized heads with a `Status`. Shutdown lets in-flight
//! requests finish.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::Limits;
use crate::auth::ClientChain;
use crate::domain::connections::{self as rules, Backoff, Candidate, IdleCheck, WarnEvery};
use crate::telemetry::Telemetry;

/// How long a client may take to finish the TLS handshake (the idle timeout, if shorter, applies instead).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection told to close with nothing in flight may take to go: HTTP/1 goes at once, HTTP/2 is sent
/// GOAWAY and a PING first (one round trip). Short, because under file-descriptor pressure the accept loop waits
/// for it. One told to close mid-request gets the request timeout on top.
const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// Backoff of the accept loop after an error that closing a connection cannot fix.
const BACKOFF_MIN_MILLIS: u64 = 10;
const BACKOFF_MAX_MILLIS: u64 = 1_000;
/// Pause after closing a connection to free a file descriptor: its task releases the socket when it next runs.
const ROOM_PAUSE: Duration = Duration::from_millis(1);
/// At most one accept-error warning per listener per this interval; the counter has every one.
const WARN_INTERVAL_MILLIS: u64 = 10_000;
/// hyper's parser limits are this many times ours, so heads between the two reach the router and get a 431
/// `Status`; past hyper's, hyper itself answers a bare 431 and closes the connection.
const PARSER_HEADROOM: usize = 4;
/// Least request-head buffer given to hyper.
const MIN_PARSER_HEAD_BYTES: usize = 64 * 1024;

/// Labels of the per-listener connection metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `secure` or `metrics`.
    pub server: &'static str,
}

/// Labels of idle connections closed by the server.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdleCloseLabels {
    /// Which listener.
    pub server: &'static str,
    /// `timeout` (idle for the whole idle timeout) or `pressure` (closed to make room: listener full, or out of
    /// file descriptors).
    pub cause: &'static str,
}

/// Labels of failed accepts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcceptErrorLabels {
    /// Which listener.
    pub server: &'static str,
    /// `fd_limit` (EMFILE/ENFILE: out of file descriptors) or `other`.
    pub kind: &'static str,
}

/// Connection gauges and counters of both listeners.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    /// Open connections.
    pub open: Family<ListenerLabels, Gauge>,
    /// Connections closed because they were idle.
    pub idle_closed: Family<IdleCloseLabels, Counter>,
    /// Connections closed at once because the listener was full and every connection had a request in flight.
    pub refused: Family<ListenerLabels, Counter>,
    /// Failed accepts.
    pub accept_errors: Family<AcceptErrorLabels, Counter>,
}

impl ConnectionMetrics {
    /// Creates the families and registers them.
    pub fn registered(telemetry: &Telemetry) -> Self {
        let metrics = ConnectionMetrics::default();
        telemetry.register(
            "http_open_connections",
            "Open connections, by listener",
            metrics.open.clone(),
        );
        telemetry.register(
            "http_idle_connections_closed",
            "Connections closed for having no request in flight, by listener and cause (timeout: the idle timeout \
             passed; pressure: closed to make room, the listener being full or file descriptors exhausted)",
            metrics.idle_closed.clone(),
        );
        telemetry.register(
            "http_connections_refused",
            "Connections closed on accept because the listener was full and none of its connections was idle",
            metrics.refused.clone(),
        );
        telemetry.register(
            "http_accept_errors",
            "Failed accepts, by listener and kind (fd_limit: out of file descriptors)",
            metrics.accept_errors.clone(),
        );
        metrics
    }

    /// Creates every series of `server` at zero, so dashboards and alerts see them before the first event.
    fn touch(&self, server: &'static str) {
        // `get_or_create` hands back a read guard on the family: drop each at once.
        let _ = self.open.get_or_create(&ListenerLabels { server });
        let _ = self.refused.get_or_create(&ListenerLabels { server });
        for cause in ["timeout", "pressure"] {
            let _ = self
                .idle_closed
                .get_or_create(&IdleCloseLabels { server, cause });
        }
        for kind in ["fd_limit", "other"] {
            let _ = self
                .accept_errors
                .get_or_create(&AcceptErrorLabels { server, kind });
        }
    }
}

/// The open connections of the listeners that share it (both, in `serve` and `demo`), so that running out of file
/// descriptors on one port can be relieved by closing an idle connection of either. Cheap to clone.
#[derive(Clone, Default)]
pub struct Connections {
    inner: Arc<Shared>,
}

struct Shared {
    epoch: Instant,
    metrics: ConnectionMetrics,
    // A std mutex: held for map updates and a scan, never across `.await`.
    table: Mutex<Table>,
    gone: Notify,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            epoch: Instant::now(),
            metrics: ConnectionMetrics::default(),
            table: Mutex::default(),
            gone: Notify::new(),
        }
    }
}

#[derive(Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// Entries per listener, closing ones included.
    totals: HashMap<&'static str, usize>,
}

struct Entry {
    server: &'static str,
    /// The client's address: room is made by the address holding the most connections.
    peer: Option<IpAddr>,
    conn: Arc<ConnState>,
}

/// What a connection's task and the room-making rule share about it.
struct ConnState {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when it last became idle.
    idle_since: AtomicU64,
    closing: AtomicBool,
    close: CancellationToken,
}

impl ConnState {
    fn now_millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn candidate(&self, key: u64, peer: Option<IpAddr>) -> Candidate<u64> {
        Candidate {
            key,
            peer,
            in_flight: self.in_flight.load(Ordering::Acquire),
            idle_since: self.idle_since.load(Ordering::Acquire),
            closing: self.closing.load(Ordering::Acquire),
        }
    }

    /// Marks the connection closing; true for the one caller that did it first.
    fn begin_close(&self) -> bool {
        !self.closing.swap(true, Ordering::AcqRel)
    }

    /// A request starts; the returned guard ends it when dropped (response produced, or request abandoned).
    fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // Idle-since first, so whoever sees the count drop to zero sees the fresh time.
        self.0
            .idle_since
            .store(self.0.now_millis(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.lock().entries.len();
        f.debug_struct("Connections").field("open", &open).finish()
    }
}

/// A connection's place in the table; leaving it (drop) removes the entry.
struct Registered {
    connections: Connections,
    id: u64,
    server: &'static str,
    conn: Arc<ConnState>,
}

impl Registered {
    /// Tells the connection to close for having been idle (`cause` as in [`IdleCloseLabels`]).
    fn close_idle(&self, cause: &'static str) {
        close_idle(self.connections.metrics(), self.server, &self.conn, cause);
    }
}

/// Tells `conn` to close for being idle, counting it under `cause` unless it was already closing.
fn close_idle(
    metrics: &ConnectionMetrics,
    server: &'static str,
    conn: &ConnState,
    cause: &'static str,
) {
    if conn.begin_close() {
        metrics
            .idle_closed
            .get_or_create(&IdleCloseLabels { server, cause })
            .inc();
    }
    conn.close.cancel();
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.remove(self.id, self.server);
    }
}

impl Connections {
    /// An empty table whose gauges and counters are registered with `telemetry`.
    pub fn new(telemetry: &Telemetry) -> Self {
        Connections {
            inner: Arc::new(Shared {
                metrics: ConnectionMetrics::registered(telemetry),
                ..Shared::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.inner
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn metrics(&self) -> &ConnectionMetrics {
        &self.inner.metrics
    }

    /// Registers a new connection of `server` from `peer`; if the listener is full, closes one of its idle
    /// connections first ([`rules::longest_idle`]), and if none is idle, refuses (`None`).
    fn admit(
        &self,
        server: &'static str,
        max_connections: usize,
        peer: Option<IpAddr>,
    ) -> Option<Registered> {
        let mut table = self.lock();
        let total = table.totals.get(server).copied().unwrap_or(0);
        // Only a listener near its cap pays for a scan.
        if total >= max_connections {
            let open = table
                .entries
                .values()
                .filter(|e| e.server == server && !e.conn.closing.load(Ordering::Acquire))
                .count();
            if !rules::has_room(open, max_connections) {
                let made_room = self.close_longest_idle(&table, |e| e.server == server);
                if !made_room {
                    drop(table);
                    self.metrics()
                        .refused
                        .get_or_create(&ListenerLabels { server })
                        .inc();
                    return None;
                }
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let conn = Arc::new(ConnState {
            epoch: self.inner.epoch,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now_millis()),
            closing: AtomicBool::new(false),
            close: CancellationToken::new(),
        });
        table.entries.insert(
            id,
            Entry {
                server,
                peer,
                conn: conn.clone(),
            },
        );
        *table.totals.entry(server).or_default() += 1;
        drop(table);
        self.metrics()
            .open
            .get_or_create(&ListenerLabels { server })
            .inc();
        Some(Registered {
            connections: self.clone(),
            id,
            server,
            conn,
        })
    }

    fn now_millis(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    /// Out of file descriptors: closes the connection idle the longest on any listener. False if none is idle,
    /// or if an idle connection told to close is still open: its descriptor is on its way back (within
    /// [`CLOSE_GRACE`]), and closing another on every retry of the failing accept would claim victim after victim
    /// until no idle connection was left; the accept loop backs off meanwhile.
    fn make_room_anywhere(&self) -> bool {
        let table = self.lock();
        if table.entries.values().any(|e| {
            e.conn.closing.load(Ordering::Acquire) && e.conn.in_flight.load(Ordering::Acquire) == 0
        }) {
            return false;
        }
        self.close_longest_idle(&table, |_| true)
    }

    /// Closes the connection idle the longest among the entries `which` selects, to make room; false if none of
    /// them is idle.
    fn close_longest_idle(&self, table: &Table, which: impl Fn(&Entry) -> bool) -> bool {
        let candidates = table
            .entries
            .iter()
            .filter(|(_, e)| which(e))
            .map(|(id, e)| e.conn.candidate(*id, e.peer));
        match rules::longest_idle(candidates).and_then(|id| table.entries.get(&id)) {
            Some(entry) => {
                close_idle(self.metrics(), entry.server, &entry.conn, "pressure");
                true
            }
            None => false,
        }
    }

    fn remove(&self, id: u64, server: &'static str) {
        let mut table = self.lock();
        if table.entries.remove(&id).is_some()
            && let Some(total) = table.totals.get_mut(server)
        {
            *total = total.saturating_sub(1);
        }
        drop(table);
        self.metrics()
            .open
            .get_or_create(&ListenerLabels { server })
            .dec();
        self.inner.gone.notify_waiters();
    }

    fn open(&self, server: &'static str) -> usize {
        self.lock().totals.get(server).copied().unwrap_or(0)
    }

    /// Tells every connection of `server` to finish and close, and waits until they have, for at most `limit`.
    async fn drain(&self, server: &'static str, limit: Duration) -> bool {
        for entry in self.lock().entries.values().filter(|e| e.server == server) {
            entry.conn.close.cancel();
        }
        let wait = async {
            loop {
                let gone = self.inner.gone.notified();
                tokio::pin!(gone);
                gone.as_mut().enable();
                if self.open(server) == 0 {
                    return;
                }
                gone.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// Where the TLS listener gets its configuration: asked once per accepted connection, so a reloaded certificate
/// applies to new connections while open ones keep the one they were accepted with.
pub trait TlsConfigSource: Send + Sync + 'static {
    /// The configuration for the next handshake.
    fn current(&self) -> Arc<rustls::ServerConfig>;
}

/// A fixed configuration.
impl TlsConfigSource for Arc<rustls::ServerConfig> {
    fn current(&self) -> Arc<rustls::ServerConfig> {
        self.clone()
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` completes.
pub async fn serve_tls(
    listener: TcpListener,
    tls: impl TlsConfigSource,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    serve(listener, Some(Arc::new(tls)), router, limits, shutdown).await
}

/// Serves `router` over plain HTTP on `listener` until `shutdown` completes.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    serve(listener, None, router, limits, shutdown).await
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let parser_head_bytes = limits
        .max_header_bytes
        .saturating_mul(PARSER_HEADROOM)
        .max(MIN_PARSER_HEAD_BYTES);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The idle watchdog closes (and counts) a connection that has not delivered a whole request head within the
        // idle timeout. hyper's own head timer (30 s unless set) is only a backstop: set later, so it neither cuts
        // HTTP/1 shorter than HTTP/2 nor races the watchdog.
        .header_read_timeout(limits.idle_timeout + CLOSE_GRACE)
        .max_buf_size(parser_head_bytes)
        .max_headers(limits.max_headers.saturating_mul(PARSER_HEADROOM));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(parser_head_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Accept errors that mean the process (or system) is out of file descriptors: EMFILE and ENFILE, the same
/// numbers on Linux and the BSDs.
fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(23 | 24))
}

/// Errors about one connection that died in the backlog; the next accept is unaffected.
fn per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn serve(
    listener: TcpListener,
    tls: Option<Arc<dyn TlsConfigSource>>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let server: &'static str = if tls.is_some() { "secure" } else { "metrics" };
    let connections = limits.connections.clone();
    connections.metrics().touch(server);
    let builder = builder(&limits);
    let mut backoff = Backoff::new(BACKOFF_MIN_MILLIS, BACKOFF_MAX_MILLIS);
    let mut warn = WarnEvery::new(WARN_INTERVAL_MILLIS);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) if per_connection(&error) => continue,
                Err(error) => {
                    let fd_limit = out_of_descriptors(&error);
                    let kind = if fd_limit { "fd_limit" } else { "other" };
                    connections.metrics().accept_errors.get_or_create(&AcceptErrorLabels { server, kind }).inc();
                    // Out of descriptors with an idle connection to spare: close it and retry at once. Otherwise
                    // back off, so a persistent error neither spins nor floods the log.
                    let made_room = fd_limit && connections.make_room_anywhere();
                    if let Some(suppressed) = warn.hit(connections.now_millis()) {
                        tracing::warn!(
                            %error, server, made_room, suppressed,
                            "accept failed (made_room: an idle connection was closed to free a descriptor; \
                             suppressed: like warnings held back since the last one)"
                        );
                    }
                    let pause = if made_room {
                        ROOM_PAUSE
                    } else {
                        Duration::from_millis(backoff.next_delay())
                    };
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        backoff.reset();
        let Some(registered) = connections.admit(server, limits.max_connections, Some(peer.ip()))
        else {
            tracing::debug!(%peer, server, "connection refused: listener full and no connection idle");
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The configuration in force now: a certificate rotated since the last accept applies from here on.
        let tls = tls
            .as_ref()
            .map(|source| TlsAcceptor::from(source.current()));
        tokio::spawn(connection(
            stream,
            tls,
            router.clone(),
            builder.clone(),
            registered,
            limits.clone(),
        ));
    }
    drop(listener);
    if !connections.drain(server, DRAIN_TIMEOUT).await {
        tracing::warn!(
            server,
            "connections still open after {DRAIN_TIMEOUT:?}; closing"
        );
    }
    Ok(())
}

async fn connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    registered: Registered,
    limits: Limits,
) {
    let peer = stream.peer_addr().ok();
    let Some(acceptor) = tls else {
        return http(stream, None, router, &builder, &registered, &limits).await;
    };
    let handshake_limit = HANDSHAKE_TIMEOUT.min(limits.idle_timeout);
    tokio::select! {
        handshake = tokio::time::timeout(handshake_limit, acceptor.accept(stream)) => match handshake {
            Ok(Ok(stream)) => {
                // The client's certificate chain, if it sent one, goes with each request for the authenticator.
                let chain = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .filter(|certs| !certs.is_empty())
                    .map(|certs| {
                        Arc::new(ClientChain::new(
                            certs.iter().map(|c| c.clone().into_owned()).collect(),
                        ))
                    });
                http(stream, chain, router, &builder, &registered, &limits).await
            }
            Ok(Err(error)) => tracing::debug!(?peer, %error, "TLS handshake failed"),
            Err(_) => {
                // Silent through the handshake: an idle connection like any other.
                registered.close_idle("timeout");
                tracing::debug!(?peer, "TLS handshake timed out");
            }
        },
        () = registered.conn.close.cancelled() => tracing::debug!(?peer, "closed during the TLS handshake"),
    }
}

/// Serves HTTP on one connection under its idle watchdog.
async fn http<S>(
    stream: S,
    chain: Option<Arc<ClientChain>>,
    router: Router,
    builder: &auto::Builder<TokioExecutor>,
    registered: &Registered,
    limits: &Limits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = registered.conn.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let in_flight = state.begin_request();
        if let Some(chain) = &chain {
            request.extensions_mut().insert(chain.clone());
        }
        let response = router.clone().oneshot(request);
        async move {
            let response = response.await;
            drop(in_flight);
            response
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let state = &registered.conn;
    let timeout = limits.idle_timeout.as_millis() as u64;
    let mut close_by: Option<Instant> = None;
    loop {
        let recheck = match rules::idle_check(
            state.in_flight.load(Ordering::Acquire),
            state.idle_since.load(Ordering::Acquire),
            state.now_millis(),
            timeout,
        ) {
            IdleCheck::Close => {
                if close_by.is_none() {
                    registered.close_idle("timeout");
                }
                None
            }
            IdleCheck::RecheckAt(at) => state.epoch.checked_add(Duration::from_millis(at)),
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = state.close.cancelled(), if close_by.is_none() => {
                conn.as_mut().graceful_shutdown();
                let busy = state.in_flight.load(Ordering::Acquire) > 0;
                let grace = if busy { CLOSE_GRACE + limits.request_timeout } else { CLOSE_GRACE };
                close_by = Some(Instant::now() + grace);
            }
            () = sleep_until_some(recheck), if close_by.is_none() => {}
            () = sleep_until_some(close_by), if close_by.is_some() => {
                tracing::debug!("connection did not close within its grace period; dropped");
                return;
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_listener_makes_room_from_the_address_holding_the_most() {
        let connections = Connections::new(&Telemetry::new());
        let (client, flood) = (
            Some(IpAddr::from([10, 0, 0, 2])),
            Some(IpAddr::from([10, 0, 0, 1])),
        );
        // The real client's connection is the oldest, so idle the longest...
        let real = connections.admit("secure", 3, client).unwrap();
        let first = connections.admit("secure", 3, flood).unwrap();
        let second = connections.admit("secure", 3, flood).unwrap();
        // ...but the flood's address holds the most: one of its connections goes. Which one depends on the
        // millisecond clock (both may have become idle in the same millisecond), so only the count is asserted.
        let _third = connections.admit("secure", 3, flood).unwrap();
        assert!(!real.conn.closing.load(Ordering::Acquire));
        let closed = [&first, &second]
            .iter()
            .filter(|c| c.conn.closing.load(Ordering::Acquire))
            .count();
        assert_eq!(closed, 1);
    }

    #[test]
    fn out_of_descriptors_closes_one_idle_connection_at_a_time() {
        let connections = Connections::new(&Telemetry::new());
        let a = connections.admit("metrics", 8, None).unwrap();
        let b = connections.admit("secure", 8, None).unwrap();
        // The first failed accept closes one idle connection...
        assert!(connections.make_room_anywhere());
        let closing = [&a, &b]
            .iter()
            .filter(|r| r.conn.closing.load(Ordering::Acquire))
            .count();
        assert_eq!(closing, 1);
        // ...and while its descriptor is on its way back, retries close no other.
        assert!(!connections.make_room_anywhere());
        assert!(!connections.make_room_anywhere());
        let still_open = if a.conn.closing.load(Ordering::Acquire) {
            &b
        } else {
            &a
        };
        assert!(!still_open.conn.closing.load(Ordering::Acquire));
        // Once it has gone, the next one may be closed.
        if a.conn.closing.load(Ordering::Acquire) {
            drop(a);
        } else {
            drop(b);
        }
        assert!(connections.make_room_anywhere());
    }
}
