//! Latency and throughput of gRPC search, straight at Qdrant and through
//! cutover, side by side in one run: the targets take turns in rounds so
//! that machine noise hits both alike, and each round's warm-up is dropped.
//!
//! The upstream (an embedded Qdrant) and cutover each run in their own
//! process, started and stopped by this program.

mod processes;
mod report;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use qdrant_client::Qdrant;

use processes::Server;
use report::{Report, TargetResult};
use workload::Shape;

#[derive(Parser)]
#[command(about = "Qdrant direct vs through cutover: gRPC search latency and throughput")]
struct Args {
    /// The cutover binary (built with `cargo build --release`).
    #[arg(long, default_value = "target/release/cutover")]
    cutover_bin: PathBuf,
    /// Concurrent clients (closed loop).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Measured seconds per target per round.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Rounds; the targets alternate within each.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Warm-up seconds per target per round, not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 768)]
    dim: usize,
    #[arg(long, default_value_t = 10_000)]
    points: usize,
    #[arg(long, default_value_t = 10)]
    top: u64,
    /// Pin every process (upstream, cutover, this one) to this CPU, so that
    /// cross-CPU wake-ups do not blur the tails. Without it, read medians only.
    #[arg(long)]
    pin_cpu: Option<usize>,
    /// Where to write the JSON with every figure.
    #[arg(long, default_value = "loadtest-results.json")]
    json: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(cpu) = args.pin_cpu {
        processes::pin_self(cpu)?;
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("upstream");
    let upstream = Server::start(
        &args.cutover_bin,
        &[
            "embedded",
            "--grpc",
            "127.0.0.1:0",
            "--rest",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
        ],
        args.pin_cpu,
    )
    .context("starting the embedded upstream")?;
    let (upstream_grpc, upstream_rest) = (upstream.address("gRPC")?, upstream.address("REST")?);
    let config = processes::passthrough_config(dir.path(), &upstream_rest, &upstream_grpc)?;
    let proxy = Server::start(
        &args.cutover_bin,
        &["serve", "--config", config.to_str().unwrap()],
        args.pin_cpu,
    )
    .context("starting cutover")?;
    let proxy_grpc = proxy.address("gRPC")?;

    let shape = Arc::new(Shape {
        collection: "loadtest".into(),
        dim: args.dim,
        points: args.points,
        top: args.top,
    });
    // The embedded upstream reports Qdrant 1.18; the client's version check would only print.
    let connect = |url: &str| Qdrant::from_url(url).skip_compatibility_check().build();
    let direct = Arc::new(connect(&upstream_grpc)?);
    eprintln!(
        "seeding {} points of {} dimensions",
        shape.points, shape.dim
    );
    workload::seed(&direct, &shape).await?;
    let queries = Arc::new(workload::vectors(256, shape.dim, 2));

    let targets = [
        ("direct", direct),
        (
            "cutover passthrough",
            Arc::new(Qdrant::from_url(&proxy_grpc).build()?),
        ),
    ];
    let mut results: Vec<TargetResult> = targets
        .iter()
        .map(|(name, _)| TargetResult::new(name))
        .collect();
    for round in 0..args.rounds {
        for (i, (name, client)) in targets.iter().enumerate() {
            let warmup = Duration::from_secs_f64(args.warmup);
            workload::closed_loop(
                client.clone(),
                shape.clone(),
                queries.clone(),
                args.clients,
                warmup,
            )
            .await;
            let measured = workload::closed_loop(
                client.clone(),
                shape.clone(),
                queries.clone(),
                args.clients,
                Duration::from_secs_f64(args.seconds),
            )
            .await;
            eprintln!(
                "round {}/{} {name}: {} requests, p50 {} µs",
                round + 1,
                args.rounds,
                measured.latency_us.len(),
                measured.latency_us.value_at_quantile(0.5)
            );
            results[i].add(measured);
        }
    }
    let report = Report {
        operation: format!(
            "gRPC search, {} dims, top {}, {} points",
            args.dim, args.top, args.points
        ),
        clients: args.clients,
        pinned_cpu: args.pin_cpu,
        results,
    };
    println!("{}", report.markdown());
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report.json())?)?;
    eprintln!("figures written to {}", args.json.display());
    drop(proxy);
    drop(upstream);
    Ok(())
}
