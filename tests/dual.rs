//! Dual writes through cutover (policy `fail`): every write reaches both
//! sides, which end up holding exactly the same points, payloads and
//! vectors; a failing secondary is an error to the client naming the side.

mod common;

use common::*;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::{self as pb, Condition, Filter};
use serde_json::{Value, json};

const DUAL_ROUTE: &str = r#"
[[routes]]
collection = "docs"
blue = { upstream = "blue", collection = "docs" }
green = { upstream = "green", collection = "docs_v2" }
writes = "dual"
on_secondary_failure = "fail"
# Green's copies go with wait=false: the embedded upstream applies them before
# answering all the same, so the comparison below is not racy.
secondary_wait = false
"#;

fn payload(value: Value) -> std::collections::HashMap<String, pb::Value> {
    qdrant_client::Payload::try_from(value).unwrap().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_end_up_identical_and_a_failing_secondary_is_named() {
    let blue = start_upstream().await;
    let green = start_upstream().await;
    let http = reqwest::Client::new();
    create_collection(&blue.upstream.rest_url(), "docs", 4, "Dot").await;
    create_collection(&green.upstream.rest_url(), "docs_v2", 4, "Dot").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        &proxy_config(&blue.upstream, &green.upstream, dir.path(), DUAL_ROUTE),
        dir.path(),
    )
    .await;
    let client = Qdrant::from_url(&proxy.grpc_url()).build().unwrap();
    let docs = || "docs".to_string();

    // gRPC: upserts, payload and vector updates, deletes by ids and by filter, a batch, an index.
    let points = dataset(300, 4, 17);
    for chunk in points.chunks(100) {
        let upsert = pb::UpsertPoints {
            collection_name: docs(),
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
        client.upsert_points(upsert).await.unwrap();
    }
    let set = pb::SetPayloadPoints {
        collection_name: docs(),
        wait: Some(true),
        payload: payload(json!({ "seen": true })),
        points_selector: Some(id_selector(&[1, 2, 3])),
        ..Default::default()
    };
    client.set_payload(set).await.unwrap();
    let overwrite = pb::SetPayloadPoints {
        collection_name: docs(),
        wait: Some(true),
        payload: payload(json!({ "only": 1 })),
        points_selector: Some(id_selector(&[4])),
        ..Default::default()
    };
    client.overwrite_payload(overwrite).await.unwrap();
    let delete_key = pb::DeletePayloadPoints {
        collection_name: docs(),
        wait: Some(true),
        keys: vec!["tags".into()],
        points_selector: Some(id_selector(&[5, 6])),
        ..Default::default()
    };
    client.delete_payload(delete_key).await.unwrap();
    let vectors = pb::UpdatePointVectors {
        collection_name: docs(),
        wait: Some(true),
        points: vec![pb::PointVectors {
            id: Some(7.into()),
            vectors: Some(vec![9.0f32, 9.0, 9.0, 9.0].into()),
        }],
        ..Default::default()
    };
    client.update_vectors(vectors).await.unwrap();
    client
        .delete_points(pb::DeletePoints {
            collection_name: docs(),
            wait: Some(true),
            points: Some(id_selector(&[10, 11])),
            ..Default::default()
        })
        .await
        .unwrap();
    let by_filter = Filter::must([Condition::matches("group", "g3".to_string())]);
    client
        .delete_points(pb::DeletePoints {
            collection_name: docs(),
            wait: Some(true),
            points: Some(by_filter.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let clear = pb::ClearPayloadPoints {
        collection_name: docs(),
        wait: Some(true),
        points: Some(id_selector(&[12])),
        ..Default::default()
    };
    client.clear_payload(clear).await.unwrap();
    let index = pb::CreateFieldIndexCollection {
        collection_name: docs(),
        wait: Some(true),
        field_name: "group".into(),
        field_type: Some(pb::FieldType::Keyword as i32),
        ..Default::default()
    };
    client.create_field_index(index).await.unwrap();

    let (b, g) = (
        all_points(&http, &blue.upstream.rest_url(), "docs").await,
        all_points(&http, &green.upstream.rest_url(), "docs_v2").await,
    );
    assert_eq!(
        b.as_array().unwrap().len(),
        300 - 2 - 60,
        "the workload ran"
    );
    assert_eq!(
        b, g,
        "after the gRPC workload, green holds exactly what blue holds"
    );

    // REST: the same kinds of writes.
    let rest = proxy.rest_url();
    let more: Vec<Value> = dataset(50, 4, 18)
        .iter()
        .map(|p| json!({ "id": p.id + 1000, "vector": p.vector, "payload": p.payload }))
        .collect();
    for (method, path, body) in [
        (
            reqwest::Method::PUT,
            "points?wait=true",
            json!({ "points": more }),
        ),
        (
            reqwest::Method::POST,
            "points/payload?wait=true",
            json!({ "payload": { "rest": true }, "points": [1001, 1002] }),
        ),
        (
            reqwest::Method::PUT,
            "points/vectors?wait=true",
            json!({ "points": [{ "id": 1003, "vector": [1.0, 1.0, 1.0, 1.0] }] }),
        ),
        (
            reqwest::Method::POST,
            "points/delete?wait=true",
            json!({ "filter": { "must": [{ "key": "group", "match": { "value": "g4" } }] } }),
        ),
        (
            reqwest::Method::POST,
            "points/batch?wait=true",
            json!({ "operations": [
            { "set_payload": { "payload": { "batched": 1 }, "points": [1005] } },
            { "delete": { "points": [1006] } },
        ] }),
        ),
    ] {
        let response = http
            .request(method, format!("{rest}/collections/docs/{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.text().await.unwrap()
        );
    }
    let (b, g) = (
        all_points(&http, &blue.upstream.rest_url(), "docs").await,
        all_points(&http, &green.upstream.rest_url(), "docs_v2").await,
    );
    assert_eq!(
        b, g,
        "after the REST workload, green holds exactly what blue holds"
    );

    // A vector that fits neither side: both collections have the same
    // sizes, so both sides refuse it alike and the client gets Qdrant's own
    // 400; neither side has the point. (Sides of different sizes are
    // checked by cutover itself: tests/transform.rs.)
    let response = http
        .put(format!("{rest}/collections/docs/points?wait=true"))
        .json(&json!({ "points": [{ "id": 4242, "vector": [1.0] }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let message = response.json::<serde_json::Value>().await.unwrap()["status"]["error"].clone();
    assert!(
        message.as_str().unwrap().contains("expected dim: 4, got 1"),
        "{message}"
    );
    for (url, collection) in [
        (blue.upstream.rest_url(), "docs"),
        (green.upstream.rest_url(), "docs_v2"),
    ] {
        let point = http
            .get(format!("{url}/collections/{collection}/points/4242"))
            .send()
            .await
            .unwrap();
        assert_eq!(point.status(), 404, "{collection} does not have the point");
    }
    // A write the primary refuses is refused as the primary refuses it.
    let response = http
        .post(format!("{rest}/collections/docs/points/payload?wait=true"))
        .json(&json!({ "payload": { "x": 1 }, "points": [999_999] }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let direct = http
        .post(format!(
            "{}/collections/docs/points/payload?wait=true",
            blue.upstream.rest_url()
        ))
        .json(&json!({ "payload": { "x": 1 }, "points": [999_999] }))
        .send()
        .await
        .unwrap();
    assert!(!status.is_success());
    assert_eq!(status, direct.status(), "the primary's own refusal");

    // Green stops: writes fail, naming green; reads still come from blue.
    green.upstream.stop().await;
    let response = http
        .put(format!("{rest}/collections/docs/points?wait=true"))
        .json(&json!({ "points": [{ "id": 5000, "vector": [1.0, 0.0, 0.0, 0.0] }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    let message = body["status"]["error"].as_str().unwrap();
    assert!(
        message.contains("applied on blue, but green failed"),
        "{message}"
    );
    let upsert = one_point_upsert(&docs(), 5001, vec![1.0, 0.0, 0.0, 0.0]);
    let err = client.upsert_points(upsert).await.unwrap_err();
    let qdrant_client::QdrantError::ResponseError { status } = err else {
        panic!("a gRPC status, got {err:?}")
    };
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("green failed"),
        "{}",
        status.message()
    );
    let count = client
        .count(pb::CountPoints {
            collection_name: docs(),
            exact: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(count.result.unwrap().count > 0, "reads are served by blue");

    assert_metrics_contain(
        &proxy.admin_url(),
        &[
            r#"cutover_dual_writes_total{protocol="grpc",route="docs",side="green",outcome="ok"}"#,
            r#"cutover_dual_writes_total{protocol="rest",route="docs",side="blue",outcome="error"}"#,
            // Refused by both sides alike: the vector does not fit either.
            r#"cutover_requests_total{protocol="rest",method="upsert",route="docs",side="blue",outcome="error"}"#,
            r#"cutover_dual_writes_total{protocol="rest",route="docs",side="green",outcome="error"}"#,
            r#"cutover_dual_writes_total{protocol="rest",route="docs",side="green",outcome="unreachable"}"#,
            r#"cutover_requests_total{protocol="grpc",method="Upsert",route="docs",side="blue",outcome="secondary_failed"}"#,
        ],
    )
    .await;
    proxy.running.stop().await;
    blue.upstream.stop().await;
}
