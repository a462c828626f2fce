//! Prometheus metrics: one function per decision cutover records, so names
//! and labels live in one place. Prefix `cutover_`, base units, bounded labels.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::routing::Side;
use crate::upstream::Protocol;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Agreement buckets, 0 to 1.
const RATIO_BUCKETS: &[f64] = &[0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0];

/// Result count differences.
const COUNT_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 5.0, 10.0, 100.0];

/// Installs the process-wide recorder (once) and answers its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("static buckets are valid")
                .set_buckets_for_metric(Matcher::Suffix("_ratio".into()), RATIO_BUCKETS)
                .expect("static buckets are valid")
                .set_buckets_for_metric(
                    Matcher::Full("cutover_shadow_count_difference".into()),
                    COUNT_BUCKETS,
                )
                .expect("static buckets are valid")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets on a tick until
/// `shutdown`. The recorder keeps every sample until then (or until a
/// scrape): without this, a proxy nobody scrapes grows with every request.
pub async fn upkeep(handle: PrometheusHandle, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// The side label of a request: `blue`, `green`, or `default` for passthrough.
pub fn side_label(side: Option<Side>) -> &'static str {
    side.map_or("default", Side::as_str)
}

/// One proxied request and how it ended.
pub fn request(
    protocol: &'static str,
    method: &'static str,
    route: &str,
    side: Option<Side>,
    outcome: &'static str,
) {
    counter!(
        "cutover_requests_total",
        "protocol" => protocol,
        "method" => method,
        "route" => route.to_owned(),
        "side" => side_label(side),
        "outcome" => outcome,
    )
    .increment(1);
}

/// Time from sending to an upstream to its response headers.
pub fn upstream_latency(protocol: Protocol, side: Option<Side>, elapsed: Duration) {
    // Recorded on every request: its handles are looked up once, not per
    // sample, one per protocol and side.
    static HANDLES: [OnceLock<Histogram>; 6] = [const { OnceLock::new() }; 6];
    let (protocol_index, side_index) =
        (protocol as usize, side.map_or(0, |side| side as usize + 1));
    HANDLES[protocol_index * 3 + side_index]
        .get_or_init(|| {
            histogram!(
                "cutover_upstream_request_duration_seconds",
                "protocol" => protocol.as_str(),
                "side" => side_label(side),
            )
        })
        .record(elapsed.as_secs_f64());
}

/// The async runtime cutover chose (src/main.rs): `current_thread` for one
/// worker (`--worker-threads 1`, or a process that may use only one CPU),
/// `multi_thread` with its workers otherwise.
pub fn runtime(handle: &tokio::runtime::Handle) {
    let flavor = match handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
        _ => "multi_thread",
    };
    gauge!("cutover_runtime_worker_threads", "flavor" => flavor)
        .set(handle.metrics().num_workers() as f64);
}

pub fn routing_version(version: u64) {
    gauge!("cutover_routing_version").set(version as f64);
}

/// An admin change to the routing table, accepted or refused.
pub fn route_change(action: &'static str, outcome: &'static str) {
    counter!("cutover_route_changes_total", "action" => action, "outcome" => outcome).increment(1);
}

/// A request to the admin API refused for its credentials.
pub fn admin_unauthorized() {
    counter!("cutover_admin_unauthorized_total").increment(1);
}

/// A connection to an upstream: `opened`, or `failed` to open.
pub fn upstream_connection(protocol: Protocol, upstream: &str, outcome: &'static str) {
    counter!(
        "cutover_upstream_connections_total",
        "protocol" => protocol.as_str(),
        "upstream" => upstream.to_owned(),
        "outcome" => outcome,
    )
    .increment(1);
}

/// A request sent again on a new connection, the upstream having surely
/// not acted on it: `connection_lost` before it was sent, or (gRPC)
/// `refused_stream`.
pub fn upstream_retry(protocol: Protocol, upstream: &str, reason: &'static str) {
    counter!(
        "cutover_upstream_retries_total",
        "protocol" => protocol.as_str(),
        "upstream" => upstream.to_owned(),
        "reason" => reason,
    )
    .increment(1);
}

/// Whether each upstream answered its last health check (1) or not (0).
pub fn upstream_up(upstream: &str, up: bool) {
    gauge!("cutover_upstream_up", "upstream" => upstream.to_owned()).set(if up {
        1.0
    } else {
        0.0
    });
}

/// One side of a dual write and how it ended: `ok`, `error` (the side
/// refused it), `unreachable`, `timeout`, `transform_failed`, or `queued`
/// (put behind a non-empty replay log without being sent).
pub fn dual_write(protocol: &'static str, route: &str, side: Side, outcome: &'static str) {
    counter!(
        "cutover_dual_writes_total",
        "protocol" => protocol,
        "route" => route.to_owned(),
        "side" => side.as_str(),
        "outcome" => outcome,
    )
    .increment(1);
}

/// How a routed read was served: `blue`, `green`, `shadow`, `fuse`, or
/// `forced_blue` / `forced_green` (the client's header, where allowed).
pub fn read_decision(route: &str, mode: &'static str, decision: &'static str) {
    counter!(
        "cutover_read_decisions_total",
        "route" => route.to_owned(),
        "mode" => mode,
        "decision" => decision,
    )
    .increment(1);
}

/// A read the secondary side was meant to see but did not, and why:
/// `vector_size` (a raw query vector that does not fit green's collection)
/// or `embedding` (the side's text query could not be embedded).
pub fn read_skipped(route: &str, side: &'static str, reason: &'static str) {
    counter!("cutover_read_skipped_total", "route" => route.to_owned(), "side" => side, "reason" => reason)
        .increment(1);
}

/// A fused read served by one side only: the other `failed` (by side), or
/// the answers could not be fused (`unfusable`).
pub fn fuse_degraded(protocol: &'static str, route: &str, reason: &'static str) {
    counter!(
        "cutover_read_fuse_degraded_total",
        "protocol" => protocol,
        "route" => route.to_owned(),
        "reason" => reason,
    )
    .increment(1);
}

/// A shadow read not sent: no room (`full`) or too large (`too_large`).
pub fn shadow_dropped(route: &str, reason: &'static str) {
    counter!("cutover_shadow_dropped_total", "route" => route.to_owned(), "reason" => reason)
        .increment(1);
}

/// Shadow reads in flight now.
pub fn shadow_in_flight(in_flight: usize) {
    gauge!("cutover_shadow_in_flight").set(in_flight as f64);
}

/// How long each side took to answer a shadowed read.
pub fn shadow_latency(route: &str, side: Side, elapsed: Duration) {
    histogram!(
        "cutover_shadow_duration_seconds",
        "route" => route.to_owned(),
        "side" => side.as_str(),
    )
    .record(elapsed.as_secs_f64());
}

/// A shadow read sent but not compared: `error` (a side answered an
/// error), `unreachable`, `unreadable` or `primary_unreadable`.
pub fn shadow_uncompared(route: &str, reason: &'static str) {
    counter!("cutover_shadow_uncompared_total", "route" => route.to_owned(), "reason" => reason)
        .increment(1);
}

/// One comparison of two ranked lists (`pair`: `sides`, or `baseline`,
/// the primary against itself).
pub fn shadow_comparison(route: &str, pair: &'static str, a: &crate::ranking::Agreement) {
    let labels = [("route", route.to_owned()), ("pair", pair.to_owned())];
    counter!("cutover_shadow_comparisons_total", &labels).increment(1);
    if a.top1 {
        counter!("cutover_shadow_top1_agreements_total", &labels).increment(1);
    }
    histogram!("cutover_shadow_overlap_ratio", &labels).record(a.overlap);
    histogram!("cutover_shadow_rbo_ratio", &labels).record(a.rbo);
    histogram!("cutover_shadow_count_difference", &labels)
        .record(a.count_difference.unsigned_abs() as f64);
}

/// A read green failed, served by blue instead.
pub fn read_fallback(protocol: &'static str, route: &str) {
    counter!("cutover_read_fallbacks_total", "protocol" => protocol, "route" => route.to_owned())
        .increment(1);
}

/// The share of queries green serves on a split route, 0 to 1.
pub fn green_share(route: &str, basis_points: u16) {
    gauge!("cutover_route_green_share_ratio", "route" => route.to_owned())
        .set(f64::from(basis_points) / 10_000.0);
}

/// A route's replay log: records waiting, their bytes, and how long the
/// oldest has waited.
pub fn replay_backlog(route: &str, records: u64, bytes: u64, oldest: Duration) {
    gauge!("cutover_replay_backlog_records", "route" => route.to_owned()).set(records as f64);
    gauge!("cutover_replay_backlog_bytes", "route" => route.to_owned()).set(bytes as f64);
    gauge!("cutover_replay_oldest_age_seconds", "route" => route.to_owned())
        .set(oldest.as_secs_f64());
}

/// A secondary write put in the replay log (`ok`) or not (`error`: the
/// client got an error instead).
pub fn replay_appended(route: &str, outcome: &'static str) {
    counter!("cutover_replay_appended_total", "route" => route.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// How many appends one sync of the replay log covered.
pub fn replay_append_batch(records: usize) {
    histogram!("cutover_replay_append_batch_records").record(records as f64);
}

/// A replayed record its side applied, and how long the side took.
pub fn replay_applied(route: &str, latency: Duration) {
    counter!("cutover_replay_applied_total", "route" => route.to_owned()).increment(1);
    histogram!("cutover_replay_apply_duration_seconds", "route" => route.to_owned())
        .record(latency.as_secs_f64());
}

/// A replay attempt that failed: `unreachable`, `refused` (the side answered
/// an error), `corrupt`, `unknown_upstream` or `log`.
pub fn replay_failed(route: &str, reason: &'static str) {
    counter!("cutover_replay_failed_total", "route" => route.to_owned(), "reason" => reason)
        .increment(1);
}

/// A green transform's work on one write (`embed`: the embedding calls),
/// how it ended and how long it took.
pub fn transform(kind: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!("cutover_transforms_total", "kind" => kind, "outcome" => outcome).increment(1);
    histogram!("cutover_transform_duration_seconds", "kind" => kind).record(elapsed.as_secs_f64());
}
