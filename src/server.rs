//! The HTTP server loop of the REST and admin listeners: HTTP/1.1 and
//! HTTP/2 (h2c), graceful shutdown that lets in-flight requests finish.
//! (The gRPC listener has its own, `h2_server`.)

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves `handler` on `listener` until `shutdown` turns true, then lets
/// calls in flight finish for at most `grace`.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(1024)
        .initial_stream_window_size(crate::upstream::H2_STREAM_WINDOW)
        .initial_connection_window_size(crate::upstream::H2_CONNECTION_WINDOW);
    let connections = Connections::default();
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
        let mut shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut connection = pin!(connection);
            let stopping = tokio::select! {
                ended = connection.as_mut() => Err(ended),
                _ = shutdown.wait_for(|stop| *stop) => Ok(()),
            };
            // Stopping: calls in flight finish; an idle keep-alive ends now.
            let ended = match stopping {
                Ok(()) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                Err(ended) => ended,
            };
            if let Err(err) = ended {
                tracing::debug!(%err, "connection ended with an error");
            }
        });
    }
    // Closed now: a new client is refused, not left waiting in the backlog.
    drop(listener);
    connections.drain(grace).await;
}

/// A listener's open connections, each in a task of its own, ended at stop
/// after a grace period if they have not ended by themselves.
#[derive(Default)]
pub struct Connections {
    tasks: TaskTracker,
    cut: CancellationToken,
}

impl Connections {
    pub fn spawn(&self, connection: impl Future<Output = ()> + Send + 'static) {
        let cut = self.cut.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = connection => {}
                () = cut.cancelled() => {}
            }
        });
    }

    /// Waits for every connection to end, for at most `grace`; then closes
    /// those still open (a call still in flight, or a client that never
    /// answers the server's goodbye).
    pub async fn drain(self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.tasks.len(),
                ?grace,
                "connections still open after the shutdown grace: closed"
            );
            self.cut.cancel();
            self.tasks.wait().await;
        }
    }
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
