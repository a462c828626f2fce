//! The same scripted workload straight at an upstream and through cutover
//! (to a twin upstream) gives identical answers on both protocols, `time`
//! fields aside. The proxied collections include a routed one whose name is
//! the same on blue, so routing itself must be invisible too.
// Search, Recommend and Discover are deprecated in the client, not in Qdrant's API.
#![allow(deprecated)]

mod common;

use common::*;
use qdrant_client::qdrant::collections_client::CollectionsClient;
use qdrant_client::qdrant::points_client::PointsClient;
use qdrant_client::qdrant::{self as pb, Condition, Filter, Range};
use serde_json::{Value, json};
use tonic::transport::Channel;

/// A route whose blue name equals its logical name: routed, yet with
/// blue primary it must behave exactly like passthrough.
const SAME_NAME_ROUTE: &str = r#"
[[routes]]
collection = "routed"
blue = { upstream = "blue", collection = "routed" }
green = { upstream = "green", collection = "routed_v2" }
"#;

struct Twins {
    direct: TestUpstream,
    behind: TestUpstream,
    green: TestUpstream,
    proxy: TestProxy,
    _dir: tempfile::TempDir,
}

async fn twins() -> Twins {
    let direct = start_upstream().await;
    let behind = start_upstream().await;
    let green = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = proxy_config(
        &behind.upstream,
        &green.upstream,
        dir.path(),
        SAME_NAME_ROUTE,
    );
    let proxy = start_proxy(&config, dir.path()).await;
    Twins {
        direct,
        behind,
        green,
        proxy,
        _dir: dir,
    }
}

impl Twins {
    async fn stop(self) {
        self.proxy.running.stop().await;
        for u in [self.direct, self.behind, self.green] {
            u.upstream.stop().await;
        }
    }
}

fn without_time(mut value: Value) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.remove("time");
    }
    value
}

/// The REST script: each step is (method, path, body).
fn rest_script(collection: &str) -> Vec<(reqwest::Method, String, Value)> {
    use reqwest::Method as M;
    let c = |path: &str| format!("/collections/{collection}{path}");
    let points = dataset(400, 8, 5);
    let mut steps = vec![
        (
            M::PUT,
            c(""),
            json!({ "vectors": { "size": 8, "distance": "Cosine" } }),
        ),
        (
            M::PUT,
            c(""),
            json!({ "vectors": { "size": 8, "distance": "Cosine" } }),
        ),
        (M::GET, c(""), Value::Null),
        (M::GET, c("/exists"), Value::Null),
    ];
    for chunk in points.chunks(100) {
        let body: Vec<Value> = chunk
            .iter()
            .map(|p| json!({ "id": p.id, "vector": p.vector, "payload": p.payload }))
            .collect();
        steps.push((M::PUT, c("/points?wait=true"), json!({ "points": body })));
    }
    let query = Rng::new(8).vector(8);
    let filter = json!({ "must": [{ "key": "group", "match": { "value": "g1" } }], "must_not": [{ "key": "n", "range": { "gt": 300 } }] });
    steps.extend([
        (M::POST, c("/points/search"), json!({ "vector": query, "limit": 10, "with_payload": true })),
        (M::POST, c("/points/search"), json!({ "vector": query, "limit": 5, "filter": filter, "with_vector": true })),
        (M::POST, c("/points/query"), json!({ "query": query, "limit": 5, "offset": 2 })),
        (M::POST, c("/points/query"), json!({ "prefetch": [{ "query": query, "limit": 20 }, { "query": 3, "limit": 20 }], "query": { "fusion": "rrf" }, "limit": 7 })),
        (M::POST, c("/points/recommend"), json!({ "positive": [1, 2], "negative": [3], "limit": 4 })),
        (M::POST, c("/points/scroll"), json!({ "limit": 50, "filter": filter })),
        (M::POST, c("/points/scroll"), json!({ "limit": 50, "offset": 120 })),
        (M::POST, c("/points/count"), json!({ "filter": filter })),
        (M::POST, c("/points/payload?wait=true"), json!({ "payload": { "x": 1 }, "points": [5, 6] })),
        (M::POST, c("/points/payload/delete?wait=true"), json!({ "keys": ["tags"], "filter": filter })),
        (M::POST, c("/points"), json!({ "ids": [5, 6, 11], "with_payload": true })),
        (M::POST, c("/points/delete?wait=true"), json!({ "filter": filter })),
        (M::POST, c("/points/count"), json!({})),
        (M::PUT, c("/points?wait=true"), json!({ "points": [{ "id": 1, "vector": [1.0, 2.0] }] })),
        (M::POST, "/collections/missing/points/count".to_string(), json!({})),
        (M::POST, c("/points/discover"), json!({})),
        (M::GET, "/collections".to_string(), Value::Null),
        (M::DELETE, c(""), Value::Null),
        (M::DELETE, c(""), Value::Null),
    ]);
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_answers_are_identical_direct_and_through_cutover() {
    let t = twins().await;
    let http = reqwest::Client::new();
    for collection in ["plain", "routed"] {
        for (method, path, body) in rest_script(collection) {
            let mut answers = Vec::new();
            for base in [t.direct.upstream.rest_url(), t.proxy.rest_url()] {
                let mut request = http.request(method.clone(), format!("{base}{path}"));
                if !body.is_null() {
                    request = request.json(&body);
                }
                let response = request.send().await.unwrap();
                let status = response.status();
                let content_type = response.headers().get("content-type").cloned();
                answers.push((
                    status,
                    content_type,
                    without_time(response.json().await.unwrap()),
                ));
            }
            assert_eq!(answers[0], answers[1], "{method} {path}");
        }
    }
    t.stop().await;
}

struct Clients {
    points: PointsClient<Channel>,
    collections: CollectionsClient<Channel>,
}

async fn clients(url: String) -> Clients {
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    Clients {
        points: PointsClient::new(channel.clone()),
        collections: CollectionsClient::new(channel),
    }
}

/// Runs one call against both and checks the answers match, `time` zeroed
/// (every Qdrant response carries one) and errors compared by code and message.
macro_rules! same {
    ($direct:expr, $proxied:expr, $label:expr, |$c:ident| $call:expr) => {{
        let a = {
            let $c = &mut $direct;
            $call.await
        };
        let b = {
            let $c = &mut $proxied;
            $call.await
        };
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => {
                let (mut a, mut b) = (a.into_inner(), b.into_inner());
                a.time = 0.0;
                b.time = 0.0;
                assert_eq!(a, b, "{}", $label);
                continue_ok()
            }
            (Err(a), Err(b)) => (
                (a.code(), a.message().to_owned()),
                (b.code(), b.message().to_owned()),
            ),
            (a, b) => panic!(
                "{}: one side failed: direct {:?}, proxied {:?}",
                $label,
                a.err(),
                b.err()
            ),
        };
        assert_eq!(a, b, "{}", $label);
    }};
}

/// What an answered pair leaves to compare: nothing more.
fn continue_ok() -> ((tonic::Code, String), (tonic::Code, String)) {
    (
        (tonic::Code::Ok, String::new()),
        (tonic::Code::Ok, String::new()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_are_identical_direct_and_through_cutover() {
    let t = twins().await;
    let mut direct = clients(t.direct.upstream.grpc_url()).await;
    let mut proxied = clients(t.proxy.grpc_url()).await;
    let points = dataset(400, 8, 6);
    let query = Rng::new(9).vector(8);
    let filter = Filter {
        must: vec![Condition::matches("group", "g2".to_string())],
        must_not: vec![Condition::range(
            "n",
            Range {
                gt: Some(300.0),
                ..Default::default()
            },
        )],
        ..Default::default()
    };
    for name in ["plain", "routed"] {
        let create = pb::CreateCollection {
            collection_name: name.into(),
            vectors_config: Some(pb::VectorsConfig {
                config: Some(pb::vectors_config::Config::Params(pb::VectorParams {
                    size: 8,
                    distance: pb::Distance::Euclid as i32,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        same!(direct, proxied, "create", |c| c
            .collections
            .create(create.clone()));
        same!(direct, proxied, "create again", |c| c
            .collections
            .create(create.clone()));
        for chunk in points.chunks(100) {
            let upsert = pb::UpsertPoints {
                collection_name: name.into(),
                wait: Some(true),
                points: chunk
                    .iter()
                    .map(|p| {
                        pb::PointStruct::new(
                            p.id,
                            p.vector.clone(),
                            qdrant_client::Payload::try_from(p.payload.clone()).unwrap(),
                        )
                    })
                    .collect(),
                ..Default::default()
            };
            same!(direct, proxied, "upsert", |c| c
                .points
                .upsert(upsert.clone()));
        }
        let search = pb::SearchPoints {
            collection_name: name.into(),
            vector: query.clone(),
            limit: 10,
            filter: Some(filter.clone()),
            with_payload: Some(true.into()),
            ..Default::default()
        };
        same!(direct, proxied, "search", |c| c
            .points
            .search(search.clone()));
        let batch = pb::SearchBatchPoints {
            collection_name: name.into(),
            search_points: vec![search.clone(), search.clone()],
            ..Default::default()
        };
        same!(direct, proxied, "search batch", |c| c
            .points
            .search_batch(batch.clone()));
        let query_points = pb::QueryPoints {
            collection_name: name.into(),
            prefetch: vec![
                pb::PrefetchQuery {
                    query: Some(pb::Query {
                        variant: Some(pb::query::Variant::Nearest(pb::VectorInput {
                            variant: Some(pb::vector_input::Variant::Dense(pb::DenseVector {
                                data: query.clone(),
                            })),
                        })),
                    }),
                    limit: Some(20),
                    ..Default::default()
                },
                pb::PrefetchQuery {
                    query: Some(pb::Query {
                        variant: Some(pb::query::Variant::Nearest(pb::VectorInput {
                            variant: Some(pb::vector_input::Variant::Id(4.into())),
                        })),
                    }),
                    limit: Some(20),
                    ..Default::default()
                },
            ],
            query: Some(pb::Query {
                variant: Some(pb::query::Variant::Fusion(pb::Fusion::Rrf as i32)),
            }),
            limit: Some(6),
            ..Default::default()
        };
        same!(direct, proxied, "query rrf", |c| c
            .points
            .query(query_points.clone()));
        let recommend = pb::RecommendPoints {
            collection_name: name.into(),
            positive: vec![1.into(), 2.into()],
            negative: vec![3.into()],
            limit: 5,
            ..Default::default()
        };
        same!(direct, proxied, "recommend", |c| c
            .points
            .recommend(recommend.clone()));
        let scroll = pb::ScrollPoints {
            collection_name: name.into(),
            limit: Some(64),
            offset: Some(100.into()),
            with_vectors: Some(true.into()),
            ..Default::default()
        };
        same!(direct, proxied, "scroll", |c| c
            .points
            .scroll(scroll.clone()));
        let count = pb::CountPoints {
            collection_name: name.into(),
            filter: Some(filter.clone()),
            exact: Some(true),
            ..Default::default()
        };
        same!(direct, proxied, "count", |c| c.points.count(count.clone()));
        let delete = pb::DeletePoints {
            collection_name: name.into(),
            wait: Some(true),
            points: Some(filter.clone().into()),
            ..Default::default()
        };
        same!(direct, proxied, "delete by filter", |c| c
            .points
            .delete(delete.clone()));
        let get = pb::GetPoints {
            collection_name: name.into(),
            ids: vec![1.into(), 2.into(), 7.into()],
            with_payload: Some(true.into()),
            ..Default::default()
        };
        same!(direct, proxied, "get", |c| c.points.get(get.clone()));
        let bad = one_point_upsert(name, 1, vec![1.0]);
        same!(direct, proxied, "wrong size", |c| c
            .points
            .upsert(bad.clone()));
        let info = pb::GetCollectionInfoRequest {
            collection_name: name.into(),
        };
        same!(direct, proxied, "info", |c| c.collections.get(info.clone()));
        let discover = pb::DiscoverPoints {
            collection_name: name.into(),
            limit: 1,
            ..Default::default()
        };
        same!(direct, proxied, "unsupported", |c| c
            .points
            .discover(discover.clone()));
    }
    let missing = pb::CountPoints {
        collection_name: "missing".into(),
        ..Default::default()
    };
    same!(direct, proxied, "missing collection", |c| c
        .points
        .count(missing.clone()));
    same!(direct, proxied, "list", |c| c
        .collections
        .list(pb::ListCollectionsRequest {}));
    for name in ["plain", "routed"] {
        let delete = pb::DeleteCollection {
            collection_name: name.into(),
            ..Default::default()
        };
        same!(direct, proxied, "delete collection", |c| c
            .collections
            .delete(delete.clone()));
    }
    t.stop().await;
}
