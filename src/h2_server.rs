//! The gRPC listener's HTTP/2 server, spoken with `h2` itself: each
//! connection is one task, and every call's handler runs inside it rather
//! than in a task of its own (as hyper's server runs them), so a call's
//! frames in, its handler and its answer's frames out are one task's work.
//! A fifth less CPU per proxied gRPC call (docs/benchmarks.md).
//!
//! The price: one connection's calls share a thread. Their waits overlap
//! (a handler awaiting an upstream holds nothing up), but their CPU work
//! does not spread over cores; `h2` decodes and encodes a connection's
//! frames on one task either way.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use h2::Reason;
use h2::server::SendResponse;
use http_body_util::BodyExt;
use hyper::{Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::h2_channel::RecvBody;
use crate::server::{Connections, next_connection};
use crate::upstream::{H2_CONNECTION_WINDOW, H2_STREAM_WINDOW, ProxyBody};

/// Serves `handler` on `listener` until `shutdown` turns true, then lets
/// calls in flight finish for at most `grace`.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(Request<ProxyBody>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let connections = Connections::default();
    while let Some(stream) = next_connection(&listener, &mut shutdown).await {
        connections.spawn(connection(stream, handler.clone(), shutdown.clone()));
    }
    // Closed now: a new client is refused, not left waiting in the backlog.
    drop(listener);
    connections.drain(grace).await;
}

/// One client connection: its streams accepted and served until it closes.
async fn connection<H, F>(stream: TcpStream, handler: H, mut shutdown: watch::Receiver<bool>)
where
    H: Fn(Request<ProxyBody>) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(1024)
        .initial_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .handshake::<_, Bytes>(stream);
    // A client that never completes its preface holds nothing up at stop.
    let handshaken = tokio::select! {
        handshaken = handshake => handshaken,
        _ = shutdown.wait_for(|stop| *stop) => return,
    };
    let mut connection = match handshaken {
        Ok(connection) => connection,
        Err(err) => {
            tracing::debug!(%err, "HTTP/2 handshake failed");
            return;
        }
    };
    let mut streams = FuturesUnordered::new();
    // Made once: a wait made anew on every turn of the loop would register
    // with the shutdown signal, and leave it, for every frame received.
    let stop = shutdown.wait_for(|stop| *stop);
    tokio::pin!(stop);
    let mut closing = false;
    loop {
        tokio::select! {
            accepted = connection.accept() => match accepted {
                Some(Ok((request, mut respond))) => {
                    let request = request.map(|recv| RecvBody::new(recv).boxed_unsync());
                    // Boxed: a handler's future is a few KB. A panic ends
                    // its stream, not the connection's other streams.
                    let answer = AssertUnwindSafe(Box::pin(handler(request))).catch_unwind();
                    streams.push(async move {
                        match answer.await {
                            Ok(response) => respond_with(respond, response).await,
                            Err(_) => {
                                tracing::error!("a request's handler panicked");
                                respond.send_reset(Reason::INTERNAL_ERROR);
                            }
                        }
                    });
                }
                Some(Err(err)) => {
                    tracing::debug!(%err, "connection ended with an error");
                    break;
                }
                None => break,
            },
            Some(()) = streams.next(), if !streams.is_empty() => {}
            _ = &mut stop, if !closing => {
                closing = true;
                connection.graceful_shutdown();
            }
        }
    }
}

/// Sends `response` on a stream: its head, its body's DATA frames as the
/// client's flow-control window allows, then its trailers.
async fn respond_with(mut respond: SendResponse<Bytes>, response: Response<ProxyBody>) {
    let (head, mut body) = response.into_parts();
    let end = hyper::body::Body::is_end_stream(&body);
    let mut send = match respond.send_response(Response::from_parts(head, ()), end) {
        Ok(send) => send,
        Err(err) => {
            // Reset by the client, or a head h2 refuses to send: either way
            // the stream ends here, the client told.
            tracing::debug!(%err, "the answer's head was not sent");
            respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
    };
    if end {
        return;
    }
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(err) => {
                tracing::debug!(%err, "the answer's body failed");
                send.send_reset(Reason::INTERNAL_ERROR);
                return;
            }
        };
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = send.send_trailers(trailers);
                }
                return;
            }
        };
        while !data.is_empty() {
            send.reserve_capacity(data.len());
            let granted = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(granted)) => granted,
                _ => return,
            };
            let chunk = data.split_to(granted.min(data.len()));
            if send.send_data(chunk, false).is_err() {
                return;
            }
        }
    }
    let _ = send.send_data(Bytes::new(), true);
}
