//! Pooled HTTP/1.1 connections to an upstream's REST endpoint, each driven
//! by the request that holds it.
//!
//! hyper's pooled client runs every connection in a task of its own: a
//! request is handed to that task through a channel, and the response and
//! each piece of its body handed back the same way, a wake-up and a task
//! switch each time. Here the task serving the client's request drives the
//! connection it took from the pool itself, from writing the request to
//! reading the response body's last byte, and then puts it back
//! (docs/benchmarks.md has what that saves).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use crate::upstream::{BoxError, Protocol, ProxyBody, path_and_query};

/// An idle connection unused this long is closed rather than reused: a
/// firewall or load balancer between may have dropped it without a word.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// The connections to one upstream's REST endpoint.
pub struct H1Pool {
    /// The upstream's name, for metrics.
    name: String,
    /// Scheme and authority.
    uri: Uri,
    host: HeaderValue,
    connector: HttpsConnector<HttpConnector>,
    idle: Arc<Idle>,
}

/// Connections waiting for their next request, the most recently used last.
/// Each is boxed: it is about 2 KB, and moves between the pool, a request
/// and its response body.
struct Idle {
    #[expect(clippy::vec_box, reason = "a connection taken out moves as a pointer")]
    connections: Mutex<Vec<Box<Connection>>>,
    max: usize,
}

/// One connection: the handle requests are sent on and the state machine
/// that reads and writes its socket, which only runs when polled.
struct Connection {
    sender: http1::SendRequest<ProxyBody>,
    driver: http1::Connection<Io, ProxyBody>,
    closed: bool,
    idle_since: Instant,
}

impl H1Pool {
    /// A pool for upstream `name` at `uri` (scheme and authority) keeping
    /// at most `max_idle` idle connections.
    pub fn new(
        name: &str,
        uri: Uri,
        connector: HttpsConnector<HttpConnector>,
        max_idle: usize,
    ) -> Result<H1Pool, String> {
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let host = HeaderValue::from_str(authority)
            .map_err(|_| format!("upstream `{name}`: `{authority}` is not a valid host"))?;
        Ok(H1Pool {
            name: name.to_owned(),
            uri,
            host,
            connector,
            idle: Arc::new(Idle {
                connections: Mutex::new(Vec::new()),
                max: max_idle,
            }),
        })
    }

    /// Sends a request (its URI a path and query) and answers when its
    /// response headers arrive, the body still streaming. A request the
    /// upstream surely did not see (its connection was closed before it was
    /// written) is sent once more, on a new connection.
    pub async fn send(
        &self,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, BoxError> {
        if request.uri().authority().is_some() {
            // Origin-form, as HTTP/1.1 sends to a server that is no proxy.
            *request.uri_mut() = Uri::from(path_and_query(request.uri()));
        }
        request
            .headers_mut()
            .insert(header::HOST, self.host.clone());
        let mut retried = false;
        loop {
            let reused = if retried {
                None
            } else {
                self.idle.take().await
            };
            let mut connection = match reused {
                Some(connection) => connection,
                // Boxed: connecting is rare, and its future is large.
                None => Box::pin(self.connect()).await?,
            };
            let sent = connection.sender.try_send_request(request);
            let mut err = match connection.drive_until(sent).await {
                Ok(response) => {
                    let idle = Arc::clone(&self.idle);
                    return Ok(response.map(|body| PooledBody::boxed(body, connection, idle)));
                }
                Err(err) => err,
            };
            match err.take_message() {
                Some(unsent) if !retried => {
                    tracing::debug!(err = %err.error(), "the upstream connection closed before the request was written; sending it again");
                    crate::metrics::upstream_retry(Protocol::Rest, &self.name, "connection_lost");
                    request = unsent;
                    retried = true;
                }
                _ => return Err(err.into_error().into()),
            }
        }
    }

    async fn connect(&self) -> Result<Box<Connection>, BoxError> {
        let connected = async {
            let io = self.connector.clone().call(self.uri.clone()).await?;
            http1::handshake(io).await.map_err(BoxError::from)
        };
        let (sender, driver) = connected.await.inspect_err(|_| {
            crate::metrics::upstream_connection(Protocol::Rest, &self.name, "failed")
        })?;
        crate::metrics::upstream_connection(Protocol::Rest, &self.name, "opened");
        Ok(Box::new(Connection {
            sender,
            driver,
            closed: false,
            idle_since: Instant::now(),
        }))
    }
}

impl Idle {
    /// The most recently used idle connection still open and ready; those
    /// found closed, not ready or idle too long are dropped on the way.
    async fn take(&self) -> Option<Box<Connection>> {
        loop {
            let mut connection = self.connections.lock().expect("not poisoned").pop()?;
            if connection.idle_since.elapsed() < IDLE_TIMEOUT && connection.ready().await {
                return Some(connection);
            }
        }
    }

    fn put(&self, connection: Box<Connection>) {
        let mut connections = self.connections.lock().expect("not poisoned");
        if connections.len() < self.max {
            connections.push(connection);
        }
    }
}

impl Connection {
    /// Lets the connection read and write what it can; false once it has closed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closed
            && let Poll::Ready(ended) = Pin::new(&mut self.driver).poll(cx)
        {
            if let Err(err) = ended {
                tracing::debug!(%err, "upstream HTTP/1.1 connection ended");
            }
            self.closed = true;
        }
        !self.closed
    }

    /// Polls `future` to its end, driving the connection between polls.
    async fn drive_until<F: Future>(&mut self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(output);
            }
            self.drive(cx);
            future.as_mut().poll(cx)
        })
        .await
    }

    /// Whether the connection takes a request now: it reads what arrived
    /// while it was idle (an end of file, if the upstream closed it) first.
    async fn ready(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            Poll::Ready(self.drive(cx) && matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(()))))
        })
        .await
    }
}

/// A response body that drives its connection as it is read, and puts the
/// connection back in the pool once read to its end. Dropped before that,
/// it closes the connection.
struct PooledBody {
    body: Incoming,
    connection: Option<Box<Connection>>,
    idle: Arc<Idle>,
}

impl PooledBody {
    fn boxed(body: Incoming, connection: Box<Connection>, idle: Arc<Idle>) -> ProxyBody {
        let mut pooled = PooledBody {
            body,
            connection: Some(connection),
            idle,
        };
        if pooled.body.is_end_stream() {
            pooled.release();
        }
        pooled.boxed_unsync()
    }

    /// Puts the connection back in the pool, unless it has closed.
    fn release(&mut self) {
        if let Some(mut connection) = self.connection.take()
            && !connection.closed
        {
            connection.idle_since = Instant::now();
            self.idle.put(connection);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut frame = Pin::new(&mut this.body).poll_frame(cx);
        if frame.is_pending()
            && let Some(connection) = this.connection.as_mut()
        {
            connection.drive(cx);
            frame = Pin::new(&mut this.body).poll_frame(cx);
        }
        let frame = std::task::ready!(frame);
        if frame.is_none() || this.body.is_end_stream() {
            this.release();
        }
        Poll::Ready(frame.map(|frame| frame.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
