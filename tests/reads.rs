//! Reads through cutover against two real embedded upstreams whose
//! rankings differ on purpose: fusion against a hand-computed RRF, shadow
//! comparisons and their mismatch sample, a slow green that a shadow must
//! not pass on to the client, payload keys, the allow-list and the forced
//! side, a green that cannot take a query vector, green's copy of a
//! shadowed read shaped off the client's path, and blue's copy of a split
//! read shaped only when blue must serve it.

mod common;

use std::time::{Duration, Instant};

use common::faulty::{Fault, Faulty};
use common::standin::{SLOW, StandIn, standin_vector};
use common::*;
use qdrant_client::qdrant::points_client::PointsClient;
use qdrant_client::qdrant::{self as pb};
use reqwest::Method;
use serde_json::{Value, json};

/// Blue ranks 1, 2, 3, 4 for the query [1, 0]; green ranks 3, 1, 5.
async fn seed(blue: &TestUpstream, green: &TestUpstream) {
    for (upstream, collection, points) in [
        (blue, "docs", vec![(1, 4.0), (2, 3.0), (3, 2.0), (4, 1.0)]),
        (green, "docs_v2", vec![(3, 3.0), (1, 2.0), (5, 1.0)]),
    ] {
        let base = upstream.upstream.rest_url();
        create_collection(&base, collection, 2, "Dot").await;
        let side = if collection == "docs" {
            "blue"
        } else {
            "green"
        };
        let points: Vec<Value> = points
            .iter()
            .map(|(id, x)| json!({ "id": id, "vector": [x, 0.0], "payload": { "side": side } }))
            .collect();
        upsert_points(&base, collection, points).await;
    }
}

fn route(reads: &str) -> String {
    format!("{DOCS_ROUTE}reads = {reads}\n")
}

/// Every read shadowed, with no noise baseline (a `reads` table's fields).
const SHADOW_ALL: &str = r#"mode = "shadow", green_percent = 100.0, baseline_percent = 0.0"#;

/// A route named `name` over blue's `docs` and green's `docs_v2`, with
/// `settings` (TOML lines): a test whose metrics must be its own names its
/// route, since the metrics recorder is one per test process.
fn named_route(name: &str, settings: &str) -> String {
    format!(
        r#"
[[routes]]
collection = "{name}"
blue = {{ upstream = "blue", collection = "docs" }}
green = {{ upstream = "green", collection = "docs_v2" }}
{settings}
"#
    )
}

fn rrf(ranks: &[usize]) -> f64 {
    ranks.iter().map(|r| 1.0 / (60.0 + *r as f64)).sum()
}

/// (ID, score, payload side) of each point in a REST list.
fn rest_points(list: &Value) -> Vec<(u64, f64, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().unwrap(),
                p["score"].as_f64().unwrap(),
                p["payload"]["side"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn grpc_points(points: &[pb::ScoredPoint]) -> Vec<(u64, f64, String)> {
    use pb::point_id::PointIdOptions;
    points
        .iter()
        .map(|p| {
            let Some(PointIdOptions::Num(id)) = p.id.as_ref().unwrap().point_id_options else {
                panic!("numeric ids")
            };
            let side = p
                .payload
                .get("side")
                .and_then(|v| v.as_str().map(|s| s.to_string()))
                .unwrap_or_default();
            (id, f64::from(p.score), side)
        })
        .collect()
}

fn assert_ranking(got: &[(u64, f64, String)], want: &[(u64, f64, &str)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?}");
    for ((id, score, side), (want_id, want_score, want_side)) in got.iter().zip(want) {
        assert_eq!(id, want_id, "{what}: {got:?}");
        assert!((score - want_score).abs() < 1e-6, "{what}: {got:?}");
        assert_eq!(side, want_side, "{what}: payload of {id}");
    }
}

async fn rest_post(url: String, body: Value, headers: &[(&str, &str)]) -> (String, u16, Value) {
    let mut request = reqwest::Client::new().post(url).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let side = response
        .headers()
        .get("x-cutover-side")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let status = response.status().as_u16();
    (side, status, response.json().await.unwrap())
}

fn side_of<T>(response: &tonic::Response<T>) -> String {
    response
        .metadata()
        .get("x-cutover-side")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// A gRPC search of `collection` for [1, 0] with payloads, through `points`.
async fn grpc_search(
    points: &mut PointsClient<tonic::transport::Channel>,
    collection: &str,
    limit: u64,
    offset: Option<u64>,
) -> tonic::Response<pb::SearchResponse> {
    #[allow(deprecated)]
    points
        .search(pb::SearchPoints {
            collection_name: collection.into(),
            vector: vec![1.0, 0.0],
            limit,
            offset,
            with_payload: Some(true.into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// The IDs of (ID, score, side) points, in order.
fn ids(points: &[(u64, f64, String)]) -> Vec<u64> {
    points.iter().map(|p| p.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuse_matches_a_hand_computed_rrf_on_both_protocols() {
    let blue = start_upstream().await;
    let green = start_upstream().await;
    seed(&blue, &green).await;
    let dir = tempfile::tempdir().unwrap();
    let reads = route(r#"{ mode = "fuse", green_percent = 100.0 }"#);
    let proxy = start_proxy(
        &proxy_config(&blue.upstream, &green.upstream, dir.path(), &reads),
        dir.path(),
    )
    .await;
    let rest = proxy.rest_url();

    // blue 1 2 3 4, green 3 1 5: 1 = 1/61 + 1/62, 3 = 1/63 + 1/61, 2 = 1/62,
    // 5 = 1/63, 4 = 1/64. Payload from blue where both have the point.
    let all = [
        (1, rrf(&[1, 2]), "blue"),
        (3, rrf(&[3, 1]), "blue"),
        (2, rrf(&[2]), "blue"),
        (5, rrf(&[3]), "green"),
        (4, rrf(&[4]), "blue"),
    ];
    let page = &all[1..4];

    let (side, status, body) = rest_post(
        format!("{rest}/collections/docs/points/query"),
        json!({ "query": [1.0, 0.0], "limit": 3, "offset": 1, "with_payload": true }),
        &[],
    )
    .await;
    assert_eq!((side.as_str(), status), ("fused", 200), "{body}");
    assert_ranking(
        &rest_points(&body["result"]["points"]),
        page,
        "REST query page",
    );
    let (_, _, body) = rest_post(
        format!("{rest}/collections/docs/points/search"),
        json!({ "vector": [1.0, 0.0], "limit": 10, "with_payload": true }),
        &[],
    )
    .await;
    assert_ranking(&rest_points(&body["result"]), &all, "REST search");
    let (_, _, body) = rest_post(
        format!("{rest}/collections/docs/points/query/batch"),
        json!({ "searches": [
            { "query": [1.0, 0.0], "limit": 3, "offset": 1, "with_payload": true },
            { "query": [1.0, 0.0], "limit": 1, "with_payload": true },
        ]}),
        &[],
    )
    .await;
    assert_ranking(
        &rest_points(&body["result"][0]["points"]),
        page,
        "REST batch 0",
    );
    // Each side asked for its top 1: blue's 1 and green's 3 tie at 1/61; the primary's first.
    assert_ranking(
        &rest_points(&body["result"][1]["points"]),
        &[(1, rrf(&[1]), "blue")],
        "REST batch 1",
    );

    let mut points = PointsClient::connect(proxy.grpc_url()).await.unwrap();
    let response = grpc_search(&mut points, "docs", 3, Some(1)).await;
    assert_eq!(side_of(&response), "fused");
    assert_ranking(
        &grpc_points(&response.into_inner().result),
        page,
        "gRPC search page",
    );
    let query = pb::QueryPoints {
        collection_name: "docs".into(),
        query: Some(pb::Query::new_nearest(vec![1.0, 0.0])),
        limit: Some(10),
        with_payload: Some(true.into()),
        ..Default::default()
    };
    let response = points.query(query.clone()).await.unwrap();
    assert_ranking(
        &grpc_points(&response.into_inner().result),
        &all,
        "gRPC query",
    );
    let response = points
        .query_batch(pb::QueryBatchPoints {
            collection_name: "docs".into(),
            query_points: vec![query.clone(), query.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    for batch in response.into_inner().result {
        assert_ranking(&grpc_points(&batch.result), &all, "gRPC query batch");
    }

    // Green down: blue's answer alone, cut to the page, scored by its ranks.
    green.upstream.stop().await;
    let (side, status, body) = rest_post(
        format!("{rest}/collections/docs/points/query"),
        json!({ "query": [1.0, 0.0], "limit": 3, "offset": 1, "with_payload": true }),
        &[],
    )
    .await;
    assert_eq!((side.as_str(), status), ("blue", 200), "{body}");
    let blue_page = [
        (2, rrf(&[2]), "blue"),
        (3, rrf(&[3]), "blue"),
        (4, rrf(&[4]), "blue"),
    ];
    assert_ranking(
        &rest_points(&body["result"]["points"]),
        &blue_page,
        "REST degraded",
    );
    let response = points
        .query(pb::QueryPoints {
            limit: Some(3),
            offset: Some(1),
            ..query
        })
        .await
        .unwrap();
    assert_eq!(side_of(&response), "blue");
    assert_ranking(
        &grpc_points(&response.into_inner().result),
        &blue_page,
        "gRPC degraded",
    );
    assert_metrics_contain(
        &proxy.admin_url(),
        &[
            r#"cutover_read_fuse_degraded_total{protocol="rest",route="docs",reason="green"} 1"#,
            r#"cutover_read_fuse_degraded_total{protocol="grpc",route="docs",reason="green"} 1"#,
            r#"cutover_read_decisions_total{route="docs",mode="fuse",decision="fuse"}"#,
        ],
    )
    .await;
    proxy.running.stop().await;
    blue.upstream.stop().await;
}

/// Polls a route's shadow report until `done` says it is complete.
async fn shadow_report(admin: &str, route: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let path = format!("/routes/{route}/shadow");
    loop {
        let (status, body) = admin_call(admin, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "shadow report never complete: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_serves_blue_and_reports_green_against_the_noise_baseline() {
    let blue = start_upstream().await;
    let green = start_upstream().await;
    seed(&blue, &green).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mismatches.jsonl");
    let config = format!(
        "{}\n[shadow]\nmismatch_log = \"{}\"\n",
        route(r#"{ mode = "shadow", green_percent = 100.0, baseline_percent = 100.0 }"#),
        log.display()
    );
    let proxy = start_proxy(
        &proxy_config(&blue.upstream, &green.upstream, dir.path(), &config),
        dir.path(),
    )
    .await;
    let (side, status, body) = rest_post(
        format!("{}/collections/docs/points/query", proxy.rest_url()),
        json!({ "query": [1.0, 0.0], "limit": 3, "with_payload": true }),
        &[],
    )
    .await;
    assert_eq!((side.as_str(), status), ("blue", 200));
    let got = ids(&rest_points(&body["result"]["points"]));
    assert_eq!(got, [1, 2, 3], "the client gets blue's answer, untouched");
    // Mirrors finish after the client's answer, in any order: let the first
    // be compared before the second is sent, so the log's order is known.
    shadow_report(&proxy.admin_url(), "docs", |r| {
        r["report"]["sides"]["compared"] == 1 && r["report"]["baseline"]["compared"] == 1
    })
    .await;
    let mut points = PointsClient::connect(proxy.grpc_url()).await.unwrap();
    let response = grpc_search(&mut points, "docs", 3, None).await;
    assert_eq!(side_of(&response), "blue");
    let got = ids(&grpc_points(&response.into_inner().result));
    assert_eq!(got, [1, 2, 3]);

    let shadow = shadow_report(&proxy.admin_url(), "docs", |r| {
        r["report"]["sides"]["compared"] == 2 && r["report"]["baseline"]["compared"] == 2
    })
    .await;
    let report = &shadow["report"];
    assert_eq!(report["mirrored"], 2);
    // Blue 1 2 3 against green 3 1 5: two of three shared, tops differ.
    assert_eq!(report["sides"]["identical"], 0);
    assert_eq!(report["sides"]["top1_agree"], 0);
    assert!((report["sides"]["mean_overlap"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    // Exact search on blue agrees with itself: the noise floor is zero.
    assert_eq!(report["baseline"]["identical"], 2);
    assert_eq!(report["baseline"]["mean_rbo"], 1.0);
    let mismatches = shadow["mismatches"].as_array().unwrap();
    assert_eq!(mismatches.len(), 2, "{shadow}");
    for m in mismatches {
        assert_eq!(m["primary_ids"], json!([["1", "2", "3"]]));
        assert_eq!(m["other_ids"], json!([["3", "1", "5"]]));
        assert_eq!(m["pair"], "sides");
        assert!(m["request"].as_str().unwrap().contains("limit"), "{m}");
    }
    let methods: Vec<&str> = mismatches
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["query", "Search"]);
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["protocol"], "grpc");
    assert_metrics_contain(
        &proxy.admin_url(),
        &[
            r#"cutover_shadow_comparisons_total{route="docs",pair="sides"} 2"#,
            r#"cutover_shadow_comparisons_total{route="docs",pair="baseline"} 2"#,
            r#"cutover_shadow_top1_agreements_total{route="docs",pair="baseline"} 2"#,
            r#"cutover_shadow_duration_seconds_count{route="docs",side="green"} 2"#,
            r#"cutover_shadow_rbo_ratio_count{route="docs",pair="sides"} 2"#,
        ],
    )
    .await;
    proxy.running.stop().await;
    blue.upstream.stop().await;
    green.upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_green_under_full_shadow_costs_the_client_nothing_and_stays_bounded() {
    let blue = start_upstream().await;
    let green = start_upstream().await;
    seed(&blue, &green).await;
    let slow = Duration::from_millis(600);
    let green_rest = Faulty::start(&green.upstream.rest_url(), false).await;
    let green_grpc = Faulty::start(&green.upstream.grpc_url(), true).await;
    green_rest.set(Fault::Delay(slow));
    green_grpc.set(Fault::Delay(slow));
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n[shadow]\nmax_in_flight = 4\n",
        named_route(
            "slow",
            r#"reads = { mode = "shadow", green_percent = 100.0, baseline_percent = 0.0 }"#
        )
    );
    let proxy = start_proxy(
        &proxy_config_urls(
            (blue.upstream.rest_url(), blue.upstream.grpc_url()),
            (
                format!("http://{}", green_rest.addr),
                format!("http://{}", green_grpc.addr),
            ),
            dir.path(),
            &config,
        ),
        dir.path(),
    )
    .await;
    let admin = proxy.admin_url();
    let http = reqwest::Client::new();
    let mut points = PointsClient::connect(proxy.grpc_url()).await.unwrap();
    let mut latencies = Vec::new();
    let mut most_in_flight = 0;
    for i in 0..40 {
        let started = Instant::now();
        if i % 2 == 0 {
            let response = http
                .post(format!(
                    "{}/collections/slow/points/query",
                    proxy.rest_url()
                ))
                .json(&json!({ "query": [1.0, 0.0], "limit": 3 }))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
        } else {
            grpc_search(&mut points, "slow", 3, None).await;
        }
        latencies.push(started.elapsed());
        let (_, shadow) = admin_call(&admin, Method::GET, "/routes/slow/shadow", None).await;
        let in_flight = shadow["in_flight"].as_u64().unwrap();
        assert!(
            in_flight <= 4,
            "the shadow queue grew past its bound: {shadow}"
        );
        most_in_flight = most_in_flight.max(in_flight);
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    assert!(
        median < slow / 4,
        "clients waited for the slow green: median {median:?} against {slow:?}"
    );
    assert_eq!(most_in_flight, 4, "the bound was reached");
    let shadow = shadow_report(&admin, "slow", |r| r["in_flight"] == 0).await;
    let report = &shadow["report"];
    let dropped = report["dropped"]["full"].as_u64().unwrap();
    let mirrored = report["mirrored"].as_u64().unwrap();
    assert!(dropped > 0, "a full queue drops shadows: {shadow}");
    assert_eq!(
        dropped + mirrored,
        40,
        "every read mirrored or counted as dropped"
    );
    assert_eq!(report["sides"]["compared"].as_u64().unwrap(), mirrored);
    assert_metrics_contain(
        &admin,
        &[r#"cutover_shadow_dropped_total{route="slow",reason="full"}"#],
    )
    .await;
    proxy.running.stop().await;
    blue.upstream.stop().await;
    green.upstream.stop().await;
}

/// The side one REST query with this tenant in its filter went to.
async fn rest_side(rest: &str, tenant: &str, headers: &[(&str, &str)]) -> (String, u16, Value) {
    rest_post(
        format!("{rest}/collections/docs/points/query"),
        json!({ "query": [1.0, 0.0], "limit": 1, "filter": { "must": [
            { "key": "tenant", "match": { "value": tenant } }
        ]}}),
        headers,
    )
    .await
}

async fn grpc_side(
    points: &mut PointsClient<tonic::transport::Channel>,
    tenant: &str,
    force: Option<&str>,
) -> Result<String, tonic::Status> {
    let mut request = tonic::Request::new(pb::QueryPoints {
        collection_name: "docs".into(),
        query: Some(pb::Query::new_nearest(vec![1.0, 0.0])),
        filter: Some(pb::Filter::must([pb::Condition::matches(
            "tenant",
            tenant.to_string(),
        )])),
        limit: Some(1),
        ..Default::default()
    });
    if let Some(force) = force {
        request
            .metadata_mut()
            .insert("x-cutover-read-side", force.parse().unwrap());
    }
    points.query(request).await.map(|r| side_of(&r))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_key_buckets_alike_on_both_protocols_with_allow_list_and_forced_side() {
    let blue = start_upstream().await;
    let green = start_upstream().await;
    seed(&blue, &green).await;
    let dir = tempfile::tempdir().unwrap();
    let reads = route(
        r#"{ mode = "split", green_percent = 50.0, key = "payload:tenant", green_keys = ["vip"], allow_force_side = true }"#,
    );
    let proxy = start_proxy(
        &proxy_config(&blue.upstream, &green.upstream, dir.path(), &reads),
        dir.path(),
    )
    .await;
    let (rest, admin) = (proxy.rest_url(), proxy.admin_url());
    let mut points = PointsClient::connect(proxy.grpc_url()).await.unwrap();
    let share = cutover::split::basis_points(50.0).unwrap();
    let mut sides = std::collections::BTreeSet::new();
    for i in 0..16 {
        let tenant = format!("tenant-{i}");
        let want = if cutover::split::to_green(tenant.as_bytes(), share) {
            "green"
        } else {
            "blue"
        };
        let (side, status, body) = rest_side(&rest, &tenant, &[]).await;
        assert_eq!((side.as_str(), status), (want, 200), "{tenant}: {body}");
        assert_eq!(
            grpc_side(&mut points, &tenant, None).await.unwrap(),
            want,
            "{tenant}"
        );
        sides.insert(side);
    }
    assert_eq!(sides.len(), 2, "both sides serve some tenants at 50%");

    // At 0%, only the allow-listed key and forced reads reach green.
    let (status, _) = admin_call(
        &admin,
        Method::PATCH,
        "/routes/docs",
        Some(json!({ "green_percent": 0.0 })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(rest_side(&rest, "vip", &[]).await.0, "green");
    assert_eq!(grpc_side(&mut points, "vip", None).await.unwrap(), "green");
    assert_eq!(rest_side(&rest, "tenant-1", &[]).await.0, "blue");
    let forced = [("x-cutover-read-side", "green")];
    assert_eq!(rest_side(&rest, "tenant-1", &forced).await.0, "green");
    assert_eq!(
        grpc_side(&mut points, "tenant-1", Some("green"))
            .await
            .unwrap(),
        "green"
    );
    let wrong = [("x-cutover-read-side", "purple")];
    let (_, status, body) = rest_side(&rest, "tenant-1", &wrong).await;
    assert_eq!(status, 400);
    assert!(
        body["status"]["error"]
            .as_str()
            .unwrap()
            .contains("x-cutover-read-side"),
        "{body}"
    );
    let status = grpc_side(&mut points, "tenant-1", Some("purple"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_metrics_contain(
        &admin,
        &[r#"cutover_read_decisions_total{route="docs",mode="split",decision="forced_green"} 2"#],
    )
    .await;
    proxy.running.stop().await;
    blue.upstream.stop().await;
    green.upstream.stop().await;
}

/// Ranked IDs of a direct query to one upstream.
async fn direct_ids(rest_url: &str, collection: &str, vector: Vec<f32>) -> Vec<u64> {
    let (_, _, body) = rest_post(
        format!("{rest_url}/collections/{collection}/points/query"),
        json!({ "query": vector, "limit": 4 }),
        &[],
    )
    .await;
    ids(&rest_points(&body["result"]["points"]))
}

/// Two models: blue holds a 2-dimension model's vectors in `docs`, green a
/// 3-dimension one's in `docs_v2`; a stand-in embedding service; cutover
/// with route `name` over them, green's side embedded with `green_model`,
/// blue's queries with `blue-d2`, its reads `{ reads, blue_embedder }`,
/// then `more` (TOML).
struct TwoModels {
    blue: TestUpstream,
    green: TestUpstream,
    standin: StandIn,
    proxy: TestProxy,
    dir: tempfile::TempDir,
}

impl TwoModels {
    /// The same upstreams and stand-in under `routes`, reloaded.
    async fn reload(&self, routes: &str) {
        let config = proxy_config(
            &self.blue.upstream,
            &self.green.upstream,
            self.dir.path(),
            routes,
        );
        std::fs::write(&self.proxy.config_path, config).unwrap();
        let (status, body) =
            admin_call(&self.proxy.admin_url(), Method::POST, "/reload", None).await;
        assert_eq!(status, 200, "{body}");
    }

    async fn stop(self) {
        self.proxy.running.stop().await;
        self.blue.upstream.stop().await;
        self.green.upstream.stop().await;
    }
}

async fn two_models(name: &str, green_model: &str, reads: &str, more: &str) -> TwoModels {
    let blue = start_upstream().await;
    let green = start_upstream().await;
    let standin = StandIn::start().await;
    for (upstream, collection, dim) in [(&blue, "docs", 2), (&green, "docs_v2", 3)] {
        let base = upstream.upstream.rest_url();
        create_collection(&base, collection, dim, "Dot").await;
        let points: Vec<Value> = (1..=6)
            .map(|id| json!({ "id": id, "vector": Rng::new(id * 7 + dim as u64).vector(dim) }))
            .collect();
        upsert_points(&base, collection, points).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let routes = models_route(&standin, name, green_model, reads, more);
    let proxy = start_proxy(
        &proxy_config(&blue.upstream, &green.upstream, dir.path(), &routes),
        dir.path(),
    )
    .await;
    TwoModels {
        blue,
        green,
        standin,
        proxy,
        dir,
    }
}

/// Route `name` as [`two_models`] describes it.
fn models_route(
    standin: &StandIn,
    name: &str,
    green_model: &str,
    reads: &str,
    more: &str,
) -> String {
    let url = format!("http://{}/v1/embeddings", standin.addr);
    named_route(
        name,
        &format!(
            r#"transform = {{ kind = "embed", url = "{url}", model = "{green_model}", text_field = "text" }}
reads = {{ {reads}, blue_embedder = {{ url = "{url}", model = "blue-d2" }} }}
{more}"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_queries_are_embedded_per_side_and_raw_vectors_green_cannot_take_skip_it() {
    let models = two_models(
        "docs",
        "green-d3",
        r#"mode = "fuse", green_percent = 100.0"#,
        "",
    )
    .await;
    let TwoModels {
        blue, green, proxy, ..
    } = &models;
    let rest = proxy.rest_url();

    // A text query: each side gets its own model's vector; both rank; fused.
    let blue_ids = direct_ids(
        &blue.upstream.rest_url(),
        "docs",
        standin_vector("red shoes", 2),
    )
    .await;
    let green_ids = direct_ids(
        &green.upstream.rest_url(),
        "docs_v2",
        standin_vector("red shoes", 3),
    )
    .await;
    let mut want: Vec<(u64, f64)> = Vec::new();
    for ids in [&blue_ids, &green_ids] {
        for (rank, id) in ids.iter().enumerate() {
            match want.iter_mut().find(|(w, _)| w == id) {
                Some((_, score)) => *score += rrf(&[rank + 1]),
                None => want.push((*id, rrf(&[rank + 1]))),
            }
        }
    }
    want.sort_by(|a, b| b.1.total_cmp(&a.1));
    want.truncate(4);
    let (side, status, body) = rest_post(
        format!("{rest}/collections/docs/points/query"),
        json!({ "query": { "text": "red shoes", "model": "whatever-the-app-sent" }, "limit": 4 }),
        &[],
    )
    .await;
    assert_eq!((side.as_str(), status), ("fused", 200), "{body}");
    let want_ids: Vec<u64> = want.iter().map(|p| p.0).collect();
    let got = rest_points(&body["result"]["points"]);
    assert_eq!(ids(&got), want_ids);
    for ((_, score, _), (_, want_score)) in got.iter().zip(&want) {
        assert!((score - want_score).abs() < 1e-9, "{got:?}");
    }
    let mut points = PointsClient::connect(proxy.grpc_url()).await.unwrap();
    let response = points
        .query(pb::QueryPoints {
            collection_name: "docs".into(),
            query: Some(pb::Query::new_nearest(pb::Document::new(
                "red shoes",
                "any",
            ))),
            limit: Some(4),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(side_of(&response), "fused");
    assert_eq!(ids(&grpc_points(&response.into_inner().result)), want_ids);

    // A raw 2-dimension vector fits blue only: blue serves it, the page as
    // asked (not widened for a fusion that did not happen), counted.
    let (side, status, body) = rest_post(
        format!("{rest}/collections/docs/points/query"),
        json!({ "query": [1.0, 0.0], "limit": 2, "offset": 1 }),
        &[],
    )
    .await;
    assert_eq!((side.as_str(), status), ("blue", 200), "{body}");
    let got = ids(&rest_points(&body["result"]["points"]));
    let blue_ranking = direct_ids(&blue.upstream.rest_url(), "docs", vec![1.0, 0.0]).await;
    assert_eq!(got, blue_ranking[1..3]);
    let response = grpc_search(&mut points, "docs", 4, None).await;
    assert_eq!(side_of(&response), "blue");
    assert_metrics_contain(
        &proxy.admin_url(),
        &[r#"cutover_read_skipped_total{route="docs",side="green",reason="vector_size"} 2"#],
    )
    .await;
    models.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_shapes_greens_copy_in_its_mirror_task_not_on_the_clients_path() {
    // Green's model answers only after `SLOW`: its embedding is in flight
    // long after the client has blue's answer.
    let models = two_models("catalog", "slow-green-d3", SHADOW_ALL, "").await;
    let TwoModels { blue, proxy, .. } = &models;
    let rest = proxy.rest_url();
    let admin = proxy.admin_url();

    // A text query: blue answers with its own model's vector, and green's
    // copy is still being embedded when the client has its answer.
    let (side, status, body) = rest_post(
        format!("{rest}/collections/catalog/points/query"),
        json!({ "query": { "text": "red shoes", "model": "any" }, "limit": 4 }),
        &[],
    )
    .await;
    assert_eq!((side.as_str(), status), ("blue", 200), "{body}");
    let blue_ids = direct_ids(
        &blue.upstream.rest_url(),
        "docs",
        standin_vector("red shoes", 2),
    )
    .await;
    assert_eq!(ids(&rest_points(&body["result"]["points"])), blue_ids);
    for _ in 0..2 {
        let (_, shadow) = admin_call(&admin, Method::GET, "/routes/catalog/shadow", None).await;
        assert_eq!(
            shadow["in_flight"], 1,
            "green's copy is being made: {shadow}"
        );
        assert_eq!(shadow["report"]["sides"]["compared"], 0, "{shadow}");
        tokio::time::sleep(SLOW / 4).await;
    }
    // Then green gets its 3-dimension vector (a wrong size would be an
    // error answer, not compared) and the answers are compared.
    let shadow = shadow_report(&admin, "catalog", |r| r["report"]["sides"]["compared"] == 1).await;
    assert_eq!(shadow["report"]["uncompared"], json!({}), "{shadow}");
    assert_eq!(shadow["in_flight"], 0);

    // A raw 2-dimension vector, on both protocols: blue serves it, and
    // green's copy, checked in the mirror task, is not sent.
    let (side, status, body) = rest_post(
        format!("{rest}/collections/catalog/points/query"),
        json!({ "query": [1.0, 0.0], "limit": 3 }),
        &[],
    )
    .await;
    assert_eq!((side.as_str(), status), ("blue", 200), "{body}");
    let mut points = PointsClient::connect(proxy.grpc_url()).await.unwrap();
    let response = grpc_search(&mut points, "catalog", 3, None).await;
    assert_eq!(side_of(&response), "blue");
    let shadow = shadow_report(&admin, "catalog", |r| {
        r["report"]["uncompared"]["vector_size"] == 2 && r["in_flight"] == 0
    })
    .await;
    assert_eq!(shadow["report"]["mirrored"], 3, "{shadow}");
    assert_eq!(shadow["report"]["sides"]["compared"], 1, "{shadow}");
    assert_metrics_contain(
        &admin,
        &[
            r#"cutover_read_skipped_total{route="catalog",side="green",reason="vector_size"} 2"#,
            r#"cutover_shadow_uncompared_total{route="catalog",reason="vector_size"} 2"#,
        ],
    )
    .await;
    models.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_read_embeds_for_blue_only_when_blue_must_serve_it() {
    let TwoModels {
        blue,
        green,
        standin,
        proxy,
        dir: _dir,
    } = two_models(
        "articles",
        "green-d3",
        r#"mode = "split", green_percent = 100.0, key = "random""#,
        "",
    )
    .await;
    let query = || {
        rest_post(
            format!("{}/collections/articles/points/query", proxy.rest_url()),
            json!({ "query": { "text": "red shoes", "model": "any" }, "limit": 4 }),
            &[],
        )
    };
    let vector = |dim| standin_vector("red shoes", dim);
    let blue_ids = direct_ids(&blue.upstream.rest_url(), "docs", vector(2)).await;
    let green_ids = direct_ids(&green.upstream.rest_url(), "docs_v2", vector(3)).await;

    // Green serves it with its own model's vector; blue's model is not asked.
    let (side, status, body) = query().await;
    assert_eq!((side.as_str(), status), ("green", 200), "{body}");
    assert_eq!(ids(&rest_points(&body["result"]["points"])), green_ids);
    assert_eq!(
        (standin.calls("green-d3"), standin.calls("blue-d2")),
        (1, 0)
    );

    // Green down: blue serves it, its text embedded by blue's model then.
    green.upstream.stop().await;
    let (side, status, body) = query().await;
    assert_eq!((side.as_str(), status), ("blue", 200), "{body}");
    assert_eq!(ids(&rest_points(&body["result"]["points"])), blue_ids);
    assert_eq!(
        (standin.calls("green-d3"), standin.calls("blue-d2")),
        (2, 1)
    );
    assert_metrics_contain(
        &proxy.admin_url(),
        &[r#"cutover_read_fallbacks_total{protocol="rest",route="articles"} 1"#],
    )
    .await;
    proxy.running.stop().await;
    blue.upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_copy_its_embedding_grew_past_the_body_bound_is_not_sent() {
    // The client's text query is under the bound; green's 30-number vector is not.
    let models = two_models(
        "grown",
        "green-d30",
        SHADOW_ALL,
        "[shadow]\nmax_body_bytes = 200",
    )
    .await;
    let TwoModels { standin, proxy, .. } = &models;
    let (side, status, body) = rest_post(
        format!("{}/collections/grown/points/query", proxy.rest_url()),
        json!({ "query": { "text": "red shoes", "model": "any" }, "limit": 4 }),
        &[],
    )
    .await;
    assert_eq!((side.as_str(), status), ("blue", 200), "{body}");
    let shadow = shadow_report(&proxy.admin_url(), "grown", |r| {
        r["report"]["uncompared"]["too_large"] == 1
    })
    .await;
    assert_eq!(shadow["report"]["mirrored"], 1, "{shadow}");
    assert_eq!(shadow["report"]["sides"]["compared"], 0, "{shadow}");
    assert_eq!(
        standin.calls("green-d30"),
        1,
        "embedded, then found too large"
    );
    models.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_green_is_primary_a_text_query_blue_cannot_embed_keeps_blue_out() {
    // Green primary: blue is the side whose copy is shaped second.
    let models = two_models("flipped", "green-d3", SHADOW_ALL, r#"primary = "green""#).await;
    let TwoModels { standin, proxy, .. } = &models;
    standin.fail("blue-d2");
    let query = json!({ "query": { "text": "red shoes", "model": "any" }, "limit": 4 });
    let (side, status, body) = rest_post(
        format!("{}/collections/flipped/points/query", proxy.rest_url()),
        query.clone(),
        &[],
    )
    .await;
    assert_eq!((side.as_str(), status), ("green", 200), "{body}");
    let shadow = shadow_report(&proxy.admin_url(), "flipped", |r| {
        r["report"]["uncompared"]["embedding"] == 1
    })
    .await;
    assert_eq!(shadow["report"]["sides"]["compared"], 0, "{shadow}");
    // Asked for, and retried (the default: twice) before blue was kept out.
    assert_eq!(standin.calls("blue-d2"), 3);
    assert_metrics_contain(
        &proxy.admin_url(),
        &[r#"cutover_read_skipped_total{route="flipped",side="blue",reason="embedding"} 1"#],
    )
    .await;

    // Fused: blue cannot take its part, so green, the primary, serves the
    // read alone, counted against blue.
    let fused = r#"mode = "fuse", green_percent = 100.0"#;
    let flipped = r#"primary = "green""#;
    models
        .reload(&models_route(
            standin, "flipped", "green-d3", fused, flipped,
        ))
        .await;
    let (side, status, body) = rest_post(
        format!("{}/collections/flipped/points/query", proxy.rest_url()),
        query,
        &[],
    )
    .await;
    assert_eq!((side.as_str(), status), ("green", 200), "{body}");
    assert_metrics_contain(
        &proxy.admin_url(),
        &[r#"cutover_read_skipped_total{route="flipped",side="blue",reason="embedding"} 2"#],
    )
    .await;
    models.stop().await;
}
