//! Dual writes under the default `replay` policy, with green made sick by a
//! fault-injecting hop in front of it (stopped, slow, erroring, flapping):
//! the application sees no error and blue's latency, the replay log drains
//! once green is back, and green then holds exactly what blue holds.

mod common;

use std::time::{Duration, Instant};

use common::faulty::{Fault, Faulty};
use common::*;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::{self as pb, Condition, Filter};
use serde_json::{Value, json};

/// Long enough that a request waiting on green would show.
const GREEN_DELAY: Duration = Duration::from_millis(1_500);

fn replay_route(secondary_timeout_ms: u64) -> String {
    format!("{DOCS_ROUTE}writes = \"dual\"\nsecondary_timeout_ms = {secondary_timeout_ms}\n")
}

/// What the application holds: its clients, pointed at cutover.
struct App {
    http: reqwest::Client,
    grpc: Qdrant,
    rest_url: String,
    admin_url: String,
}

impl App {
    fn new(grpc_url: &str, rest_url: &str, admin_url: &str) -> App {
        App {
            http: reqwest::Client::new(),
            grpc: Qdrant::from_url(grpc_url)
                .skip_compatibility_check()
                .build()
                .unwrap(),
            rest_url: rest_url.to_owned(),
            admin_url: admin_url.to_owned(),
        }
    }

    async fn backlog(&self) -> u64 {
        let (_, body) =
            admin_call(&self.admin_url, reqwest::Method::GET, "/routes/docs", None).await;
        body["replay"]["records"].as_u64().unwrap()
    }

    /// Green's copies that outlasted secondary_timeout_ms, both protocols.
    async fn green_timeouts(&self) -> u64 {
        let metrics = reqwest::get(format!("{}/metrics", self.admin_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .filter(|l| l.starts_with("cutover_dual_writes_total{"))
            .filter(|l| l.contains(r#"side="green""#) && l.contains(r#"outcome="timeout""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    async fn drain(&self) {
        let (status, body) = admin_call(
            &self.admin_url,
            reqwest::Method::POST,
            "/routes/docs/replay/drain?timeout_s=60",
            None,
        )
        .await;
        assert_eq!(status, 200, "drain: {body}");
        assert_eq!(body["replay"]["records"], 0);
    }
}

/// Blue's `docs` and green's `docs_v2` hold exactly the same points.
async fn assert_sides_equal(blue_rest: &str, green_rest: &str, what: &str) {
    let http = reqwest::Client::new();
    let blue = all_points(&http, blue_rest, "docs").await;
    let green = all_points(&http, green_rest, "docs_v2").await;
    assert!(
        !blue.as_array().unwrap().is_empty(),
        "{what}: the workload ran"
    );
    assert_eq!(blue, green, "{what}: green holds exactly what blue holds");
}

/// Blue and green (the real engine), green reached through fault hops,
/// cutover in front in `dual` with the replay policy.
struct Setup {
    blue: TestUpstream,
    /// `None` while stopped.
    green: Option<cutover::embedded::EmbeddedUpstream>,
    green_dir: tempfile::TempDir,
    green_addrs: (std::net::SocketAddr, std::net::SocketAddr),
    green_rest: Faulty,
    green_grpc: Faulty,
    proxy: TestProxy,
    _dir: tempfile::TempDir,
    app: App,
}

impl Setup {
    async fn start() -> Setup {
        let (blue, green) = (start_upstream().await, start_upstream().await);
        let TestUpstream {
            upstream: green,
            dir: green_dir,
        } = green;
        create_collection(&blue.upstream.rest_url(), "docs", 4, "Dot").await;
        create_collection(&green.rest_url(), "docs_v2", 4, "Dot").await;
        let green_rest = Faulty::start(&green.rest_url(), false).await;
        let green_grpc = Faulty::start(&green.grpc_url(), true).await;
        let green_addrs = (addr_of(&green.grpc_url()), addr_of(&green.rest_url()));
        let dir = tempfile::tempdir().unwrap();
        let config = proxy_config_urls(
            (blue.upstream.rest_url(), blue.upstream.grpc_url()),
            (green_rest.url(), green_grpc.url()),
            dir.path(),
            &replay_route(200),
        );
        let proxy = start_proxy(&config, dir.path()).await;
        let app = App::new(&proxy.grpc_url(), &proxy.rest_url(), &proxy.admin_url());
        Setup {
            blue,
            green: Some(green),
            green_dir,
            green_addrs,
            green_rest,
            green_grpc,
            proxy,
            _dir: dir,
            app,
        }
    }

    fn fault(&self, fault: Fault) {
        self.green_rest.set(fault);
        self.green_grpc.set(fault);
    }

    async fn assert_sides_equal(&self, what: &str) {
        let green_url = format!("http://{}", self.green_addrs.1);
        assert_sides_equal(&self.blue.upstream.rest_url(), &green_url, what).await;
    }

    /// Stops green's process (its data stays).
    async fn stop_green(&mut self) {
        self.green.take().expect("green runs").stop().await;
    }

    /// Starts green again on its data, at its old addresses.
    async fn restart_green(&mut self) {
        let (grpc, rest) = self.green_addrs;
        let green = cutover::embedded::EmbeddedUpstream::start(self.green_dir.path(), grpc, rest)
            .await
            .expect("green restarts");
        self.green = Some(green);
    }

    async fn stop(self) {
        self.proxy.running.stop().await;
        self.blue.upstream.stop().await;
        if let Some(green) = self.green {
            green.stop().await;
        }
    }
}

fn payload(value: Value) -> std::collections::HashMap<String, pb::Value> {
    qdrant_client::Payload::try_from(value).unwrap().into()
}

/// Stable points 1..=20 are never deleted (so updates to them never fail);
/// churn points 21..=60 are upserted and deleted, by id and by filter.
const STABLE: u64 = 20;

/// Write number `i` of the workload: even ones over gRPC, odd over REST,
/// cycling through upserts, payload and vector updates, and deletes. None can
/// fail on a healthy blue. Answers how long the client waited.
async fn write(s: &App, i: u64) -> Duration {
    let mut rng = Rng::new(i);
    let stable = |k: u64| 1 + (i + k) % STABLE;
    let churn = |k: u64| 21 + (i * 3 + k) % 40;
    let started = Instant::now();
    if i.is_multiple_of(2) {
        let docs = || "docs".to_string();
        let result = match (i / 2) % 6 {
            0 => s
                .grpc
                .upsert_points(pb::UpsertPoints {
                    collection_name: docs(),
                    wait: Some(true),
                    points: (0..4)
                        .map(|k| {
                            pb::PointStruct::new(
                                churn(k),
                                rng.vector(4),
                                qdrant_client::Payload::try_from(
                                    json!({ "bucket": i % 4, "n": i }),
                                )
                                .unwrap(),
                            )
                        })
                        .collect(),
                    ..Default::default()
                })
                .await
                .map(drop),
            1 => s
                .grpc
                .set_payload(pb::SetPayloadPoints {
                    collection_name: docs(),
                    wait: Some(true),
                    payload: payload(json!({ "seen": i })),
                    points_selector: Some(id_selector(&[stable(0), stable(7)])),
                    ..Default::default()
                })
                .await
                .map(drop),
            2 => s
                .grpc
                .update_vectors(pb::UpdatePointVectors {
                    collection_name: docs(),
                    wait: Some(true),
                    points: vec![pb::PointVectors {
                        id: Some(stable(3).into()),
                        vectors: Some(rng.vector(4).into()),
                    }],
                    ..Default::default()
                })
                .await
                .map(drop),
            3 => s
                .grpc
                .delete_points(pb::DeletePoints {
                    collection_name: docs(),
                    wait: Some(true),
                    points: Some(id_selector(&[churn(5)])),
                    ..Default::default()
                })
                .await
                .map(drop),
            4 => s
                .grpc
                .delete_points(pb::DeletePoints {
                    collection_name: docs(),
                    wait: Some(true),
                    points: Some(
                        Filter::must([Condition::matches("bucket", (i % 4) as i64)]).into(),
                    ),
                    ..Default::default()
                })
                .await
                .map(drop),
            _ => s
                .grpc
                .overwrite_payload(pb::SetPayloadPoints {
                    collection_name: docs(),
                    wait: Some(true),
                    payload: payload(json!({ "only": i })),
                    points_selector: Some(id_selector(&[stable(11)])),
                    ..Default::default()
                })
                .await
                .map(drop),
        };
        result.unwrap_or_else(|err| panic!("write {i} over gRPC failed: {err}"));
    } else {
        let (method, path, body) = match (i / 2) % 6 {
            0 => (
                reqwest::Method::PUT,
                "points",
                json!({ "points": (0..4).map(|k| json!({
                    "id": churn(k), "vector": rng.vector(4), "payload": { "bucket": i % 4, "n": i }
                })).collect::<Vec<_>>() }),
            ),
            1 => (
                reqwest::Method::POST,
                "points/payload",
                json!({ "payload": { "seen": i }, "points": [stable(0), stable(7)] }),
            ),
            2 => (
                reqwest::Method::PUT,
                "points/vectors",
                json!({ "points": [{ "id": stable(3), "vector": rng.vector(4) }] }),
            ),
            3 => (
                reqwest::Method::POST,
                "points/delete",
                json!({ "points": [churn(5)] }),
            ),
            4 => (
                reqwest::Method::POST,
                "points/delete",
                json!({ "filter": { "must": [{ "key": "bucket", "match": { "value": i % 4 } }] } }),
            ),
            _ => (
                reqwest::Method::PUT,
                "points/payload",
                json!({ "payload": { "only": i }, "points": [stable(11)] }),
            ),
        };
        let response = s
            .http
            .request(
                method,
                format!("{}/collections/docs/{path}?wait=true", s.rest_url),
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status.is_success(),
            "write {i} over REST failed: {status} {}",
            response.text().await.unwrap()
        );
    }
    started.elapsed()
}

/// The stable points exist before the workload, so updates to them never fail.
async fn seed(s: &App) {
    let points: Vec<Value> = (1..=STABLE)
        .map(|id| json!({ "id": id, "vector": Rng::new(id).vector(4), "payload": { "stable": true } }))
        .collect();
    upsert_points(&s.rest_url, "docs", points).await;
}

fn median(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies[latencies.len() / 2]
}

/// Runs writes `range` with green under `fault`; answers their latencies.
async fn under_fault(s: &Setup, fault: Fault, range: std::ops::Range<u64>) -> Vec<Duration> {
    s.fault(fault);
    let mut latencies = Vec::new();
    for i in range {
        latencies.push(write(&s.app, i).await);
    }
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_green_costs_the_client_nothing_and_catches_up() {
    let s = Setup::start().await;
    seed(&s.app).await;
    under_fault(&s, Fault::None, 0..24).await;
    // A healthy green can still outlast secondary_timeout_ms on a loaded
    // machine (the whole suite in parallel on two vCPUs did once): such a
    // write waits in the log, so it is drained before the sides are compared.
    s.app.drain().await;
    s.assert_sides_equal("healthy").await;

    let slow = under_fault(&s, Fault::Delay(GREEN_DELAY), 24..84).await;
    // The first write waits out secondary_timeout_ms (200 ms); the rest go
    // behind it in the log without waiting on green at all.
    assert!(
        median(slow.clone()) < Duration::from_millis(100),
        "median {:?}",
        median(slow.clone())
    );
    assert!(
        slow.iter().all(|l| *l < GREEN_DELAY),
        "no write waited for the slow green: {slow:?}"
    );
    assert!(s.app.backlog().await > 0, "writes wait in the replay log");

    s.fault(Fault::None);
    s.app.drain().await;
    s.assert_sides_equal("after a slow green").await;
    // The log empty, writes go straight to both sides again, unless a
    // healthy green outlasted secondary_timeout_ms on a loaded machine (as
    // above): that write, and those behind it, wait in the log.
    let timeouts = s.app.green_timeouts().await;
    under_fault(&s, Fault::None, 84..96).await;
    if s.app.green_timeouts().await == timeouts {
        assert_eq!(s.app.backlog().await, 0);
    } else {
        s.app.drain().await;
    }
    s.assert_sides_equal("after the log emptied").await;
    assert_metrics_contain(
        &s.proxy.admin_url(),
        &[
            r#"cutover_dual_writes_total{protocol="grpc",route="docs",side="green",outcome="timeout"}"#,
            r#"cutover_dual_writes_total{protocol="rest",route="docs",side="green",outcome="queued"}"#,
            r#"cutover_replay_appended_total{route="docs",outcome="ok"}"#,
            r#"cutover_replay_applied_total{route="docs"}"#,
            // (Gauges are process-wide and these tests share one: the
            // backlog itself is checked through this proxy's admin API.)
            r#"cutover_replay_backlog_records{route="docs"}"#,
            r#"cutover_replay_oldest_age_seconds{route="docs"}"#,
        ],
    )
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erroring_or_stopped_green_is_replayed_in_order_once_back() {
    let mut s = Setup::start().await;
    seed(&s.app).await;
    under_fault(&s, Fault::None, 0..12).await;

    // Green answers errors: writes succeed for the client, green's go to the log.
    let erroring = under_fault(&s, Fault::Error, 12..60).await;
    assert!(median(erroring) < Duration::from_millis(100));
    assert!(s.app.backlog().await > 0);
    assert_metrics_contain(
        &s.proxy.admin_url(),
        &[r#"cutover_replay_failed_total{route="docs",reason="refused"}"#],
    )
    .await;

    // Green stops altogether (its process gone); the workload goes on.
    s.stop_green().await;
    s.fault(Fault::None);
    under_fault(&s, Fault::None, 60..120).await;
    let waiting = s.app.backlog().await;
    assert!(waiting >= 100, "{waiting} writes wait for green");
    let (_, status) = admin_call(&s.proxy.admin_url(), reqwest::Method::GET, "/replay", None).await;
    assert!(status["routes"][0]["last_error"].is_string(), "{status}");

    // Flipping reads to green now would serve them without those writes.
    let (code, body) = admin_call(
        &s.proxy.admin_url(),
        reqwest::Method::PATCH,
        "/routes/docs",
        Some(json!({ "primary": "green" })),
    )
    .await;
    assert_eq!(code, 409, "{body}");

    // Green is back, on its data; the log drains in order.
    s.restart_green().await;
    s.app.drain().await;
    s.assert_sides_equal("after errors and a stop").await;
    s.stop().await;
}

fn addr_of(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_updates_to_the_same_points_while_green_flaps_end_equal() {
    let s = std::sync::Arc::new(Setup::start().await);
    seed(&s.app).await;
    let flapping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flapper = {
        let (s, flapping) = (s.clone(), flapping.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while flapping.load(std::sync::atomic::Ordering::Relaxed) {
                s.fault(if n.is_multiple_of(2) {
                    Fault::Error
                } else {
                    Fault::None
                });
                n += 1;
                tokio::time::sleep(Duration::from_millis(15 + n % 20)).await;
            }
            s.fault(Fault::None);
        })
    };
    // Four writers, each owning its points, each write depending on the one
    // before it (the last value written must win on green as on blue).
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let ids: Vec<u64> = (1..=5).map(|k| w * 5 + k).collect();
                for round in 0..60u64 {
                    let value = json!({ "writer": w, "round": round });
                    let response = s
                        .app
                        .http
                        .post(format!(
                            "{}/collections/docs/points/payload?wait=true",
                            s.app.rest_url
                        ))
                        .json(&json!({ "payload": { "last": value }, "points": ids }))
                        .send()
                        .await
                        .unwrap();
                    assert!(response.status().is_success());
                    let vectors = pb::UpdatePointVectors {
                        collection_name: "docs".into(),
                        wait: Some(true),
                        points: vec![pb::PointVectors {
                            id: Some(ids[(round % 5) as usize].into()),
                            vectors: Some(vec![round as f32, w as f32, 0.0, 1.0].into()),
                        }],
                        ..Default::default()
                    };
                    s.app.grpc.update_vectors(vectors).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    flapping.store(false, std::sync::atomic::Ordering::Relaxed);
    flapper.await.unwrap();
    s.app.drain().await;
    s.assert_sides_equal("after a flapping green").await;
    let blue = all_points(&s.app.http, &s.blue.upstream.rest_url(), "docs").await;
    assert_eq!(
        blue[0]["payload"]["last"]["round"], 59,
        "the last write won"
    );
    let s = std::sync::Arc::into_inner(s).unwrap();
    s.stop().await;
}

/// cutover in a process of its own, so that it can be killed with SIGKILL.
struct Process {
    served: Served,
    app: App,
}

impl Process {
    fn spawn(config: &std::path::Path) -> Process {
        let served = spawn_serve(config, None, &[]);
        let app = App::new(
            &format!("http://{}", served.grpc),
            &format!("http://{}", served.rest),
            &served.admin,
        );
        Process { served, app }
    }

    /// SIGKILL, as dropping the process sends.
    fn kill_9(self) {
        drop(self.served);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_with_writes_in_the_log_loses_none() {
    let blue = start_upstream().await;
    let green_dir = tempfile::tempdir().unwrap();
    let green = start_in(green_dir.path()).await;
    let (green_grpc, green_rest) = (addr_of(&green.grpc_url()), addr_of(&green.rest_url()));
    create_collection(&blue.upstream.rest_url(), "docs", 4, "Dot").await;
    create_collection(&green.rest_url(), "docs_v2", 4, "Dot").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        proxy_config(&blue.upstream, &green, dir.path(), &replay_route(200)),
    )
    .unwrap();

    let cutover = Process::spawn(&config);
    seed(&cutover.app).await;
    for i in 0..12 {
        write(&cutover.app, i).await;
    }
    green.stop().await;
    for i in 12..60 {
        write(&cutover.app, i).await;
    }
    let waiting = cutover.app.backlog().await;
    assert!(waiting >= 48, "{waiting} writes wait for green");
    cutover.kill_9();

    // Restarted, cutover finds every record it acknowledged, and new writes
    // still go behind them.
    let cutover = Process::spawn(&config);
    assert_eq!(
        cutover.app.backlog().await,
        waiting,
        "the log survived SIGKILL"
    );
    for i in 60..72 {
        write(&cutover.app, i).await;
    }
    assert_eq!(cutover.app.backlog().await, waiting + 12);

    let green =
        cutover::embedded::EmbeddedUpstream::start(green_dir.path(), green_grpc, green_rest)
            .await
            .expect("green restarts on its data");
    cutover.app.drain().await;
    assert_sides_equal(
        &blue.upstream.rest_url(),
        &green.rest_url(),
        "after kill -9 and restart",
    )
    .await;
    drop(cutover);
    green.stop().await;
    blue.upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replay_holds_green_writes_until_resumed() {
    let s = Setup::start().await;
    seed(&s.app).await;
    let call = |path: &'static str| admin_call(&s.app.admin_url, reqwest::Method::POST, path, None);
    let (status, body) = call("/routes/docs/replay/pause").await;
    assert_eq!(
        (status.as_u16(), &body["replay"]["paused"]),
        (200, &json!(true)),
        "{body}"
    );
    // Green is healthy, but paused: its writes wait in the log, in order.
    under_fault(&s, Fault::None, 0..12).await;
    assert_eq!(s.app.backlog().await, 12);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.app.backlog().await, 12, "nothing is applied while paused");
    let (status, _) = call("/routes/docs/replay/resume").await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.app.backlog().await > 0 {
        assert!(
            Instant::now() < deadline,
            "the resumed replayer drains the log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.assert_sides_equal("after pause and resume").await;
    let (status, _) = call("/routes/nope/replay/pause").await;
    assert_eq!(status, 404);
    s.stop().await;
}
