//! `cutover serve`: wires config, upstreams, routing, listeners and admin.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::config::{ClientApiKey, Config, RemoteSpec, UpstreamSpec};
use crate::embedded::EmbeddedUpstream;
use crate::proxy::Proxy;
use crate::replay_log::{Fsync, ReplayLog};
use crate::replayer::Replay;
use crate::routing::Router;
use crate::shadow::Shadows;
use crate::upstream::Upstream;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

/// A running proxy; [`Running::stop`] ends it gracefully.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub rest_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub admin: Arc<Admin>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    replay: Arc<Replay>,
    embedded: Vec<EmbeddedUpstream>,
}

/// Starts the proxy. `config_path` is what reload (admin or SIGHUP) re-reads.
pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running, StartError> {
    let metrics = crate::metrics::install();
    let token = config.admin_token().map_err(StartError)?;
    let mut embedded = Vec::new();
    let mut upstreams = BTreeMap::new();
    for (name, spec) in config.upstream_specs().map_err(StartError)? {
        let spec = match spec {
            UpstreamSpec::Remote(remote) => remote,
            UpstreamSpec::Embedded(dir) => {
                let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
                let upstream = EmbeddedUpstream::start(&dir, loopback, loopback)
                    .await
                    .map_err(|e| StartError(format!("embedded upstream `{name}`: {e}")))?;
                let spec = embedded_spec(&upstream);
                embedded.push(upstream);
                spec
            }
        };
        upstreams.insert(
            name.clone(),
            Arc::new(Upstream::new(&name, &spec).map_err(StartError)?),
        );
    }
    let router = Router::new(&config).map_err(|e| StartError(e.to_string()))?;
    let (shutdown, _) = watch::channel(false);
    let replay_dir = config.replay_dir();
    let log = ReplayLog::open(&replay_dir, config.replay.fsync)
        .map_err(|e| StartError(format!("{}: {e}", replay_dir.display())))?;
    let replay = Replay::start(Arc::new(log), upstreams.clone(), shutdown.subscribe())
        .map_err(|e| StartError(format!("the replay log's writer thread: {e}")))?;
    let proxy = Arc::new(Proxy {
        default: upstreams[config.default_upstream.get_ref()].clone(),
        upstreams,
        router,
        replay: replay.clone(),
        schemas: Default::default(),
        schema_reads: Default::default(),
        shadows: Arc::new(Shadows::new(config.shadow.clone()).map_err(StartError)?),
    });
    proxy.refresh_schemas().await;
    let admin = Arc::new(Admin {
        proxy: proxy.clone(),
        token,
        metrics,
        config_path: config_path.clone(),
    });

    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| StartError(format!("cannot listen on {addr}: {e}")))
    };
    let grpc = bind(config.listen.grpc).await?;
    let rest = bind(config.listen.rest).await?;
    let admin_listener = bind(*config.listen.admin.get_ref()).await?;
    let addr = |l: &TcpListener| l.local_addr().map_err(|e| StartError(e.to_string()));
    let (grpc_addr, rest_addr, admin_addr) = (addr(&grpc)?, addr(&rest)?, addr(&admin_listener)?);

    let mut tasks = vec![tokio::spawn(crate::metrics::upkeep(
        admin.metrics.clone(),
        shutdown.subscribe(),
    ))];
    if config.replay.fsync == Fsync::Interval {
        let every = Duration::from_millis(config.replay.fsync_interval_ms);
        tasks.push(tokio::spawn(persist_every(
            replay.clone(),
            every,
            shutdown.subscribe(),
        )));
    }
    let grace = Duration::from_millis(config.listen.shutdown_grace_ms);
    let p = proxy.clone();
    tasks.push(tokio::spawn(crate::h2_server::serve(
        grpc,
        move |request| crate::grpc::handle(p.clone(), request),
        shutdown.subscribe(),
        grace,
    )));
    let p = proxy.clone();
    tasks.push(tokio::spawn(crate::server::serve(
        rest,
        move |request| crate::rest::handle(p.clone(), request),
        shutdown.subscribe(),
        grace,
    )));
    let a = admin.clone();
    tasks.push(tokio::spawn(crate::server::serve(
        admin_listener,
        move |request| crate::admin::handle(a.clone(), request),
        shutdown.subscribe(),
        grace,
    )));
    if config_path.is_some() {
        tasks.push(tokio::spawn(reload_on_sighup(
            admin.clone(),
            shutdown.subscribe(),
        )));
    }
    let runtime = tokio::runtime::Handle::current();
    crate::metrics::runtime(&runtime);
    let threads = runtime.metrics().num_workers();
    tracing::info!(%grpc_addr, %rest_addr, %admin_addr, version = proxy.router.load().version, threads, "cutover listening");
    Ok(Running {
        grpc_addr,
        rest_addr,
        admin_addr,
        admin,
        shutdown,
        tasks,
        replay,
        embedded,
    })
}

impl Running {
    /// Stops listening, lets in-flight requests finish, then stops embedded upstreams.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.replay.stop().await;
        if let Err(err) = self.replay.log.persist() {
            tracing::error!(%err, "replay log: the last records may not be on disk");
        }
        for upstream in self.embedded {
            upstream.stop().await;
        }
        tracing::info!("cutover stopped");
    }
}

/// An in-process upstream is reached over loopback like any other.
fn embedded_spec(upstream: &EmbeddedUpstream) -> RemoteSpec {
    RemoteSpec {
        rest: upstream.rest_url(),
        grpc: upstream.grpc_url(),
        ca_file: None,
        api_key: None,
        client_api_key: ClientApiKey::Pass,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(30),
        pool_max_idle_per_host: 64,
    }
}

async fn reload_on_sighup(admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot listen for SIGHUP; reload through the admin API");
        return;
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => match admin.reload() {
                Ok(table) => {
                    crate::metrics::route_change("reload", "applied");
                    tracing::info!(version = table.version, "SIGHUP: config reloaded");
                }
                Err(err) => {
                    crate::metrics::route_change("reload", "refused");
                    tracing::error!(%err, "SIGHUP: reload refused; the running routes stay");
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// The `fsync = "interval"` policy: the log reaches the disk on a tick.
async fn persist_every(replay: Arc<Replay>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let log = replay.log.clone();
        match tokio::task::spawn_blocking(move || log.persist()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(%err, "replay log: fsync failed"),
            Err(err) => tracing::error!(%err, "replay log: fsync task failed"),
        }
    }
}
