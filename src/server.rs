//! The HTTP server loop of the REST and admin listeners: HTTP/1.1 and
//! HTTP/2 (h2c), graceful shutdown that lets in-flight requests finish.
//! (The gRPC listener has its own, `h2_server`.)

use std::convert::Infallible;
use std::future::Future;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Serves `handler` on `listener` until `shutdown` turns true.
pub async fn serve<H, F, B>(listener: TcpListener, handler: H, mut shutdown: watch::Receiver<bool>)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(1024)
        .initial_stream_window_size(crate::upstream::H2_STREAM_WINDOW)
        .initial_connection_window_size(crate::upstream::H2_CONNECTION_WINDOW);
    while let Some(stream) = next_connection(&listener, &mut shutdown).await {
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |request| {
            // Boxed: hyper moves each request's future a few times (over
            // HTTP/2, into a task of its own); a handler's is a few KB.
            let response = Box::pin(handler(request));
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "connection ended with an error");
            }
        });
    }
    // Closed now: a new client is refused, not left waiting in the backlog.
    drop(listener);
    graceful.shutdown().await;
}

/// The next connection on `listener`, Nagle's algorithm off (a proxy's
/// small writes must leave at once); `None` once `shutdown` turns true.
pub async fn next_connection(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<TcpStream> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return Some(stream);
                }
                Err(err) => tracing::warn!(%err, "accept failed"),
            },
            _ = shutdown.wait_for(|stop| *stop) => return None,
        }
    }
}
