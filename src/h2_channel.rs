//! One HTTP/2 connection to an upstream's gRPC endpoint, shared by every
//! call and made again when it closes.
//!
//! Spoken with `h2` itself rather than through hyper's pooled client: a gRPC
//! request arrives whole, so its HEADERS and DATA frames are queued together
//! and leave in one write. hyper's client waits for the new stream's send
//! window before it queues the DATA, which costs a second write and a task
//! per request; with its pool, a tenth of cutover's CPU per proxied gRPC
//! search (docs/benchmarks.md).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use h2::Reason;
use h2::client::SendRequest;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::HeaderMap;
use hyper::{Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use crate::upstream::{
    BoxError, H2_CONNECTION_WINDOW, H2_STREAM_WINDOW, Protocol, ProxyBody, path_and_query,
    read_with_trailers,
};

/// The connection to one upstream's gRPC endpoint.
pub struct H2Channel {
    /// The upstream's name, for metrics.
    name: String,
    uri: Uri,
    connector: HttpsConnector<HttpConnector>,
    /// The open connection's number and handle; `None` before the first
    /// call and after the connection was lost. Read by every call without
    /// a lock.
    current: ArcSwapOption<(u64, SendRequest<Bytes>)>,
    /// Held while connecting, so that calls arriving meanwhile wait for the
    /// one new connection rather than each making its own.
    connecting: tokio::sync::Mutex<()>,
    connections: AtomicU64,
}

impl H2Channel {
    /// A channel to upstream `name` at `uri` (scheme and authority),
    /// connected on first use.
    pub fn new(name: &str, uri: Uri, connector: HttpsConnector<HttpConnector>) -> H2Channel {
        H2Channel {
            name: name.to_owned(),
            uri,
            connector,
            current: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            connections: AtomicU64::new(0),
        }
    }

    /// Sends a request and answers when its response headers arrive, the
    /// body still streaming. A request the upstream surely did not act on
    /// (see [`Failed::untaken`]) is sent once more, on a new connection.
    pub async fn send(&self, request: Request<ProxyBody>) -> Result<Response<ProxyBody>, BoxError> {
        let (mut head, body) = request.into_parts();
        head.uri = self.absolute(&head.uri);
        let (data, trailers) = read_with_trailers(body, usize::MAX).await?;
        let mut retried = false;
        loop {
            let (connection, sender) = self.sender().await?;
            let request = Request::from_parts(head.clone(), ());
            let err = match exchange(sender, request, &data, &trailers).await {
                Ok(response) => return Ok(response.map(|recv| RecvBody::new(recv).boxed_unsync())),
                Err(err) => err,
            };
            let Some(reason) = err.untaken().filter(|_| !retried) else {
                return Err(err.error.into());
            };
            tracing::debug!(err = %err.error, reason, "the upstream did not take the request; sending it again");
            crate::metrics::upstream_retry(Protocol::Grpc, &self.name, reason);
            self.forget(connection);
            retried = true;
        }
    }

    /// `uri`'s path and query on this upstream: HTTP/2 sends `:scheme` and
    /// `:authority`, the upstream's.
    fn absolute(&self, uri: &Uri) -> Uri {
        let mut parts = self.uri.clone().into_parts();
        parts.path_and_query = Some(path_and_query(uri));
        Uri::from_parts(parts).expect("a valid URI with a new path")
    }

    /// The open connection's handle and number, connecting first if there is none.
    async fn sender(&self) -> Result<(u64, SendRequest<Bytes>), BoxError> {
        if let Some(open) = self.current.load().as_deref() {
            return Ok(open.clone());
        }
        let _connecting = self.connecting.lock().await;
        // Another call may have connected while this one waited.
        if let Some(open) = self.current.load().as_deref() {
            return Ok(open.clone());
        }
        // Boxed: connecting is rare, and its future is large; every call's
        // future would carry it.
        let sender = Box::pin(self.connect()).await.inspect_err(|_| {
            crate::metrics::upstream_connection(Protocol::Grpc, &self.name, "failed")
        })?;
        crate::metrics::upstream_connection(Protocol::Grpc, &self.name, "opened");
        let number = self.connections.fetch_add(1, Ordering::Relaxed);
        self.current.store(Some(Arc::new((number, sender.clone()))));
        Ok((number, sender))
    }

    /// A new connection, its task spawned; answers its handle.
    async fn connect(&self) -> Result<SendRequest<Bytes>, BoxError> {
        let io = self.connector.clone().call(self.uri.clone()).await?;
        let (sender, connection) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .handshake(TokioIo::new(io))
            .await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "upstream HTTP/2 connection ended");
            }
        });
        Ok(sender)
    }

    /// Drops a lost connection's handle, unless a new one replaced it.
    fn forget(&self, lost: u64) {
        self.current.rcu(|current| match current {
            Some(open) if open.0 != lost => Some(Arc::clone(open)),
            _ => None,
        });
    }
}

/// One request's exchange on a connection, up to its response headers.
async fn exchange(
    sender: SendRequest<Bytes>,
    request: Request<()>,
    data: &Bytes,
    trailers: &Option<HeaderMap>,
) -> Result<Response<h2::RecvStream>, Failed> {
    let unsent = |error| Failed { sent: false, error };
    let mut sender = sender.ready().await.map_err(unsent)?;
    let eos = data.is_empty() && trailers.is_none();
    let (response, mut stream) = sender.send_request(request, eos).map_err(unsent)?;
    if !data.is_empty() {
        stream
            .send_data(data.clone(), trailers.is_none())
            .map_err(unsent)?;
    }
    if let Some(trailers) = trailers {
        stream.send_trailers(trailers.clone()).map_err(unsent)?;
    }
    response.await.map_err(|error| Failed { sent: true, error })
}

struct Failed {
    /// Whether the request's frames were queued on a live connection.
    sent: bool,
    error: h2::Error,
}

impl Failed {
    /// Why the upstream surely did not act on the request, if it surely
    /// did not: it could not be sent, its connection lost
    /// (`connection_lost`), or the upstream refused it unprocessed
    /// (`refused_stream`).
    fn untaken(&self) -> Option<&'static str> {
        let lost = self.error.is_io() || self.error.is_go_away();
        if !self.sent && lost {
            Some("connection_lost")
        } else if self.error.reason() == Some(Reason::REFUSED_STREAM) {
            Some("refused_stream")
        } else {
            None
        }
    }
}

/// A body read from an h2 stream: its DATA frames, then its trailers.
/// Received bytes are given back to the flow-control window as they are
/// handed on.
pub struct RecvBody {
    recv: h2::RecvStream,
    data_done: bool,
}

impl RecvBody {
    pub fn new(recv: h2::RecvStream) -> RecvBody {
        RecvBody {
            recv,
            data_done: false,
        }
    }
}

impl hyper::body::Body for RecvBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(err) => Poll::Ready(Some(Err(err.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
