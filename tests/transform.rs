//! Green transforms through cutover: a 384-dimension collection moved to a
//! 768-dimension one by embedding a payload text field, with a STAND-IN
//! embedding server (outside our scope: it answers OpenAI's and TEI's API
//! shapes with deterministic vectors, not a model's); and vectors that do
//! not fit a side refused before anything is written.

mod common;

use std::sync::atomic::Ordering;

use common::standin::{StandIn, standin_vector};
use common::*;
use qdrant_client::Qdrant;
use qdrant_client::qdrant as pb;
use serde_json::{Value, json};

const GREEN_DIM: usize = 768;

/// A JSON vector read back as the f32s it was stored as.
fn floats(vector: &Value) -> Vec<f32> {
    serde_json::from_value(vector.clone()).unwrap()
}

fn point(http_id: u64, text: &str) -> (Vec<f32>, Value) {
    (
        Rng::new(http_id).vector(384),
        json!({ "text": text, "n": http_id }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_moves_a_384_dimension_collection_to_768() {
    let (blue, green) = (start_upstream().await, start_upstream().await);
    create_collection(&blue.upstream.rest_url(), "docs", 384, "Dot").await;
    create_collection(&green.upstream.rest_url(), "docs_v2", GREEN_DIM, "Dot").await;
    create_collection(&blue.upstream.rest_url(), "notes", 384, "Dot").await;
    create_collection(&green.upstream.rest_url(), "notes_v2", GREEN_DIM, "Dot").await;
    let standin = StandIn::start().await;
    let routes = format!(
        r#"
[[routes]]
collection = "docs"
blue = {{ upstream = "blue", collection = "docs" }}
green = {{ upstream = "green", collection = "docs_v2" }}
writes = "dual"
transform = {{ kind = "embed", api = "openai", model = "stand-in", url = "http://{addr}/v1/embeddings", text_field = "text", batch_size = 4, timeout_ms = 2000, retries = 1 }}

[[routes]]
collection = "notes"
blue = {{ upstream = "blue", collection = "notes" }}
green = {{ upstream = "green", collection = "notes_v2" }}
writes = "dual"
transform = {{ kind = "embed", api = "tei", url = "http://{addr}/embed", text_field = "text" }}
"#,
        addr = standin.addr
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        &proxy_config(&blue.upstream, &green.upstream, dir.path(), &routes),
        dir.path(),
    )
    .await;
    let grpc = Qdrant::from_url(&proxy.grpc_url())
        .skip_compatibility_check()
        .build()
        .unwrap();
    let http = reqwest::Client::new();

    // gRPC: ten points, embedded in batches of four.
    let points: Vec<pb::PointStruct> = (1..=10)
        .map(|id| {
            let (vector, payload) = point(id, &format!("grpc text {id}"));
            pb::PointStruct::new(
                id,
                vector,
                qdrant_client::Payload::try_from(payload).unwrap(),
            )
        })
        .collect();
    grpc.upsert_points(pb::UpsertPoints {
        collection_name: "docs".into(),
        wait: Some(true),
        points,
        ..Default::default()
    })
    .await
    .unwrap();
    // REST, in the batch form: ten more.
    let ids: Vec<u64> = (11..=20).collect();
    let (vectors, payloads): (Vec<_>, Vec<_>) = ids
        .iter()
        .map(|&id| point(id, &format!("rest text {id}")))
        .unzip();
    let response = http
        .put(format!(
            "{}/collections/docs/points?wait=true",
            proxy.rest_url()
        ))
        .json(&json!({ "batch": { "ids": ids, "vectors": vectors, "payloads": payloads } }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );

    let check = |what: &'static str,
                 collection_blue: &'static str,
                 collection_green: &'static str,
                 count: usize| {
        let (blue, green, http) = (
            blue.upstream.rest_url(),
            green.upstream.rest_url(),
            http.clone(),
        );
        async move {
            let b = all_points(&http, &blue, collection_blue).await;
            let g = all_points(&http, &green, collection_green).await;
            let (b, g) = (b.as_array().unwrap(), g.as_array().unwrap());
            assert_eq!(b.len(), count, "{what}: blue's points");
            assert_eq!(g.len(), count, "{what}: green's points");
            for (b, g) in b.iter().zip(g) {
                assert_eq!(b["id"], g["id"], "{what}");
                assert_eq!(
                    b["payload"], g["payload"],
                    "{what}: the payload is the same"
                );
                let id = b["id"].as_u64().unwrap();
                assert_eq!(
                    floats(&b["vector"]),
                    Rng::new(id).vector(384),
                    "{what}: blue keeps the 384-d vector"
                );
                let text = b["payload"]["text"].as_str().unwrap();
                assert_eq!(
                    floats(&g["vector"]),
                    standin_vector(text, GREEN_DIM),
                    "{what}: green has the 768-d embedding of `{text}`"
                );
            }
        }
    };
    check("OpenAI API", "docs", "docs_v2", 20).await;

    // TEI's API shape, on the other route.
    let (vector, payload) = point(1, "a note");
    let response = http
        .put(format!(
            "{}/collections/notes/points?wait=true",
            proxy.rest_url()
        ))
        .json(&json!({ "points": [{ "id": 1, "vector": vector, "payload": payload }] }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    check("TEI API", "notes", "notes_v2", 1).await;

    // A vector of the wrong size is refused before anything is written.
    let response = http
        .put(format!("{}/collections/docs/points?wait=true", proxy.rest_url()))
        .json(&json!({ "points": [{ "id": 99, "vector": vec![0.5f32; 100], "payload": { "text": "short" } }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let message = body["status"]["error"].as_str().unwrap();
    assert!(
        message.contains("100 dimensions, but blue's collection expects 384"),
        "{message}"
    );
    let err = grpc
        .upsert_points(one_point_upsert("docs", 98, vec![0.5f32; 100]))
        .await
        .unwrap_err();
    let qdrant_client::QdrantError::ResponseError { status } = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{}",
        status.message()
    );
    check("after the refusals", "docs", "docs_v2", 20).await;

    // The embedding service fails: the client's write succeeds on blue and
    // green's waits in the replay log, to be embedded once the service is back.
    standin.down.store(true, Ordering::SeqCst);
    let (vector, payload) = point(21, "written while the embedder was down");
    let response = http
        .put(format!(
            "{}/collections/docs/points?wait=true",
            proxy.rest_url()
        ))
        .json(&json!({ "points": [{ "id": 21, "vector": vector, "payload": payload }] }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let route = docs_route(&proxy).await;
    assert_eq!(route["replay"]["records"], 1, "{route}");
    standin.down.store(false, Ordering::SeqCst);
    let (status, body) = admin_call(
        &proxy.admin_url(),
        reqwest::Method::POST,
        "/routes/docs/replay/drain?timeout_s=30",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    check("after the embedder came back", "docs", "docs_v2", 21).await;
    assert_metrics_contain(
        &proxy.admin_url(),
        &[
            r#"cutover_transforms_total{kind="embed",outcome="ok"}"#,
            r#"cutover_transforms_total{kind="embed",outcome="error"}"#,
            r#"cutover_dual_writes_total{protocol="rest",route="docs",side="green",outcome="transform_failed"}"#,
            r#"cutover_requests_total{protocol="rest",method="upsert",route="docs",side="blue",outcome="refused"}"#,
            "cutover_transform_duration_seconds_bucket",
        ],
    )
    .await;
    proxy.running.stop().await;
    blue.upstream.stop().await;
    green.upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_and_named_fit_each_sides_collection() {
    let (blue, green) = (start_upstream().await, start_upstream().await);
    let http = reqwest::Client::new();
    // `same`, but green's collection was made with another size: refused whole.
    create_collection(&blue.upstream.rest_url(), "docs", 4, "Dot").await;
    create_collection(&green.upstream.rest_url(), "docs_v2", 8, "Dot").await;
    // `named`: each side has its own vector name.
    let named = |size: usize, name: &str| json!({ "vectors": { name: { "size": size, "distance": "Dot" } } });
    for (url, collection, body) in [
        (blue.upstream.rest_url(), "items", named(2, "small")),
        (green.upstream.rest_url(), "items_v2", named(3, "large")),
    ] {
        let response = http
            .put(format!("{url}/collections/{collection}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    let routes = r#"
[[routes]]
collection = "docs"
blue = { upstream = "blue", collection = "docs" }
green = { upstream = "green", collection = "docs_v2" }
writes = "dual"

[[routes]]
collection = "items"
blue = { upstream = "blue", collection = "items" }
green = { upstream = "green", collection = "items_v2" }
writes = "dual"
transform = { kind = "named" }
"#;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        &proxy_config(&blue.upstream, &green.upstream, dir.path(), routes),
        dir.path(),
    )
    .await;

    refuses_a_vector_too_small_for_green(&http, &proxy, &blue).await;

    let grpc = Qdrant::from_url(&proxy.grpc_url())
        .skip_compatibility_check()
        .build()
        .unwrap();
    let vectors = std::collections::HashMap::from([
        ("small".to_string(), vec![1.0f32, 2.0]),
        ("large".to_string(), vec![1.0f32, 2.0, 3.0]),
    ]);
    grpc.upsert_points(one_point_upsert("items", 5, vectors))
        .await
        .unwrap();
    let b = all_points(&http, &blue.upstream.rest_url(), "items").await;
    let g = all_points(&http, &green.upstream.rest_url(), "items_v2").await;
    assert_eq!(b[0]["vector"], json!({ "small": [1.0, 2.0] }));
    assert_eq!(g[0]["vector"], json!({ "large": [1.0, 2.0, 3.0] }));
    proxy.running.stop().await;
    blue.upstream.stop().await;
    green.upstream.stop().await;
}

/// cutover reads each side's vector sizes at start; collections made after
/// it started (the usual order: start the proxy, then create collections)
/// are read on the first write that needs them, so the check still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_of_collections_made_after_start_are_checked() {
    let (blue, green) = (start_upstream().await, start_upstream().await);
    let dir = tempfile::tempdir().unwrap();
    let routes = format!("{DOCS_ROUTE}writes = \"dual\"\n");
    let proxy = start_proxy(
        &proxy_config(&blue.upstream, &green.upstream, dir.path(), &routes),
        dir.path(),
    )
    .await;
    create_collection(&blue.upstream.rest_url(), "docs", 4, "Dot").await;
    create_collection(&green.upstream.rest_url(), "docs_v2", 8, "Dot").await;

    let http = reqwest::Client::new();
    refuses_a_vector_too_small_for_green(&http, &proxy, &blue).await;
    proxy.running.stop().await;
    blue.upstream.stop().await;
    green.upstream.stop().await;
}

/// A 4-dimension point written to `docs` (dual, green's collection of 8
/// dimensions) is refused whole: a REST 400 naming green's size, and blue
/// not written either.
async fn refuses_a_vector_too_small_for_green(
    http: &reqwest::Client,
    proxy: &TestProxy,
    blue: &TestUpstream,
) {
    let response = http
        .put(format!(
            "{}/collections/docs/points?wait=true",
            proxy.rest_url()
        ))
        .json(&json!({ "points": [{ "id": 1, "vector": [1.0, 0.0, 0.0, 0.0] }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let message = response.json::<Value>().await.unwrap()["status"]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("4 dimensions, but green's collection expects 8"),
        "{message}"
    );
    assert_eq!(
        all_points(http, &blue.upstream.rest_url(), "docs").await,
        json!([]),
        "blue was not written either"
    );
}

/// Both collections of the same sizes (`same`): cutover does not read the
/// write, both sides judge it alike, and the client gets Qdrant's own
/// answer; a refused write is on neither side and nothing waits for replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alike_sides_judge_a_write_themselves() {
    let (blue, green) = (start_upstream().await, start_upstream().await);
    create_collection(&blue.upstream.rest_url(), "docs", 4, "Dot").await;
    create_collection(&green.upstream.rest_url(), "docs_v2", 4, "Dot").await;
    let dir = tempfile::tempdir().unwrap();
    let routes = format!("{DOCS_ROUTE}writes = \"dual\"\n");
    let proxy = start_proxy(
        &proxy_config(&blue.upstream, &green.upstream, dir.path(), &routes),
        dir.path(),
    )
    .await;
    let http = reqwest::Client::new();
    let response = http
        .put(format!(
            "{}/collections/docs/points?wait=true",
            proxy.rest_url()
        ))
        .json(&json!({ "points": [{ "id": 1, "vector": [1.0, 0.0, 0.0] }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.json::<Value>().await.unwrap();
    let message = body["status"]["error"].as_str().unwrap();
    assert!(message.contains("expected dim: 4, got 3"), "{message}");
    let grpc = Qdrant::from_url(&proxy.grpc_url())
        .skip_compatibility_check()
        .build()
        .unwrap();
    let err = grpc
        .upsert_points(one_point_upsert("docs", 2, vec![1.0f32, 0.0]))
        .await
        .unwrap_err();
    let qdrant_client::QdrantError::ResponseError { status } = err else {
        panic!("a gRPC status: {err}");
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("expected dim: 4, got 2"),
        "{}",
        status.message()
    );
    for (url, collection) in [
        (blue.upstream.rest_url(), "docs"),
        (green.upstream.rest_url(), "docs_v2"),
    ] {
        assert_eq!(all_points(&http, &url, collection).await, json!([]));
    }
    let route = docs_route(&proxy).await;
    assert_eq!(route["replay"]["records"], 0, "{route}");

    grpc.upsert_points(one_point_upsert("docs", 3, vec![0.5f32, 0.25, 0.0, 1.0]))
        .await
        .unwrap();
    let b = all_points(&http, &blue.upstream.rest_url(), "docs").await;
    let g = all_points(&http, &green.upstream.rest_url(), "docs_v2").await;
    assert_eq!(b[0]["vector"], json!([0.5, 0.25, 0.0, 1.0]));
    assert_eq!(b, g);
    proxy.running.stop().await;
    blue.upstream.stop().await;
    green.upstream.stop().await;
}

/// The `docs` route as the admin API shows it, its replay queue included.
async fn docs_route(proxy: &TestProxy) -> Value {
    let (_, route) = admin_call(
        &proxy.admin_url(),
        reqwest::Method::GET,
        "/routes/docs",
        None,
    )
    .await;
    route
}
