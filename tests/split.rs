//! Split reads: a hash-bucketed share of queries goes to green, keyed so a
//! tenant stays on one side; scroll, get and count stay on the primary; a
//! query green fails is served by blue unless the route says otherwise.

mod common;

use common::*;
use qdrant_client::qdrant::points_client::PointsClient;
use qdrant_client::qdrant::{self as pb};
use serde_json::{Value, json};

const SPLIT_ROUTES: &str = r#"
[[routes]]
collection = "docs"
blue = { upstream = "blue", collection = "docs" }
green = { upstream = "green", collection = "docs_v2" }
reads = { mode = "split", green_percent = 50.0, key = "header:x-tenant-id" }

[[routes]]
collection = "strict"
blue = { upstream = "blue", collection = "strict" }
green = { upstream = "green", collection = "strict_v2" }
reads = { mode = "split", green_percent = 100.0, key = "random", fallback = false }
"#;

/// Each side's copy of `docs` holds one point whose payload names the side.
async fn marked(upstream: &TestUpstream, collection: &str, side: &str) {
    let base = upstream.upstream.rest_url();
    create_collection(&base, collection, 2, "Dot").await;
    let point = json!({ "id": 1, "vector": [1.0, 0.0], "payload": { "side": side } });
    upsert_points(&base, collection, vec![point]).await;
}

fn expected(tenant: &str, percent: f64) -> &'static str {
    let share = cutover::split::basis_points(percent).unwrap();
    if cutover::split::to_green(tenant.as_bytes(), share) {
        "green"
    } else {
        "blue"
    }
}

/// A REST query as `tenant`: (the side cutover named, the side the data came from).
async fn rest_query(http: &reqwest::Client, base: &str, tenant: Option<&str>) -> (String, String) {
    let mut request = http
        .post(format!("{base}/collections/docs/points/query"))
        .json(&json!({ "query": [1.0, 0.0], "limit": 1, "with_payload": true }));
    if let Some(tenant) = tenant {
        request = request.header("x-tenant-id", tenant);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success());
    let side = response.headers()["x-cutover-side"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    (
        side,
        body["result"]["points"][0]["payload"]["side"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

async fn grpc_search(
    client: &mut PointsClient<tonic::transport::Channel>,
    tenant: &str,
) -> (String, String) {
    let mut request = tonic::Request::new(pb::SearchPoints {
        collection_name: "docs".into(),
        vector: vec![1.0, 0.0],
        limit: 1,
        with_payload: Some(true.into()),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-tenant-id", tenant.parse().unwrap());
    #[allow(deprecated)]
    let response = client.search(request).await.unwrap();
    let side = response
        .metadata()
        .get("x-cutover-side")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let point = response.into_inner().result.remove(0);
    (
        side,
        Value::from(point.payload["side"].clone())
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

async fn set_share(http: &reqwest::Client, admin: &str, route: &str, percent: f64) {
    let response = http
        .patch(format!("{admin}/routes/{route}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "green_percent": percent }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucketed_share_of_queries_goes_to_green() {
    let blue = start_upstream().await;
    let green = start_upstream().await;
    marked(&blue, "docs", "blue").await;
    marked(&green, "docs_v2", "green").await;
    marked(&blue, "strict", "blue").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        &proxy_config(&blue.upstream, &green.upstream, dir.path(), SPLIT_ROUTES),
        dir.path(),
    )
    .await;
    let http = reqwest::Client::new();
    let rest = proxy.rest_url();
    let channel = tonic::transport::Channel::from_shared(proxy.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut points = PointsClient::new(channel);

    // At 50%, each tenant lands where its bucket says, on both protocols, every time.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let tenant = format!("tenant-{i}");
        let want = expected(&tenant, 50.0);
        for _ in 0..2 {
            let (side, data) = rest_query(&http, &rest, Some(&tenant)).await;
            assert_eq!(
                (side.as_str(), data.as_str()),
                (want, want),
                "REST, {tenant}"
            );
            let (side, data) = grpc_search(&mut points, &tenant).await;
            assert_eq!(
                (side.as_str(), data.as_str()),
                (want, want),
                "gRPC, {tenant}"
            );
        }
        seen.insert(want);
    }
    assert_eq!(seen.len(), 2, "both sides serve some tenants");
    assert_eq!(
        rest_query(&http, &rest, None).await.0,
        "blue",
        "no key, no split"
    );

    // Scroll, get and count stay on the primary whatever the share.
    set_share(&http, &proxy.admin_url(), "docs", 100.0).await;
    for path in ["points/scroll", "points/count"] {
        let response = http
            .post(format!("{rest}/collections/docs/{path}"))
            .header("x-tenant-id", "tenant-1")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-cutover-side"], "blue", "{path}");
    }
    for i in 0..10 {
        assert_eq!(
            rest_query(&http, &rest, Some(&format!("tenant-{i}")))
                .await
                .0,
            "green",
            "at 100% every tenant"
        );
    }
    set_share(&http, &proxy.admin_url(), "docs", 0.0).await;
    for i in 0..10 {
        assert_eq!(
            rest_query(&http, &rest, Some(&format!("tenant-{i}")))
                .await
                .0,
            "blue",
            "at 0% no tenant"
        );
    }

    // Without fallback, green's error is the client's (green has no strict_v2).
    let response = http
        .post(format!("{rest}/collections/strict/points/query"))
        .json(&json!({ "query": [1.0, 0.0] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"]["error"],
        "Not found: Collection `strict` doesn't exist!"
    );

    // With fallback, a green that is down costs nothing: blue serves, counted.
    set_share(&http, &proxy.admin_url(), "docs", 100.0).await;
    green.upstream.stop().await;
    let (side, data) = rest_query(&http, &rest, Some("tenant-1")).await;
    assert_eq!((side.as_str(), data.as_str()), ("blue", "blue"));
    let (side, data) = grpc_search(&mut points, "tenant-2").await;
    assert_eq!((side.as_str(), data.as_str()), ("blue", "blue"));

    assert_metrics_contain(
        &proxy.admin_url(),
        &[
            r#"cutover_read_decisions_total{route="docs",mode="split",decision="green"}"#,
            r#"cutover_read_decisions_total{route="docs",mode="split",decision="blue"}"#,
            r#"cutover_read_fallbacks_total{protocol="rest",route="docs"} 1"#,
            r#"cutover_read_fallbacks_total{protocol="grpc",route="docs"} 1"#,
            r#"cutover_route_green_share_ratio{route="docs"} 1"#,
        ],
    )
    .await;
    proxy.running.stop().await;
    blue.upstream.stop().await;
}
