//! Latency and throughput of Qdrant straight and through proxies, side by
//! side in one run: the targets take turns in rounds so machine noise hits
//! them alike, each round's warm-up is dropped. The upstream, cutover and
//! the peer proxies (nginx, Envoy) each run in their own process, started
//! and stopped by this program; all listen on loopback only.
//!
//! By default it starts an embedded upstream (the real Qdrant engine, in
//! cutover's binary); `--upstream-grpc` / `--upstream-rest` point it at any
//! Qdrant instead.

mod peers;
mod plot;
mod processes;
mod report;
mod verdicts;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use processes::{Cpus, Endpoint, RouteSpec, Server};
use report::{Report, TargetResult};
use workload::{Client, LoadModel, Mix, Pairing, Protocol, Run, Shape};

/// What `--baseline-bin` adds to a target's name.
const BASELINE: &str = " (baseline)";

#[derive(Parser)]
#[command(about = "Qdrant direct vs through cutover and peer proxies: latency and throughput")]
struct Args {
    /// The cutover binary (`cargo build --profile production`, what is
    /// deployed), also the embedded upstreams' engine.
    #[arg(long, default_value = "target/production/cutover")]
    cutover_bin: PathBuf,
    /// Also measure every cutover scenario through this other cutover
    /// build, as e.g. `cutover passthrough (baseline)`: a change's cost or
    /// gain, side by side with the build before it in one run.
    #[arg(long)]
    baseline_bin: Option<PathBuf>,
    /// A Qdrant to measure instead of an embedded upstream (both URLs).
    #[arg(long, requires = "upstream_rest")]
    upstream_grpc: Option<String>,
    #[arg(long, requires = "upstream_grpc")]
    upstream_rest: Option<String>,
    /// Protocols: grpc, rest or both.
    #[arg(long, default_value = "grpc")]
    protocols: String,
    /// Operations by weight: search, query, upsert, set_payload.
    #[arg(long, default_value = "search=1")]
    mix: Mix,
    /// Closed loop: this many concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Open loop instead: this many requests a second, latency from the intended send time.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured seconds per target per round.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Rounds; every target runs once in each.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// At most this many requests in each measured stretch (and in each warm-up).
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// Seconds before an unanswered request counts as an error.
    #[arg(long, default_value_t = 10.0)]
    request_timeout: f64,
    /// Warm-up seconds per target per round, not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 768)]
    dim: usize,
    #[arg(long, default_value_t = 10_000)]
    points: usize,
    #[arg(long, default_value_t = 10)]
    top: u64,
    /// Filter searches and queries on a keyword (a fifth of the points match).
    #[arg(long)]
    filter: bool,
    /// Points per upsert.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Bytes of filler in each point's payload.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Also measure nginx and Envoy as plain passthrough proxies.
    #[arg(long)]
    peers: bool,
    /// Also measure dual writes: a second upstream as green, cutover writing
    /// to both (compare with each side written alone, through cutover:
    /// `cutover passthrough` to blue and `cutover green only`; and direct:
    /// `direct`, `direct green`, and `direct both`, the load generator
    /// writing to both itself).
    #[arg(long)]
    dual: bool,
    /// Also measure the read modes against a second upstream as green:
    /// shadow 100%, split 50% (random key) and fuse 100% (writes go to blue
    /// only); and `direct + shadow`, the load generator reading from blue
    /// and sending each read's copy to green itself, off the measured path.
    #[arg(long)]
    reads: bool,
    /// Pin every process (upstreams, proxies, this one) to these CPUs (a
    /// list as taskset takes it: `0`, `0-1`), so that cross-CPU wake-ups
    /// do not blur the tails: one CPU for that. Without it, read medians.
    #[arg(long, value_name = "CPUS")]
    pin_cpu: Option<Cpus>,
    /// Worker threads of every proxy measured: cutover's
    /// `--worker-threads`, nginx's `worker_processes`, Envoy's
    /// `--concurrency`. Without it nginx and Envoy run one, and cutover
    /// its own default (one per CPU it may use); a `--baseline-bin` build
    /// older than `--worker-threads` needs it left out.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    proxy_threads: Option<u16>,
    /// Blue's upstream on these CPUs instead (pinned even without
    /// --pin-cpu): with --green-cpu, each side on CPUs of its own, as
    /// dual writes and read modes meet them in production, where the two
    /// sides and the client's path (load generator, proxies) are other
    /// machines. On a machine with CPUs enough for all three, e.g.
    /// `--pin-cpu 0-1 --blue-cpu 2-3 --green-cpu 4-5`.
    #[arg(long, value_name = "CPUS")]
    blue_cpu: Option<Cpus>,
    /// Green's upstream on these CPUs instead (pinned even without
    /// --pin-cpu). With --pin-cpu and no --blue-cpu, blue shares the
    /// client path's CPUs, as it would not in production: a dual write's
    /// copy to green waits while blue, woken by its own copy, takes that
    /// CPU (see docs/benchmarks.md).
    #[arg(long, value_name = "CPUS")]
    green_cpu: Option<Cpus>,
    /// Where the run keeps the embedded upstreams' data and the proxies'
    /// configs, in a directory made for the run and removed after it; the
    /// system's temporary directory unless given. A tmpfs (`/dev/shm`)
    /// takes the machine's disk out of the comparison: every fsync returns
    /// at once.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where to write the table (results.md), JSON with every figure, and an
    /// SVG plot per protocol and operation.
    #[arg(long, default_value = "loadtest-results")]
    out: PathBuf,
    /// Exit non-zero if any request failed.
    #[arg(long)]
    fail_on_errors: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Pinned before the runtime starts, so its threads inherit the CPUs.
    if let Some(cpus) = &args.pin_cpu {
        processes::pin_self(cpus)?;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let protocols: Vec<Protocol> = match args.protocols.as_str() {
        "grpc" => vec![Protocol::Grpc],
        "rest" => vec![Protocol::Rest],
        "both" => vec![Protocol::Grpc, Protocol::Rest],
        other => bail!("--protocols takes grpc, rest or both, not `{other}`"),
    };
    if !args.cutover_bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --profile production`, or name another with --cutover-bin",
            args.cutover_bin.display()
        );
    }
    let dir = match &args.data_dir {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }?;

    // The upstream: embedded in its own process, or the one given.
    let (args_bin, pin_cpu) = (args.cutover_bin.clone(), args.pin_cpu.as_ref());
    let upstream_cpu = |label: &str| match label {
        "green" => args.green_cpu.as_ref().or(pin_cpu),
        _ => args.blue_cpu.as_ref().or(pin_cpu),
    };
    let start_embedded = |label: &str| -> anyhow::Result<(Server, Endpoint)> {
        let data = dir.path().join(label).display().to_string();
        let command = [
            "embedded",
            "--grpc",
            "127.0.0.1:0",
            "--rest",
            "127.0.0.1:0",
            "--data",
            &data,
        ];
        let server = Server::start(&args_bin, &command, upstream_cpu(label))
            .with_context(|| format!("starting the {label} upstream"))?;
        let endpoint = Endpoint {
            grpc: server.address("gRPC")?,
            rest: server.address("REST")?,
        };
        Ok((server, endpoint))
    };
    let mut servers = Vec::new();
    let blue = match (&args.upstream_grpc, &args.upstream_rest) {
        (Some(grpc), Some(rest)) => Endpoint {
            grpc: grpc.clone(),
            rest: rest.clone(),
        },
        _ => {
            let (server, endpoint) = start_embedded("blue")?;
            servers.push(server);
            endpoint
        }
    };
    let threads = args.proxy_threads.map(|n| n.to_string());
    let start_build = |bin: &Path, name: &str, route: Option<RouteSpec>| {
        let config = processes::cutover_config(dir.path(), name, &blue, route)?;
        let config = config.display().to_string();
        let mut command = vec!["serve", "--config", &config];
        if let Some(threads) = &threads {
            command.extend(["--worker-threads", threads]);
        }
        Server::start(bin, &command, pin_cpu).with_context(|| format!("starting cutover ({name})"))
    };
    let start_cutover = |name: &str, route| start_build(&args_bin, name, route);
    let passthrough = start_cutover("passthrough", None)?;
    let mut targets = vec![
        Target::direct(verdicts::DIRECT, &blue),
        Target::proxy(verdicts::PASSTHROUGH, &passthrough)?,
    ];
    servers.push(passthrough);
    if let Some(bin) = &args.baseline_bin {
        let baseline = start_build(bin, "baseline", None)?;
        targets.push(Target::proxy(
            &format!("{}{BASELINE}", verdicts::PASSTHROUGH),
            &baseline,
        )?);
        servers.push(baseline);
    }
    // Dual writes and read modes: a second upstream as green, and cutover
    // routing the collection to both.
    let mut green = None;
    if args.dual || args.reads {
        let (server, endpoint) = start_embedded("green")?;
        servers.push(server);
        targets.insert(1, Target::direct(verdicts::DIRECT_GREEN, &endpoint));
        if args.dual {
            // What a dual write costs with no proxy: the slower of two round trips.
            targets.insert(
                2,
                Target {
                    also: Some((endpoint.clone(), Pairing::DualWrites)),
                    ..Target::direct(verdicts::DIRECT_BOTH, &blue)
                },
            );
        }
        if args.reads {
            // What a shadow costs with no proxy: green's search, on the
            // same machine, after each of blue's answers.
            targets.insert(
                2,
                Target {
                    also: Some((endpoint.clone(), Pairing::ShadowReads)),
                    ..Target::direct(verdicts::DIRECT_SHADOW, &blue)
                },
            );
        }
        let mut scenarios = Vec::new();
        if args.dual {
            // Green written alone through cutover: with passthrough (blue
            // alone), the sides a dual write is judged against.
            scenarios.extend([
                (
                    "green-only",
                    verdicts::GREEN_ONLY,
                    r#"writes = "green_only""#,
                ),
                ("dual", verdicts::DUAL, r#"writes = "dual""#),
            ]);
        }
        if args.reads {
            scenarios.extend([
                (
                    "shadow",
                    verdicts::SHADOW,
                    r#"reads = { mode = "shadow", green_percent = 100.0 }"#,
                ),
                (
                    "split",
                    "cutover split 50%",
                    r#"reads = { mode = "split", green_percent = 50.0 }"#,
                ),
                (
                    "fuse",
                    "cutover fuse",
                    r#"reads = { mode = "fuse", green_percent = 100.0 }"#,
                ),
            ]);
        }
        for (name, label, policy) in scenarios {
            let route = RouteSpec {
                green: &endpoint,
                collection: "loadtest",
                policy,
            };
            let server = start_cutover(name, Some(route))?;
            targets.push(Target::proxy(label, &server)?);
            servers.push(server);
            if let Some(bin) = &args.baseline_bin {
                let server = start_build(bin, &format!("{name}-baseline"), Some(route))?;
                targets.push(Target::proxy(&format!("{label}{BASELINE}"), &server)?);
                servers.push(server);
            }
        }
        green = Some(endpoint);
    }
    let mut peer_processes = Vec::new();
    if args.peers {
        let ports = peers::UpstreamPorts {
            grpc: port_of(&blue.grpc)?,
            rest: port_of(&blue.rest)?,
        };
        let workers = args.proxy_threads.unwrap_or(1);
        for peer in [
            peers::nginx(dir.path(), &ports, pin_cpu, workers)?,
            peers::envoy(dir.path(), &ports, pin_cpu, workers)?,
        ]
        .into_iter()
        .flatten()
        {
            targets.push(Target {
                name: peer.name.to_owned(),
                grpc: peer.grpc_url.clone(),
                rest: peer.rest_url.clone(),
                also: None,
                proxy_pid: Some(peer.pid()),
                admin: None,
            });
            peer_processes.push(peer);
        }
    }

    let shape = Arc::new(Shape {
        collection: "loadtest".into(),
        dim: args.dim,
        points: args.points,
        top: args.top,
        filter: args.filter,
        batch: args.batch.max(1),
        payload_bytes: args.payload_bytes,
    });
    eprintln!(
        "seeding {} points of {} dimensions",
        shape.points, shape.dim
    );
    for endpoint in std::iter::once(&blue).chain(green.as_ref()) {
        let Client::Grpc(seeder) = Client::new(Protocol::Grpc, &endpoint.grpc)? else {
            unreachable!("a gRPC client")
        };
        workload::seed(&seeder, &shape).await?;
    }
    let queries = Arc::new(workload::vectors(256, shape.dim, 2));
    let mix = Arc::new(args.mix.clone());
    let model = match args.rate {
        Some(rate) => LoadModel::Open { rate },
        None => LoadModel::Closed {
            clients: args.clients,
        },
    };

    let mut runs = Vec::new();
    for protocol in &protocols {
        for target in &targets {
            let url = |grpc: &str, rest: &str| match protocol {
                Protocol::Grpc => grpc.to_owned(),
                Protocol::Rest => rest.to_owned(),
            };
            let mut client = Client::new(*protocol, &url(&target.grpc, &target.rest))?;
            if let Some((also, pairing)) = &target.also {
                let second = Client::new(*protocol, &url(&also.grpc, &also.rest))?;
                client = Client::pair(client, second, *pairing);
            }
            let run = Run {
                client: Arc::new(client),
                shape: shape.clone(),
                mix: mix.clone(),
                queries: queries.clone(),
                timeout: Duration::from_secs_f64(args.request_timeout),
                max_requests: args.max_requests,
            };
            runs.push((
                TargetResult::new(&target.name, *protocol),
                run,
                target.proxy_pid,
            ));
        }
    }
    for round in 0..args.rounds {
        for (result, run, proxy_pid) in &mut runs {
            run.measure(model, Duration::from_secs_f64(args.warmup))
                .await;
            let cpu_before = proxy_pid.and_then(processes::cpu_seconds);
            let measured = run
                .measure(model, Duration::from_secs_f64(args.seconds))
                .await;
            if let (Some(before), Some(after)) =
                (cpu_before, proxy_pid.and_then(processes::cpu_seconds))
            {
                result.add_proxy_cpu(after - before);
            }
            result.proxy_peak_rss_mib = proxy_pid.and_then(processes::peak_rss_mib);
            let requests: u64 = measured.latency_us.values().map(|h| h.len()).sum();
            eprintln!(
                "round {}/{} {} {}: {requests} requests",
                round + 1,
                args.rounds,
                result.protocol.name(),
                result.target
            );
            result.add(measured);
        }
    }

    // What the shadows covered and how the dual writes ended, as cutover
    // itself counted them.
    let (mut shadows, mut writes) = (Vec::new(), Vec::new());
    for target in &targets {
        let Some(admin) = &target.admin else { continue };
        match processes::shadow_report(admin, &shape.collection).await {
            Ok(Some(report)) => shadows.push((target.name.clone(), report)),
            Ok(None) => {}
            Err(err) => eprintln!(
                "{}: no shadow report from its admin API: {err:#}",
                target.name
            ),
        }
        match processes::write_report(admin, &shape.collection).await {
            Ok(Some(report)) => writes.push((target.name.clone(), report)),
            Ok(None) => {}
            Err(err) => eprintln!("{}: no metrics from its admin API: {err:#}", target.name),
        }
    }
    let report = Report {
        title: format!(
            "{} dims, top {}, {} points{}, mix {}{}",
            args.dim,
            args.top,
            args.points,
            if args.filter { ", filtered" } else { "" },
            mix.ops().map(|op| op.name()).collect::<Vec<_>>().join("+"),
            match (&args.data_dir, &args.upstream_grpc) {
                (Some(parent), None) => {
                    format!("; the upstreams' data under {}", parent.display())
                }
                _ => String::new(),
            },
        ),
        load: format!(
            "{}; {}",
            match model {
                LoadModel::Closed { clients } => format!("closed loop, {clients} clients"),
                LoadModel::Open { rate } => {
                    format!("open loop, {rate} req/s, latency from the intended send time")
                }
            },
            match args.proxy_threads {
                Some(1) => "every proxy with one worker thread".to_owned(),
                Some(n) => format!("every proxy with {n} worker threads"),
                None => "cutover with a worker thread per CPU it may use, nginx and Envoy one"
                    .to_owned(),
            }
        ),
        pinning: processes::pinning(
            pin_cpu,
            args.blue_cpu
                .as_ref()
                .filter(|_| args.upstream_grpc.is_none()),
            args.green_cpu.as_ref().filter(|_| green.is_some()),
        ),
        results: runs.into_iter().map(|(result, ..)| result).collect(),
        closed_loop: matches!(model, LoadModel::Closed { .. }),
        shadows,
        writes,
    };
    let table = report.markdown();
    println!("{table}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("results.md"), table)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_vec_pretty(&report.json())?,
    )?;
    for protocol in &protocols {
        for op in mix.ops() {
            let title = format!("{} {}: {}", protocol.name(), op.name(), report.load);
            if let Some(svg) = plot::percentile_svg(&report.results, *protocol, op, &title) {
                let file = format!("{}-{}.svg", protocol.name().to_lowercase(), op.name());
                std::fs::write(args.out.join(file), svg)?;
            }
        }
    }
    eprintln!("figures and plots written to {}", args.out.display());
    let errors: u64 = report.results.iter().map(TargetResult::total_errors).sum();
    if errors > 0 {
        for r in report.results.iter().filter(|r| r.total_errors() > 0) {
            eprintln!(
                "{} {}: {} errors, first: {}",
                r.protocol.name(),
                r.target,
                r.total_errors(),
                r.first_error.as_deref().unwrap_or("?")
            );
        }
        if args.fail_on_errors {
            bail!("{errors} requests failed");
        }
    }
    drop(peer_processes);
    drop(servers);
    Ok(())
}

/// One thing measured: its two URLs and the proxy process in between, if any.
struct Target {
    name: String,
    grpc: String,
    rest: String,
    /// A second upstream the load generator pairs with this one by itself.
    also: Option<(Endpoint, Pairing)>,
    /// Whose CPU time is charged to the requests it passed.
    proxy_pid: Option<u32>,
    /// A cutover's admin API, where its shadow report is read.
    admin: Option<String>,
}

impl Target {
    fn direct(name: &str, upstream: &Endpoint) -> Target {
        Target {
            name: name.to_owned(),
            grpc: upstream.grpc.clone(),
            rest: upstream.rest.clone(),
            also: None,
            proxy_pid: None,
            admin: None,
        }
    }

    fn proxy(name: &str, cutover: &Server) -> anyhow::Result<Target> {
        Ok(Target {
            name: name.to_owned(),
            grpc: cutover.address("gRPC")?,
            rest: cutover.address("REST")?,
            also: None,
            proxy_pid: Some(cutover.pid()),
            admin: Some(cutover.address("admin")?),
        })
    }
}

fn port_of(url: &str) -> anyhow::Result<u16> {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .with_context(|| format!("no port in {url}"))
}
