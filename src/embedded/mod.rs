//! An embedded upstream: Qdrant's gRPC and REST APIs served in-process over
//! `qdrant-edge`, the real Qdrant storage and search engine, one `EdgeShard`
//! per collection, persisted in a data directory.
//!
//! It is what the quick start and the tests sit cutover in front of. What it
//! supports, and how it differs from a Qdrant server, is in docs/embedded.md.

mod auth;
mod error;
mod grpc;
mod grpc_convert;
mod model;
mod oplog;
mod rest;
mod rest_json;
mod store;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use qdrant_client::qdrant::collections_server::CollectionsServer;
use qdrant_client::qdrant::points_server::PointsServer;
use qdrant_client::qdrant::qdrant_server::QdrantServer;
use qdrant_client::qdrant::snapshots_server::SnapshotsServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;

pub use error::ApiError;
pub use store::Store;

/// The Qdrant version whose API the embedded upstream follows.
pub const QDRANT_VERSION: &str = "1.18.0";

/// Largest gRPC message accepted, as a Qdrant server accepts large batches.
const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;
/// On stop, how long REST calls in flight get to finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// A running embedded upstream. Stop it with [`EmbeddedUpstream::stop`] to
/// flush its collections; dropping it without stopping is a crash, which the
/// operation log recovers from at the next start.
pub struct EmbeddedUpstream {
    grpc_addr: SocketAddr,
    rest_addr: SocketAddr,
    store: Arc<Store>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl EmbeddedUpstream {
    /// Opens the data directory and listens; port 0 picks a free port.
    pub async fn start(
        data_dir: &Path,
        grpc: SocketAddr,
        rest: SocketAddr,
    ) -> Result<Self, StartError> {
        Self::start_with_api_key(data_dir, grpc, rest, None).await
    }

    /// As [`EmbeddedUpstream::start`], requiring `api_key` on every request
    /// but the health checks, as a Qdrant server with an API key does.
    pub async fn start_with_api_key(
        data_dir: &Path,
        grpc: SocketAddr,
        rest: SocketAddr,
        api_key: Option<String>,
    ) -> Result<Self, StartError> {
        let api_key = auth::ApiKey::new(api_key);
        let dir = data_dir.to_owned();
        let store = tokio::task::spawn_blocking(move || Store::open(&dir))
            .await
            .expect("store open does not panic")
            .map_err(StartError::Store)?;
        let store = Arc::new(store);
        let grpc_listener = TcpListener::bind(grpc)
            .await
            .map_err(|e| StartError::Bind(grpc, e))?;
        let rest_listener = TcpListener::bind(rest)
            .await
            .map_err(|e| StartError::Bind(rest, e))?;
        let grpc_addr = grpc_listener
            .local_addr()
            .map_err(|e| StartError::Bind(grpc, e))?;
        let rest_addr = rest_listener
            .local_addr()
            .map_err(|e| StartError::Bind(rest, e))?;
        let (shutdown, _) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(serve_grpc(
                grpc_listener,
                store.clone(),
                api_key.clone(),
                shutdown.subscribe(),
            )),
            tokio::spawn(serve_rest(
                rest_listener,
                store.clone(),
                api_key,
                shutdown.subscribe(),
            )),
            tokio::spawn(sync_logs(store.clone(), shutdown.subscribe())),
        ];
        tracing::info!(%grpc_addr, %rest_addr, data = %data_dir.display(), "embedded upstream listening");
        Ok(EmbeddedUpstream {
            grpc_addr,
            rest_addr,
            store,
            shutdown,
            tasks,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn rest_addr(&self) -> SocketAddr {
        self.rest_addr
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    pub fn rest_url(&self) -> String {
        format!("http://{}", self.rest_addr)
    }

    /// Stops listening, lets in-flight requests finish, and flushes every collection.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let store = self.store;
        let _ = tokio::task::spawn_blocking(move || store.checkpoint_all()).await;
        tracing::info!("embedded upstream stopped");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the data directory: {0}")]
    Store(ApiError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

async fn serve_grpc(
    listener: TcpListener,
    store: Arc<Store>,
    api_key: auth::ApiKey,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = grpc::EmbeddedGrpc::new(store);
    let check = move |request: tonic::Request<()>| {
        api_key.check(&request.metadata().clone().into_headers())?;
        Ok(request)
    };
    let result = tonic::transport::Server::builder()
        .add_service(QdrantServer::new(service.clone()))
        .add_service(InterceptedService::new(
            SnapshotsServer::new(service.clone()),
            check.clone(),
        ))
        .add_service(InterceptedService::new(
            CollectionsServer::new(service.clone()).max_decoding_message_size(MAX_GRPC_MESSAGE),
            check.clone(),
        ))
        .add_service(InterceptedService::new(
            PointsServer::new(service).max_decoding_message_size(MAX_GRPC_MESSAGE),
            check,
        ))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            },
        )
        .await;
    if let Err(err) = result {
        tracing::error!(%err, "embedded gRPC server failed");
    }
}

/// Syncs the collections' operation logs every [`store::LOG_SYNC_INTERVAL`]
/// until stopped (the stop's checkpoint puts the rest on disk).
async fn sync_logs(store: Arc<Store>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(store::LOG_SYNC_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let store = store.clone();
        if let Err(err) = tokio::task::spawn_blocking(move || store.sync_logs()).await {
            tracing::error!(%err, "operation log sync did not finish");
        }
    }
}

async fn serve_rest(
    listener: TcpListener,
    store: Arc<Store>,
    api_key: auth::ApiKey,
    shutdown: watch::Receiver<bool>,
) {
    let handler = move |request| rest::handle(store.clone(), api_key.clone(), request);
    crate::server::serve(listener, handler, shutdown, SHUTDOWN_GRACE).await;
}
