//! cutover in front of two embedded upstreams: routed names rewritten per
//! side on both protocols, the admin API and its auth, metrics, the state file.

mod common;

use common::*;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::{self as pb};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Setup {
    blue: TestUpstream,
    green: TestUpstream,
    proxy: TestProxy,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

async fn setup() -> Setup {
    let blue = start_upstream().await;
    let green = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = proxy_config(&blue.upstream, &green.upstream, dir.path(), DOCS_ROUTE);
    let proxy = start_proxy(&config, dir.path()).await;
    Setup {
        blue,
        green,
        proxy,
        dir,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        admin_call(&self.proxy.admin_url(), method, path, body).await
    }

    async fn flip(&self, primary: &str) -> u64 {
        let writes = format!("{primary}_only");
        let (status, body) = self
            .admin(
                reqwest::Method::PATCH,
                "/routes/docs",
                Some(json!({ "primary": primary, "writes": writes })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["version"].as_u64().unwrap()
    }

    async fn rest(
        &self,
        method: reqwest::Method,
        base: &str,
        path: &str,
        body: Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let response = self
            .http
            .request(method, format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        (
            status,
            headers,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn stop(self) {
        self.proxy.running.stop().await;
        self.blue.upstream.stop().await;
        self.green.upstream.stop().await;
    }
}

fn collection_body() -> Value {
    json!({ "vectors": { "size": 2, "distance": "Dot" } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_names_are_rewritten_per_side() {
    let s = setup().await;
    let proxy = s.proxy.rest_url();
    let put = reqwest::Method::PUT;

    // Blue is primary: `docs` is created as `docs` on blue.
    let (status, headers, _) = s
        .rest(put.clone(), &proxy, "/collections/docs", collection_body())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-cutover-side"], "blue");
    assert_eq!(headers["x-cutover-routing-version"], "1");

    // Green is primary: an error about the missing `docs_v2` names `docs`.
    s.flip("green").await;
    let (status, headers, body) = s
        .rest(
            reqwest::Method::POST,
            &proxy,
            "/collections/docs/points/count",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["x-cutover-side"], "green");
    assert_eq!(
        body["status"]["error"],
        "Not found: Collection `docs` doesn't exist!"
    );

    // Created through cutover, it lands on green as `docs_v2`.
    let (status, _, _) = s
        .rest(put.clone(), &proxy, "/collections/docs", collection_body())
        .await;
    assert_eq!(status, StatusCode::OK);
    let green = s.green.upstream.rest_url();
    let (_, _, exists) = s
        .rest(
            reqwest::Method::GET,
            &green,
            "/collections/docs_v2/exists",
            Value::Null,
        )
        .await;
    assert_eq!(exists["result"]["exists"], true);
    let (_, _, exists) = s
        .rest(
            reqwest::Method::GET,
            &green,
            "/collections/docs/exists",
            Value::Null,
        )
        .await;
    assert_eq!(exists["result"]["exists"], false);

    // Writes on `docs` reach `docs_v2`. An error that names no collection
    // (a vector of the wrong size) passes as it came.
    let points =
        json!({ "points": [{ "id": 7, "vector": [1.0, 2.0], "payload": { "on": "green" } }] });
    let (status, headers, _) = s
        .rest(
            put.clone(),
            &proxy,
            "/collections/docs/points?wait=true",
            points,
        )
        .await;
    assert_eq!(
        (status, headers["x-cutover-side"].to_str().unwrap()),
        (StatusCode::OK, "green")
    );
    let (_, _, got) = s
        .rest(
            reqwest::Method::POST,
            &green,
            "/collections/docs_v2/points",
            json!({ "ids": [7], "with_payload": true }),
        )
        .await;
    assert_eq!(got["result"][0]["payload"]["on"], "green");
    let (status, _, body) = s
        .rest(
            put.clone(),
            &proxy,
            "/collections/docs/points?wait=true",
            json!({ "points": [{ "id": 8, "vector": [1.0] }] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["status"]["error"],
        "Wrong input: Vector dimension error: expected dim: 2, got 1"
    );

    // Creating it again: the conflict names `docs`, not `docs_v2`.
    let (status, _, body) = s
        .rest(put, &proxy, "/collections/docs", collection_body())
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["status"]["error"],
        "Wrong input: Collection `docs` already exists!"
    );

    // A collection no route names passes through to the default upstream as it came.
    let (status, headers, _) = s
        .rest(
            reqwest::Method::PUT,
            &proxy,
            "/collections/plain",
            collection_body(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.get("x-cutover-side").is_none(),
        "passthrough is not marked"
    );
    let blue = s.blue.upstream.rest_url();
    let (_, _, exists) = s
        .rest(
            reqwest::Method::GET,
            &blue,
            "/collections/plain/exists",
            Value::Null,
        )
        .await;
    assert_eq!(exists["result"]["exists"], true);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_names_are_rewritten_per_side() {
    let s = setup().await;
    let client = Qdrant::from_url(&s.proxy.grpc_url()).build().unwrap();
    let create = || pb::CreateCollection {
        collection_name: "docs".into(),
        vectors_config: Some(pb::VectorsConfig {
            config: Some(pb::vectors_config::Config::Params(pb::VectorParams {
                size: 2,
                distance: pb::Distance::Dot as i32,
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    s.flip("green").await;
    let err = client.collection_info("docs").await.unwrap_err();
    let qdrant_client::QdrantError::ResponseError { status } = err else {
        panic!("a gRPC status, got {err:?}")
    };
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(
        status.message(),
        "Not found: Collection `docs` doesn't exist!"
    );

    client.create_collection(create()).await.unwrap();
    let green = Qdrant::from_url(&s.green.upstream.grpc_url())
        .build()
        .unwrap();
    assert!(
        green.collection_exists("docs_v2").await.unwrap(),
        "created on green as docs_v2"
    );
    assert!(!green.collection_exists("docs").await.unwrap());

    let upsert = one_point_upsert("docs", 1, vec![1.0, 0.0]);
    client.upsert_points(upsert).await.unwrap();
    let count = green
        .count(pb::CountPoints {
            collection_name: "docs_v2".into(),
            exact: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        count.result.unwrap().count,
        1,
        "the write reached docs_v2 on green"
    );

    let err = client.create_collection(create()).await.unwrap_err();
    let qdrant_client::QdrantError::ResponseError { status } = err else {
        panic!("a gRPC status, got {err:?}")
    };
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    assert_eq!(
        status.message(),
        "Wrong input: Collection `docs` already exists!"
    );

    // The response metadata says which side and version served it.
    let channel = tonic::transport::Channel::from_shared(s.proxy.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut points = pb::points_client::PointsClient::new(channel);
    let response = points
        .count(pb::CountPoints {
            collection_name: "docs".into(),
            exact: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(response.metadata().get("x-cutover-side").unwrap(), "green");
    assert_eq!(
        response
            .metadata()
            .get("x-cutover-routing-version")
            .unwrap(),
        "2"
    );
    assert_eq!(response.into_inner().result.unwrap().count, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_needs_its_token_and_is_not_on_the_public_listeners() {
    let s = setup().await;
    let admin = s.proxy.admin_url();
    let routes = format!("{admin}/routes");

    let response = s.http.get(&routes).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "no token");
    let response = s
        .http
        .get(&routes)
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "a wrong token");
    let response = s
        .http
        .patch(format!("{admin}/routes/docs"))
        .bearer_auth("not-the-token")
        .json(&json!({ "primary": "green" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = s.admin(reqwest::Method::GET, "/routes", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"], 1, "refused changes changed nothing");
    assert_eq!(body["routes"][0]["primary"], "blue");

    // The public listeners forward /routes to Qdrant like any other path.
    for base in [s.proxy.rest_url()] {
        let response = s
            .http
            .patch(format!("{base}/routes/docs"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "primary": "green" }))
            .send()
            .await
            .unwrap();
        assert_ne!(response.status(), StatusCode::OK);
        let response = s.http.get(format!("{base}/metrics")).send().await.unwrap();
        assert!(
            !response.text().await.unwrap().contains("cutover_"),
            "no metrics on the public listener"
        );
    }
    let (_, body) = s.admin(reqwest::Method::GET, "/routes/docs", None).await;
    assert_eq!(body["route"]["primary"], "blue");

    // Bad changes are refused whole.
    let (status, _) = s
        .admin(
            reqwest::Method::PATCH,
            "/routes/docs",
            Some(json!({ "primary": "purple" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s
        .admin(
            reqwest::Method::PATCH,
            "/routes/nope",
            Some(json!({ "primary": "green" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s
        .admin(
            reqwest::Method::PATCH,
            "/routes/docs",
            Some(json!({ "green_percent": 150 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a share above 100%");
    let (_, body) = s.admin(reqwest::Method::GET, "/routes", None).await;
    assert_eq!(body["version"], 1);

    // Probes need no token.
    let response = s.http.get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "ready": true, "upstreams": { "blue": true, "green": true } })
    );
    let response = s.http.get(format!("{admin}/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_an_upstream_is_down() {
    let s = setup().await;
    let Setup {
        blue,
        green,
        proxy,
        dir,
        http,
    } = s;
    green.upstream.stop().await;
    let response = http
        .get(format!("{}/readyz", proxy.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.json::<Value>().await.unwrap()["upstreams"]["green"],
        false
    );
    // A request routed to the stopped side fails cleanly, in Qdrant's envelope.
    http.patch(format!("{}/routes/docs", proxy.admin_url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "primary": "green" }))
        .send()
        .await
        .unwrap();
    let response = http
        .get(format!("{}/collections/docs", proxy.rest_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["status"]["error"]
            .as_str()
            .unwrap()
            .contains("upstream `green` is unreachable"),
        "{body}"
    );
    proxy.running.stop().await;
    blue.upstream.stop().await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_decisions_made() {
    let s = setup().await;
    let proxy = s.proxy.rest_url();
    s.rest(
        reqwest::Method::PUT,
        &proxy,
        "/collections/docs",
        collection_body(),
    )
    .await;
    s.rest(
        reqwest::Method::POST,
        &proxy,
        "/collections/docs/points/count",
        json!({}),
    )
    .await;
    let version = s.flip("green").await;
    s.rest(
        reqwest::Method::POST,
        &proxy,
        "/collections/docs/points/count",
        json!({}),
    )
    .await;
    s.rest(reqwest::Method::GET, &proxy, "/collections", Value::Null)
        .await;
    let client = Qdrant::from_url(&s.proxy.grpc_url()).build().unwrap();
    let _ = client.collection_info("docs").await;

    let text = s
        .http
        .get(format!("{}/metrics", s.proxy.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let has = |needle: &str| {
        text.lines()
            .any(|l| l.starts_with(needle) || (l.contains(needle) && !l.starts_with('#')))
    };
    assert!(
        has(r#"protocol="rest",method="count",route="docs",side="blue",outcome="ok""#),
        "{text}"
    );
    assert!(
        has(r#"protocol="rest",method="count",route="docs",side="green",outcome="error""#),
        "{text}"
    );
    assert!(
        has(r#"protocol="rest",method="other",route="",side="default",outcome="ok""#),
        "{text}"
    );
    assert!(
        has(r#"protocol="grpc",method="CollectionGet",route="docs",side="green",outcome="error""#),
        "{text}"
    );
    assert!(
        has(r#"cutover_route_changes_total{action="change",outcome="applied"}"#),
        "{text}"
    );
    assert!(
        text.contains("cutover_upstream_request_duration_seconds_bucket"),
        "histograms, not summaries: {text}"
    );
    for labels in [
        r#"protocol="rest",side="blue""#,
        r#"protocol="rest",side="green""#,
        r#"protocol="rest",side="default""#,
        r#"protocol="grpc",side="green""#,
    ] {
        assert!(
            has(&format!(
                "cutover_upstream_request_duration_seconds_count{{{labels}}}"
            )),
            "upstream latency with {labels}: {text}"
        );
    }
    // The gauge is process-wide; other tests' proxies share it, so check it moved at least this far.
    let gauge: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("cutover_routing_version "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(gauge >= 1.0 && version == 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_survive_a_restart_and_reload_keeps_them() {
    let s = setup().await;
    s.flip("green").await;
    s.flip("blue").await;
    let version = s.flip("green").await;
    assert_eq!(version, 4);
    let Setup {
        blue,
        green,
        proxy,
        dir,
        http,
    } = s;
    let config_path = proxy.config_path.clone();
    proxy.running.stop().await;

    let config = cutover::config::Config::load(&config_path).unwrap();
    let running = cutover::serve::start(config, Some(config_path.clone()))
        .await
        .unwrap();
    let admin = format!("http://{}", running.admin_addr);
    let get = |path: &str| {
        http.get(format!("{admin}{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    let body: Value = get("/routes/docs").await.unwrap().json().await.unwrap();
    assert_eq!(body["version"], 4);
    assert_eq!(body["route"]["primary"], "green");
    assert_eq!(body["route"]["writes"], "green_only");

    // Reload: a second route appears, the live policy of `docs` stays.
    let mut text = std::fs::read_to_string(&config_path).unwrap();
    text.push_str("\n[[routes]]\ncollection = \"other\"\nblue = { upstream = \"blue\", collection = \"other\" }\ngreen = { upstream = \"green\", collection = \"other_v2\" }\n");
    std::fs::write(&config_path, text).unwrap();
    let response = http
        .post(format!("{admin}/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["version"], 5);
    assert_eq!(body["routes"].as_array().unwrap().len(), 2);
    let body: Value = get("/routes/docs").await.unwrap().json().await.unwrap();
    assert_eq!(body["route"]["primary"], "green");

    // A broken file is refused and changes nothing.
    std::fs::write(&config_path, "default_upstream = \"nowhere\"").unwrap();
    let response = http
        .post(format!("{admin}/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = get("/routes").await.unwrap().json().await.unwrap();
    assert_eq!(body["version"], 5);

    // Rollback: everything to blue in one change.
    let response = http
        .post(format!("{admin}/rollback"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["version"], 6);
    assert!(
        body["routes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["primary"] == "blue" && r["writes"] == "blue_only")
    );
    running.stop().await;
    blue.upstream.stop().await;
    green.upstream.stop().await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_passed_or_replaced_per_upstream() {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (blue_dir, green_dir, dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let blue = cutover::embedded::EmbeddedUpstream::start_with_api_key(
        blue_dir.path(),
        any,
        any,
        Some("blue-secret".into()),
    )
    .await
    .unwrap();
    let green = cutover::embedded::EmbeddedUpstream::start_with_api_key(
        green_dir.path(),
        any,
        any,
        Some("green-secret".into()),
    )
    .await
    .unwrap();
    std::fs::write(dir.path().join("blue-key"), "blue-secret\n").unwrap();
    // Blue: cutover replaces whatever the client sends with its own key.
    // Green: cutover passes the client's key through.
    let config = proxy_config(&blue, &green, dir.path(), "")
        .replace(
            &format!("grpc = \"{}\"\n", blue.grpc_url()),
            &format!(
                "grpc = \"{}\"\napi_key_file = \"{}\"\n",
                blue.grpc_url(),
                dir.path().join("blue-key").display()
            ),
        )
        .replace(
            &format!("grpc = \"{}\"\n", green.grpc_url()),
            &format!(
                "grpc = \"{}\"\nclient_api_key = \"pass\"\n",
                green.grpc_url()
            ),
        );
    let proxy = start_proxy(&config, dir.path()).await;
    let http = reqwest::Client::new();

    // Through cutover to blue, the client needs no key, and a wrong one is replaced.
    for key in [None, Some("wrong")] {
        let mut request = http.get(format!("{}/collections", proxy.rest_url()));
        if let Some(key) = key {
            request = request.header("api-key", key);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            StatusCode::OK,
            "client key {key:?}"
        );
    }
    let client = Qdrant::from_url(&proxy.grpc_url())
        .api_key("wrong")
        .build()
        .unwrap();
    client
        .list_collections()
        .await
        .expect("cutover's key replaced the client's");
    // Straight to blue without the key: refused, so it really is cutover's key at work.
    let response = http
        .get(format!("{}/collections", blue.rest_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Green passes the client's key: the right one works, none is refused by green itself.
    proxy.running.stop().await;
    let config = config + DOCS_ROUTE;
    std::fs::remove_file(dir.path().join("state.json")).ok();
    let proxy = start_proxy(&config, dir.path()).await;
    http.patch(format!("{}/routes/docs", proxy.admin_url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "primary": "green" }))
        .send()
        .await
        .unwrap();
    let url = format!("{}/collections/docs/exists", proxy.rest_url());
    let response = http
        .get(&url)
        .header("authorization", "Bearer green-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap()["result"]["exists"],
        false
    );
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["status"]["error"],
        "Must provide an API key or an Authorization bearer token"
    );
    let client = Qdrant::from_url(&proxy.grpc_url()).build().unwrap();
    let err = client.collection_exists("docs").await.unwrap_err();
    let qdrant_client::QdrantError::ResponseError { status } = err else {
        panic!("a gRPC status, got {err:?}")
    };
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let client = Qdrant::from_url(&proxy.grpc_url())
        .api_key("green-secret")
        .build()
        .unwrap();
    assert!(!client.collection_exists("docs").await.unwrap());

    proxy.running.stop().await;
    blue.stop().await;
    green.stop().await;
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

async fn grpc_health(url: String) -> i32 {
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    grpc.unary(request, path, codec)
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_check_follows_the_upstreams() {
    let Setup {
        blue,
        green,
        proxy,
        dir,
        ..
    } = setup().await;
    assert_eq!(grpc_health(proxy.grpc_url()).await, 1, "SERVING");
    green.upstream.stop().await;
    assert_eq!(
        grpc_health(proxy.grpc_url()).await,
        2,
        "NOT_SERVING while green is down"
    );
    proxy.running.stop().await;
    blue.upstream.stop().await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_times_out_cleanly() {
    // An upstream that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    let config = format!(
        r#"
state_file = "{state}"
default_upstream = "silent"
[listen]
rest = "127.0.0.1:0"
grpc = "127.0.0.1:0"
admin = "127.0.0.1:0"
admin_token_file = "{token}"
[upstreams.silent]
rest = "http://127.0.0.1:{port}"
grpc = "http://127.0.0.1:{port}"
request_timeout_ms = 300
"#,
        state = dir.path().join("state.json").display(),
        token = dir.path().join("admin-token").display(),
    );
    let proxy = start_proxy(&config, dir.path()).await;

    let started = std::time::Instant::now();
    let response = reqwest::get(format!("{}/collections", proxy.rest_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["status"]["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within 300ms"),
        "{body}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the timeout bounded the wait"
    );

    let client = Qdrant::from_url(&proxy.grpc_url()).build().unwrap();
    let err = client.collection_info("any").await.unwrap_err();
    let qdrant_client::QdrantError::ResponseError { status } = err else {
        panic!("a gRPC status, got {err:?}")
    };
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    assert!(
        status
            .message()
            .contains("upstream `silent` did not answer"),
        "{}",
        status.message()
    );
    let response = reqwest::get(format!("{}/readyz", proxy.admin_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    proxy.running.stop().await;
}

/// A setup whose blue upstream is stopped and started again on the same
/// data and addresses.
struct Restarts {
    blue: Option<cutover::embedded::EmbeddedUpstream>,
    blue_dir: tempfile::TempDir,
    grpc: std::net::SocketAddr,
    rest: std::net::SocketAddr,
    green: TestUpstream,
    proxy: TestProxy,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Restarts {
    fn new(s: Setup) -> Restarts {
        let addr = |url: String| url.trim_start_matches("http://").parse().unwrap();
        Restarts {
            grpc: addr(s.blue.upstream.grpc_url()),
            rest: addr(s.blue.upstream.rest_url()),
            blue: Some(s.blue.upstream),
            blue_dir: s.blue.dir,
            green: s.green,
            proxy: s.proxy,
            http: s.http,
            _dir: s.dir,
        }
    }

    async fn stop_blue(&mut self) {
        self.blue.take().expect("blue is running").stop().await;
    }

    async fn start_blue(&mut self) {
        let started =
            cutover::embedded::EmbeddedUpstream::start(self.blue_dir.path(), self.grpc, self.rest);
        self.blue = Some(started.await.expect("blue starts again on its data"));
    }

    async fn stop(mut self) {
        self.proxy.running.stop().await;
        if let Some(blue) = self.blue.take() {
            blue.stop().await;
        }
        self.green.upstream.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_grpc_upstream_is_reached_again() {
    let mut s = Restarts::new(setup().await);
    let client = Qdrant::from_url(&s.proxy.grpc_url()).build().unwrap();
    let collection = |name: &str| {
        pb::CreateCollectionBuilder::new(name)
            .vectors_config(pb::VectorParamsBuilder::new(4, pb::Distance::Cosine))
    };
    client
        .create_collection(collection("before"))
        .await
        .unwrap();

    // Restarted between two calls: the first call after it finds the old
    // connection closed, and cutover sends it on a new one.
    s.stop_blue().await;
    s.start_blue().await;
    client.create_collection(collection("after")).await.unwrap();
    let names = client.list_collections().await.unwrap().collections;
    let mut names: Vec<_> = names.into_iter().map(|c| c.name).collect();
    names.sort();
    assert_eq!(names, ["after", "before"]);
    assert_metrics_contain(
        &s.proxy.admin_url(),
        &[
            r#"cutover_upstream_retries_total{protocol="grpc",upstream="blue",reason="connection_lost"}"#,
            r#"cutover_upstream_connections_total{protocol="grpc",upstream="blue",outcome="opened"}"#,
        ],
    )
    .await;

    // Down: a call fails cleanly; back up: the next call is served.
    s.stop_blue().await;
    let err = client.collection_info("before").await.unwrap_err();
    let qdrant_client::QdrantError::ResponseError { status } = err else {
        panic!("a gRPC status, got {err:?}")
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("upstream `blue` is unreachable"),
        "{}",
        status.message()
    );
    assert_metrics_contain(
        &s.proxy.admin_url(),
        &[r#"cutover_upstream_connections_total{protocol="grpc",upstream="blue",outcome="failed"}"#],
    )
    .await;
    s.start_blue().await;
    let info = client.collection_info("before").await.unwrap();
    assert!(info.result.is_some());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_connections_are_reused_and_a_restarted_upstream_is_reached_again() {
    let mut s = Restarts::new(setup().await);
    let (proxy, http) = (s.proxy.rest_url(), s.http.clone());
    let send = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{proxy}{path}"))
            .json(&collection_body())
            .send()
    };
    let blue_rest_port = s.rest.port();
    let put = reqwest::Method::PUT;
    let response = send(put.clone(), "/collections/before").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // One request after another, one connection to the upstream: each
    // request's response read to its end gives the connection back.
    for _ in 0..10 {
        let response = send(reqwest::Method::GET, "/collections/before")
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "ok");
    }
    assert_eq!(established_connections_to(blue_rest_port), 1);

    // Restarted between two requests: the idle connection is found closed
    // (or the request, not yet written, is sent again) on a new one.
    s.stop_blue().await;
    s.start_blue().await;
    let response = send(put, "/collections/after").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = send(reqwest::Method::GET, "/collections")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<_> = body["result"]["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["after", "before"]);
    assert_eq!(established_connections_to(blue_rest_port), 1);
    assert_metrics_contain(
        &s.proxy.admin_url(),
        &[r#"cutover_upstream_connections_total{protocol="rest",upstream="blue",outcome="opened"}"#],
    )
    .await;

    // Down: a request fails cleanly, in Qdrant's error shape; back up: the
    // next request is served.
    s.stop_blue().await;
    let response = send(reqwest::Method::GET, "/collections/before")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body: Value = response.json().await.unwrap();
    let error = body["status"]["error"].as_str().unwrap();
    assert!(error.contains("upstream `blue` is unreachable"), "{error}");
    assert_metrics_contain(
        &s.proxy.admin_url(),
        &[r#"cutover_upstream_connections_total{protocol="rest",upstream="blue",outcome="failed"}"#],
    )
    .await;
    s.start_blue().await;
    let response = send(reqwest::Method::GET, "/collections/before")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    s.stop().await;
}
