//! The `cutover` binary: the proxy, its admin CLI, and an embedded upstream.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cutover::config::Config;
use cutover::embedded::EmbeddedUpstream;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cutover",
    version,
    about = "Zero-downtime migrations for Qdrant collections"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy: Qdrant's gRPC and REST in front of the configured upstreams, and the admin API.
    Serve {
        #[arg(long, default_value = "config/quickstart.toml")]
        config: PathBuf,
        #[command(flatten)]
        runtime: Runtime,
    },
    /// Check a config file and exit: the same checks `serve` makes at start.
    CheckConfig {
        #[arg(long, default_value = "config/quickstart.toml")]
        config: PathBuf,
    },
    /// Run one embedded upstream: Qdrant's gRPC and REST APIs on the real Qdrant engine, in-process.
    Embedded {
        /// Directory holding the collections; created if missing.
        #[arg(long, default_value = "./data/embedded")]
        data: PathBuf,
        /// gRPC listen address.
        #[arg(long, default_value = "127.0.0.1:6334")]
        grpc: SocketAddr,
        /// REST listen address.
        #[arg(long, default_value = "127.0.0.1:6333")]
        rest: SocketAddr,
        /// Require this environment variable's value as the API key, as Qdrant's `service.api_key` does.
        #[arg(long)]
        api_key_env: Option<String>,
        #[command(flatten)]
        runtime: Runtime,
    },
}

/// The threads that serve requests.
#[derive(clap::Args, Clone, Copy)]
struct Runtime {
    /// Threads serving requests: 1 runs every connection on one thread
    /// (fewer hand-offs between threads, less CPU per request, where
    /// cutover shares a few CPUs with other work); by default one per CPU
    /// the process may use (one thread if that is one).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Serve { runtime, .. } | Command::Embedded { runtime, .. } => {
            runtime.worker_threads
        }
        Command::CheckConfig { .. } => None,
    };
    let outcome = match runtime(threads.map(usize::from)) {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(err) => Err(anyhow::Error::new(err).context("could not start the async runtime")),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The async runtime, with `threads` workers if given, else one per CPU
/// the process may use (pinned with taskset, or a container's quota). One
/// worker is a single-threaded runtime: a multi-threaded scheduler's
/// hand-offs between threads buy nothing there and cost CPU on every
/// wake-up.
fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or journal gets plain text
        // (and every request's span is formatted in half the time).
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Serve { config: path, .. } => {
            let config = Config::load(&path)?;
            let running = cutover::serve::start(config, Some(path)).await?;
            println!(
                "cutover: gRPC {} REST {} admin http://{}",
                running.grpc_addr, running.rest_addr, running.admin_addr
            );
            shutdown_signal().await;
            running.stop().await;
        }
        Command::CheckConfig { config: path } => {
            let config = Config::load(&path)?;
            for (name, spec) in config.upstream_specs().map_err(anyhow::Error::msg)? {
                if let cutover::config::UpstreamSpec::Remote(remote) = spec {
                    cutover::upstream::Upstream::new(&name, &remote).map_err(anyhow::Error::msg)?;
                }
            }
            config.admin_token().map_err(anyhow::Error::msg)?;
            println!(
                "{}: ok ({} upstreams, {} routes)",
                path.display(),
                config.upstreams.len(),
                config.routes.len()
            );
        }
        Command::Embedded {
            data,
            grpc,
            rest,
            api_key_env,
            ..
        } => {
            let api_key = api_key_env
                .map(|var| {
                    std::env::var(&var)
                        .with_context(|| format!("--api-key-env names `{var}`, which is not set"))
                })
                .transpose()?;
            let upstream = EmbeddedUpstream::start_with_api_key(&data, grpc, rest, api_key)
                .await
                .context("starting the embedded upstream")?;
            println!(
                "embedded Qdrant upstream: gRPC {} REST {} data {}",
                upstream.grpc_url(),
                upstream.rest_url(),
                data.display()
            );
            shutdown_signal().await;
            upstream.stop().await;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}
