//! The embedded upstream driven over real sockets: the same scenario through
//! gRPC with the real `qdrant-client` crate and through REST with plain HTTP.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::*;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::{self as pb, Condition, Filter, Range};
use serde_json::{Value, json};

/// What the scenario needs of a protocol.
trait Driver {
    async fn create(&self, name: &str, vectors: Value) -> Result<(), Failure>;
    async fn upsert(
        &self,
        name: &str,
        points: &[TestPoint],
        vector_name: Option<&str>,
    ) -> Result<(), Failure>;
    async fn upsert_named(&self, name: &str, points: &[NamedPoint]) -> Result<(), Failure>;
    async fn search(
        &self,
        name: &str,
        query: &[f32],
        using: Option<&str>,
        filter: Option<&FilterCase>,
        limit: u64,
    ) -> Result<Vec<(u64, f32)>, Failure>;
    async fn count(&self, name: &str, filter: Option<&FilterCase>) -> Result<u64, Failure>;
    /// One scroll page: ids and the next offset.
    async fn scroll(
        &self,
        name: &str,
        offset: Option<u64>,
        limit: u32,
    ) -> Result<(Vec<u64>, Option<u64>), Failure>;
    async fn delete_ids(&self, name: &str, ids: &[u64]) -> Result<(), Failure>;
    async fn delete_filter(&self, name: &str, filter: &FilterCase) -> Result<(), Failure>;
    async fn set_payload(&self, name: &str, ids: &[u64], payload: Value) -> Result<(), Failure>;
    async fn overwrite_payload(
        &self,
        name: &str,
        ids: &[u64],
        payload: Value,
    ) -> Result<(), Failure>;
    async fn delete_payload_keys(
        &self,
        name: &str,
        ids: &[u64],
        keys: &[&str],
    ) -> Result<(), Failure>;
    async fn clear_payload(&self, name: &str, ids: &[u64]) -> Result<(), Failure>;
    async fn payload(&self, name: &str, id: u64) -> Result<Option<Value>, Failure>;
    async fn call_unsupported(&self, name: &str) -> Result<(), Failure>;
}

/// A point with named vectors and no payload.
type NamedPoint = (u64, HashMap<String, Vec<f32>>);

/// A failed call: the protocol's code and Qdrant's message.
#[derive(Debug)]
struct Failure {
    code: String,
    message: String,
}

struct FilterCase {
    name: &'static str,
    rest: Value,
    grpc: Filter,
    keep: fn(&TestPoint) -> bool,
}

fn filter_cases() -> Vec<FilterCase> {
    vec![
        FilterCase {
            name: "match keyword",
            rest: json!({ "must": [{ "key": "group", "match": { "value": "g2" } }] }),
            grpc: Filter::must([Condition::matches("group", "g2".to_string())]),
            keep: |p| p.payload["group"] == "g2",
        },
        FilterCase {
            name: "range",
            rest: json!({ "must": [{ "key": "n", "range": { "gte": 100, "lt": 1500 } }] }),
            grpc: Filter::must([Condition::range(
                "n",
                Range {
                    gte: Some(100.0),
                    lt: Some(1500.0),
                    ..Default::default()
                },
            )]),
            keep: |p| (100..1500).contains(&p.id),
        },
        FilterCase {
            name: "must, should and must_not",
            rest: json!({
                "must": [{ "key": "group", "match": { "any": ["g1", "g3"] } }],
                "should": [
                    { "key": "score", "range": { "lt": 2.5 } },
                    { "key": "tags", "match": { "value": "t0" } }
                ],
                "must_not": [{ "key": "n", "range": { "gt": 2500 } }]
            }),
            grpc: Filter {
                must: vec![Condition::matches(
                    "group",
                    vec!["g1".to_string(), "g3".to_string()],
                )],
                should: vec![
                    Condition::range(
                        "score",
                        Range {
                            lt: Some(2.5),
                            ..Default::default()
                        },
                    ),
                    Condition::matches("tags", "t0".to_string()),
                ],
                must_not: vec![Condition::range(
                    "n",
                    Range {
                        gt: Some(2500.0),
                        ..Default::default()
                    },
                )],
                ..Default::default()
            },
            keep: |p| {
                let group = p.payload["group"].as_str().unwrap();
                let score = p.payload["score"].as_f64().unwrap();
                let tags = p.payload["tags"].as_array().unwrap();
                (group == "g1" || group == "g3")
                    && (score < 2.5 || tags.iter().any(|t| t == "t0"))
                    && p.id <= 2500
            },
        },
    ]
}

// ---------------------------------------------------------------- gRPC

struct Grpc(Qdrant);

fn grpc_failure(status: qdrant_client::QdrantError) -> Failure {
    match status {
        qdrant_client::QdrantError::ResponseError { status } => Failure {
            code: format!("{:?}", status.code()),
            message: status.message().to_owned(),
        },
        other => Failure {
            code: "client".into(),
            message: other.to_string(),
        },
    }
}

fn pb_payload(value: Value) -> qdrant_client::Payload {
    qdrant_client::Payload::try_from(value).expect("a JSON object")
}

/// SetPayload and OverwritePayload take the same message.
fn set_payload_request(name: &str, ids: &[u64], payload: Value) -> pb::SetPayloadPoints {
    pb::SetPayloadPoints {
        collection_name: name.into(),
        wait: Some(true),
        payload: pb_payload(payload).into(),
        points_selector: Some(id_selector(ids)),
        ..Default::default()
    }
}

fn num_id(id: Option<pb::PointId>) -> u64 {
    match id.and_then(|id| id.point_id_options) {
        Some(pb::point_id::PointIdOptions::Num(n)) => n,
        other => panic!("expected a numeric id, got {other:?}"),
    }
}

impl Driver for Grpc {
    async fn create(&self, name: &str, vectors: Value) -> Result<(), Failure> {
        let params = |v: &Value| pb::VectorParams {
            size: v["size"].as_u64().unwrap(),
            distance: pb::Distance::from_str_name(v["distance"].as_str().unwrap()).unwrap() as i32,
            ..Default::default()
        };
        let config = if vectors.get("size").is_some() {
            pb::vectors_config::Config::Params(params(&vectors))
        } else {
            pb::vectors_config::Config::ParamsMap(pb::VectorParamsMap {
                map: vectors
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), params(v)))
                    .collect(),
            })
        };
        let request = pb::CreateCollection {
            collection_name: name.into(),
            vectors_config: Some(pb::VectorsConfig {
                config: Some(config),
            }),
            ..Default::default()
        };
        self.0
            .create_collection(request)
            .await
            .map(|_| ())
            .map_err(grpc_failure)
    }

    async fn upsert(
        &self,
        name: &str,
        points: &[TestPoint],
        vector_name: Option<&str>,
    ) -> Result<(), Failure> {
        let points: Vec<pb::PointStruct> = points
            .iter()
            .map(|p| {
                let payload = pb_payload(p.payload.clone());
                match vector_name {
                    None => pb::PointStruct::new(p.id, p.vector.clone(), payload),
                    Some(n) => pb::PointStruct::new(
                        p.id,
                        HashMap::from([(n.to_string(), p.vector.clone())]),
                        payload,
                    ),
                }
            })
            .collect();
        let request = pb::UpsertPoints {
            collection_name: name.into(),
            wait: Some(true),
            points,
            ..Default::default()
        };
        self.0
            .upsert_points(request)
            .await
            .map(|_| ())
            .map_err(grpc_failure)
    }

    async fn upsert_named(&self, name: &str, points: &[NamedPoint]) -> Result<(), Failure> {
        let points = points
            .iter()
            .map(|(id, vectors)| {
                pb::PointStruct::new(*id, vectors.clone(), qdrant_client::Payload::new())
            })
            .collect();
        let request = pb::UpsertPoints {
            collection_name: name.into(),
            wait: Some(true),
            points,
            ..Default::default()
        };
        self.0
            .upsert_points(request)
            .await
            .map(|_| ())
            .map_err(grpc_failure)
    }

    async fn search(
        &self,
        name: &str,
        query: &[f32],
        using: Option<&str>,
        filter: Option<&FilterCase>,
        limit: u64,
    ) -> Result<Vec<(u64, f32)>, Failure> {
        let request = pb::SearchPoints {
            collection_name: name.into(),
            vector: query.to_vec(),
            vector_name: using.map(Into::into),
            filter: filter.map(|f| f.grpc.clone()),
            limit,
            params: Some(pb::SearchParams {
                exact: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = self.0.search_points(request).await.map_err(grpc_failure)?;
        Ok(response
            .result
            .into_iter()
            .map(|p| (num_id(p.id), p.score))
            .collect())
    }

    async fn count(&self, name: &str, filter: Option<&FilterCase>) -> Result<u64, Failure> {
        let request = pb::CountPoints {
            collection_name: name.into(),
            filter: filter.map(|f| f.grpc.clone()),
            exact: Some(true),
            ..Default::default()
        };
        let response = self.0.count(request).await.map_err(grpc_failure)?;
        Ok(response.result.unwrap().count)
    }

    async fn scroll(
        &self,
        name: &str,
        offset: Option<u64>,
        limit: u32,
    ) -> Result<(Vec<u64>, Option<u64>), Failure> {
        let request = pb::ScrollPoints {
            collection_name: name.into(),
            offset: offset.map(Into::into),
            limit: Some(limit),
            ..Default::default()
        };
        let response = self.0.scroll(request).await.map_err(grpc_failure)?;
        let ids = response.result.into_iter().map(|p| num_id(p.id)).collect();
        Ok((ids, response.next_page_offset.map(|id| num_id(Some(id)))))
    }

    async fn delete_ids(&self, name: &str, ids: &[u64]) -> Result<(), Failure> {
        let request = pb::DeletePoints {
            collection_name: name.into(),
            wait: Some(true),
            points: Some(id_selector(ids)),
            ..Default::default()
        };
        self.0
            .delete_points(request)
            .await
            .map(|_| ())
            .map_err(grpc_failure)
    }

    async fn delete_filter(&self, name: &str, filter: &FilterCase) -> Result<(), Failure> {
        let request = pb::DeletePoints {
            collection_name: name.into(),
            wait: Some(true),
            points: Some(filter.grpc.clone().into()),
            ..Default::default()
        };
        self.0
            .delete_points(request)
            .await
            .map(|_| ())
            .map_err(grpc_failure)
    }

    async fn set_payload(&self, name: &str, ids: &[u64], payload: Value) -> Result<(), Failure> {
        let request = set_payload_request(name, ids, payload);
        self.0
            .set_payload(request)
            .await
            .map(|_| ())
            .map_err(grpc_failure)
    }

    async fn overwrite_payload(
        &self,
        name: &str,
        ids: &[u64],
        payload: Value,
    ) -> Result<(), Failure> {
        let request = set_payload_request(name, ids, payload);
        self.0
            .overwrite_payload(request)
            .await
            .map(|_| ())
            .map_err(grpc_failure)
    }

    async fn delete_payload_keys(
        &self,
        name: &str,
        ids: &[u64],
        keys: &[&str],
    ) -> Result<(), Failure> {
        let request = pb::DeletePayloadPoints {
            collection_name: name.into(),
            wait: Some(true),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            points_selector: Some(id_selector(ids)),
            ..Default::default()
        };
        self.0
            .delete_payload(request)
            .await
            .map(|_| ())
            .map_err(grpc_failure)
    }

    async fn clear_payload(&self, name: &str, ids: &[u64]) -> Result<(), Failure> {
        let request = pb::ClearPayloadPoints {
            collection_name: name.into(),
            wait: Some(true),
            points: Some(id_selector(ids)),
            ..Default::default()
        };
        self.0
            .clear_payload(request)
            .await
            .map(|_| ())
            .map_err(grpc_failure)
    }

    async fn payload(&self, name: &str, id: u64) -> Result<Option<Value>, Failure> {
        let request = pb::GetPoints {
            collection_name: name.into(),
            ids: vec![id.into()],
            with_payload: Some(true.into()),
            ..Default::default()
        };
        let response = self.0.get_points(request).await.map_err(grpc_failure)?;
        Ok(response.result.into_iter().next().map(|p| {
            Value::Object(
                p.payload
                    .into_iter()
                    .map(|(k, v)| (k, Value::from(v)))
                    .collect(),
            )
        }))
    }

    async fn call_unsupported(&self, name: &str) -> Result<(), Failure> {
        let request = pb::DiscoverPoints {
            collection_name: name.into(),
            limit: 3,
            ..Default::default()
        };
        self.0
            .discover(request)
            .await
            .map(|_| ())
            .map_err(grpc_failure)
    }
}

// ---------------------------------------------------------------- REST

struct Rest {
    http: reqwest::Client,
    base: String,
}

impl Rest {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| Failure {
            code: "client".into(),
            message: e.to_string(),
        })?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| Failure {
            code: "client".into(),
            message: e.to_string(),
        })?;
        if status.is_success() {
            assert_eq!(body["status"], "ok", "a success carries status ok: {body}");
            assert!(body["time"].is_f64(), "a success carries the time: {body}");
            Ok(body["result"].clone())
        } else {
            let message = body["status"]["error"]
                .as_str()
                .unwrap_or_else(|| panic!("an error envelope: {body}"));
            Err(Failure {
                code: status.as_u16().to_string(),
                message: message.to_owned(),
            })
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, Failure> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> Result<Value, Failure> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
}

impl Driver for Rest {
    async fn create(&self, name: &str, vectors: Value) -> Result<(), Failure> {
        self.put(
            &format!("/collections/{name}"),
            json!({ "vectors": vectors }),
        )
        .await
        .map(|_| ())
    }

    async fn upsert(
        &self,
        name: &str,
        points: &[TestPoint],
        vector_name: Option<&str>,
    ) -> Result<(), Failure> {
        let points: Vec<Value> = points
            .iter()
            .map(|p| {
                let vector = match vector_name {
                    None => json!(p.vector),
                    Some(n) => json!({ n: p.vector }),
                };
                json!({ "id": p.id, "vector": vector, "payload": p.payload })
            })
            .collect();
        self.put(
            &format!("/collections/{name}/points?wait=true"),
            json!({ "points": points }),
        )
        .await
        .map(|_| ())
    }

    async fn upsert_named(&self, name: &str, points: &[NamedPoint]) -> Result<(), Failure> {
        let points: Vec<Value> = points
            .iter()
            .map(|(id, vectors)| json!({ "id": id, "vector": vectors }))
            .collect();
        self.put(
            &format!("/collections/{name}/points?wait=true"),
            json!({ "points": points }),
        )
        .await
        .map(|_| ())
    }

    async fn search(
        &self,
        name: &str,
        query: &[f32],
        using: Option<&str>,
        filter: Option<&FilterCase>,
        limit: u64,
    ) -> Result<Vec<(u64, f32)>, Failure> {
        let vector = match using {
            None => json!(query),
            Some(n) => json!({ "name": n, "vector": query }),
        };
        let body = json!({
            "vector": vector,
            "filter": filter.map(|f| f.rest.clone()),
            "limit": limit,
            "params": { "exact": true },
        });
        let result = self
            .post(&format!("/collections/{name}/points/search"), body)
            .await?;
        Ok(result
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_u64().unwrap(),
                    p["score"].as_f64().unwrap() as f32,
                )
            })
            .collect())
    }

    async fn count(&self, name: &str, filter: Option<&FilterCase>) -> Result<u64, Failure> {
        let body = json!({ "filter": filter.map(|f| f.rest.clone()), "exact": true });
        let result = self
            .post(&format!("/collections/{name}/points/count"), body)
            .await?;
        Ok(result["count"].as_u64().unwrap())
    }

    async fn scroll(
        &self,
        name: &str,
        offset: Option<u64>,
        limit: u32,
    ) -> Result<(Vec<u64>, Option<u64>), Failure> {
        let body = json!({ "offset": offset, "limit": limit });
        let result = self
            .post(&format!("/collections/{name}/points/scroll"), body)
            .await?;
        let ids = result["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_u64().unwrap())
            .collect();
        Ok((ids, result["next_page_offset"].as_u64()))
    }

    async fn delete_ids(&self, name: &str, ids: &[u64]) -> Result<(), Failure> {
        self.post(
            &format!("/collections/{name}/points/delete?wait=true"),
            json!({ "points": ids }),
        )
        .await
        .map(|_| ())
    }

    async fn delete_filter(&self, name: &str, filter: &FilterCase) -> Result<(), Failure> {
        self.post(
            &format!("/collections/{name}/points/delete?wait=true"),
            json!({ "filter": filter.rest }),
        )
        .await
        .map(|_| ())
    }

    async fn set_payload(&self, name: &str, ids: &[u64], payload: Value) -> Result<(), Failure> {
        self.post(
            &format!("/collections/{name}/points/payload?wait=true"),
            json!({ "payload": payload, "points": ids }),
        )
        .await
        .map(|_| ())
    }

    async fn overwrite_payload(
        &self,
        name: &str,
        ids: &[u64],
        payload: Value,
    ) -> Result<(), Failure> {
        self.put(
            &format!("/collections/{name}/points/payload?wait=true"),
            json!({ "payload": payload, "points": ids }),
        )
        .await
        .map(|_| ())
    }

    async fn delete_payload_keys(
        &self,
        name: &str,
        ids: &[u64],
        keys: &[&str],
    ) -> Result<(), Failure> {
        self.post(
            &format!("/collections/{name}/points/payload/delete?wait=true"),
            json!({ "keys": keys, "points": ids }),
        )
        .await
        .map(|_| ())
    }

    async fn clear_payload(&self, name: &str, ids: &[u64]) -> Result<(), Failure> {
        self.post(
            &format!("/collections/{name}/points/payload/clear?wait=true"),
            json!({ "points": ids }),
        )
        .await
        .map(|_| ())
    }

    async fn payload(&self, name: &str, id: u64) -> Result<Option<Value>, Failure> {
        let result = self
            .post(
                &format!("/collections/{name}/points"),
                json!({ "ids": [id], "with_payload": true }),
            )
            .await?;
        Ok(result
            .as_array()
            .unwrap()
            .first()
            .map(|p| p["payload"].clone()))
    }

    async fn call_unsupported(&self, name: &str) -> Result<(), Failure> {
        self.post(
            &format!("/collections/{name}/points/discover"),
            json!({ "limit": 3 }),
        )
        .await
        .map(|_| ())
    }
}

// ---------------------------------------------------------------- the scenario

const POINTS: u64 = 3000;
const DIM: usize = 16;

async fn scenario(driver: &impl Driver, codes: &Codes) {
    let points = dataset(POINTS, DIM, 7);
    let mut rng = Rng::new(99);

    // Search ordering against brute force, for every distance.
    for metric in [Metric::Cosine, Metric::Dot, Metric::Euclid] {
        let name = format!("plain_{}", metric.name().to_lowercase());
        driver
            .create(&name, json!({ "size": DIM, "distance": metric.name() }))
            .await
            .unwrap();
        for chunk in points.chunks(500) {
            driver.upsert(&name, chunk, None).await.unwrap();
        }
        assert_eq!(driver.count(&name, None).await.unwrap(), POINTS);
        for _ in 0..5 {
            let query = rng.vector(DIM);
            let got = driver.search(&name, &query, None, None, 10).await.unwrap();
            let want = brute_force(&points, metric, &query, 10, |_| true);
            assert_same_ranking(&got, &want, &format!("{metric:?} search"));
        }
    }
    let name = "plain_cosine";

    // Filters: counts and filtered search against the same predicate.
    for case in filter_cases() {
        let want_count = points.iter().filter(|p| (case.keep)(p)).count() as u64;
        assert!(want_count > 0, "{}: the case selects something", case.name);
        assert_eq!(
            driver.count(name, Some(&case)).await.unwrap(),
            want_count,
            "{}",
            case.name
        );
        let query = rng.vector(DIM);
        let got = driver
            .search(name, &query, None, Some(&case), 20)
            .await
            .unwrap();
        let want = brute_force(&points, Metric::Cosine, &query, 20, case.keep);
        assert_same_ranking(&got, &want, case.name);
    }

    // Scroll to exhaustion: every point once, none twice.
    let mut seen = BTreeSet::new();
    let mut offset = None;
    let mut pages = 0;
    loop {
        let (ids, next) = driver.scroll(name, offset, 128).await.unwrap();
        pages += 1;
        for id in ids {
            assert!(seen.insert(id), "point {id} returned twice by scroll");
        }
        match next {
            Some(next) => offset = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len() as u64, POINTS, "scroll saw every point");
    assert_eq!(pages, POINTS.div_ceil(128), "pages of 128");

    // Deletes by ids and by filter, then counts.
    let doomed: Vec<u64> = (1..=100).collect();
    driver.delete_ids(name, &doomed).await.unwrap();
    assert_eq!(driver.count(name, None).await.unwrap(), POINTS - 100);
    let cases = filter_cases();
    let by_filter = &cases[0];
    driver.delete_filter(name, by_filter).await.unwrap();
    let remaining = points
        .iter()
        .filter(|p| p.id > 100 && !(by_filter.keep)(p))
        .count() as u64;
    assert_eq!(driver.count(name, None).await.unwrap(), remaining);
    assert_eq!(driver.count(name, Some(by_filter)).await.unwrap(), 0);
    assert_eq!(
        driver.payload(name, 50).await.unwrap(),
        None,
        "a deleted point is gone"
    );

    // Payload operations.
    let id = 1001; // group g1: survives both deletes
    driver
        .set_payload(name, &[id], json!({ "color": "red", "n": -1 }))
        .await
        .unwrap();
    let payload = driver.payload(name, id).await.unwrap().unwrap();
    assert_eq!(payload["color"], "red");
    assert_eq!(payload["n"], -1);
    assert_eq!(payload["group"], "g1", "set keeps the other keys");
    driver
        .delete_payload_keys(name, &[id], &["color", "tags"])
        .await
        .unwrap();
    let payload = driver.payload(name, id).await.unwrap().unwrap();
    assert!(payload.get("color").is_none() && payload.get("tags").is_none());
    assert_eq!(payload["group"], "g1");
    driver
        .overwrite_payload(name, &[id], json!({ "only": true }))
        .await
        .unwrap();
    assert_eq!(
        driver.payload(name, id).await.unwrap().unwrap(),
        json!({ "only": true })
    );
    driver.clear_payload(name, &[id]).await.unwrap();
    assert_eq!(driver.payload(name, id).await.unwrap().unwrap(), json!({}));

    // Named vectors: each name searched on its own, with its own distance.
    let images = dataset(500, 4, 11);
    let texts = dataset(500, 8, 12);
    let named = "named";
    driver
        .create(
            named,
            json!({
                "image": { "size": 4, "distance": "Euclid" },
                "text": { "size": 8, "distance": "Dot" },
            }),
        )
        .await
        .unwrap();
    let pair = |i: &TestPoint, t: &TestPoint| -> NamedPoint {
        (
            i.id,
            HashMap::from([
                ("image".to_string(), i.vector.clone()),
                ("text".to_string(), t.vector.clone()),
            ]),
        )
    };
    let mut both: Vec<NamedPoint> = images.iter().zip(&texts).map(|(i, t)| pair(i, t)).collect();
    let complete = both.clone();
    both[400].1.remove("text");
    let err = driver.upsert_named(named, &both).await.unwrap_err();
    assert_eq!(
        err.code, codes.bad_input,
        "a point without every vector is refused: {}",
        err.message
    );
    assert_eq!(
        driver.count(named, None).await.unwrap(),
        0,
        "a refused upsert wrote nothing"
    );
    driver.upsert_named(named, &complete).await.unwrap();
    assert_eq!(driver.count(named, None).await.unwrap(), 500);
    let query = rng.vector(8);
    let got = driver
        .search(named, &query, Some("text"), None, 10)
        .await
        .unwrap();
    assert_same_ranking(
        &got,
        &brute_force(&texts, Metric::Dot, &query, 10, |_| true),
        "named text",
    );
    let query = rng.vector(4);
    let got = driver
        .search(named, &query, Some("image"), None, 10)
        .await
        .unwrap();
    assert_same_ranking(
        &got,
        &brute_force(&images, Metric::Euclid, &query, 10, |_| true),
        "named image",
    );

    // Errors, with Qdrant's codes and messages.
    let err = driver.count("missing", None).await.unwrap_err();
    assert_eq!(err.code, codes.not_found);
    assert_eq!(
        err.message,
        "Not found: Collection `missing` doesn't exist!"
    );
    let err = driver
        .upsert(name, &dataset(1, DIM - 1, 3), None)
        .await
        .unwrap_err();
    assert_eq!(err.code, codes.bad_input);
    assert!(
        err.message
            .contains(&format!("expected dim: {DIM}, got {}", DIM - 1)),
        "{}",
        err.message
    );
    let err = driver
        .search(name, &[0.5; 3], None, None, 5)
        .await
        .unwrap_err();
    assert_eq!(err.code, codes.bad_input, "{}", err.message);
    let err = driver
        .create(name, json!({ "size": DIM, "distance": "Dot" }))
        .await
        .unwrap_err();
    assert_eq!(err.code, codes.already_exists);
    assert!(err.message.contains("already exists"), "{}", err.message);
    let err = driver.call_unsupported(name).await.unwrap_err();
    assert_eq!(err.code, codes.unimplemented);
    assert!(
        err.message.contains("Discover") || err.message.contains("discover"),
        "{}",
        err.message
    );
}

struct Codes {
    not_found: &'static str,
    bad_input: &'static str,
    already_exists: &'static str,
    unimplemented: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_scenario() {
    let t = start_upstream().await;
    let client = Qdrant::from_url(&t.upstream.grpc_url()).build().unwrap();
    let codes = Codes {
        not_found: "NotFound",
        bad_input: "InvalidArgument",
        already_exists: "AlreadyExists",
        unimplemented: "Unimplemented",
    };
    scenario(&Grpc(client), &codes).await;
    t.upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_scenario() {
    let t = start_upstream().await;
    let rest = Rest {
        http: reqwest::Client::new(),
        base: t.upstream.rest_url(),
    };
    let codes = Codes {
        not_found: "404",
        bad_input: "400",
        already_exists: "409",
        unimplemented: "501",
    };
    scenario(&rest, &codes).await;
    t.upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_qdrant_errors() {
    let t = start_upstream().await;
    let rest = Rest {
        http: reqwest::Client::new(),
        base: t.upstream.rest_url(),
    };
    rest.create("c", json!({ "size": 4, "distance": "Dot" }))
        .await
        .unwrap();

    let response = rest
        .http
        .put(format!("{}/collections/c/points", rest.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["status"]["error"]
            .as_str()
            .unwrap()
            .starts_with("Format error in JSON body"),
        "{body}"
    );

    let err = rest
        .put(
            "/collections/c/points",
            json!({ "points": [{ "id": -5, "vector": [1, 2, 3, 4] }] }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, "400", "{}", err.message);
    let err = rest
        .post(
            "/collections/c/points/query",
            json!({ "query": { "nearest": [1, 2, 3, 4], "mmr": {} } }),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code, "501",
        "a query cutover's engine cannot serve is refused, not half-answered: {}",
        err.message
    );
    assert_eq!(
        rest.count("c", None).await.unwrap(),
        0,
        "nothing was written"
    );

    let client = Qdrant::from_url(&t.upstream.grpc_url()).build().unwrap();
    let err = grpc_failure(client.list_snapshots("c").await.unwrap_err());
    assert_eq!(err.code, "Unimplemented");
    assert!(
        err.message.contains("/qdrant.Snapshots/List"),
        "{}",
        err.message
    );
    t.upstream.stop().await;
}

/// The rest of the subset over REST: collection lifecycle, vectors, batch,
/// field indexes, insert_only, search batch, query forms, recommend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_rest_of_subset() {
    let t = start_upstream().await;
    let rest = Rest {
        http: reqwest::Client::new(),
        base: t.upstream.rest_url(),
    };
    let body = json!({
        "vectors": { "size": 2, "distance": "Dot" },
        "hnsw_config": { "m": 32 },
        "quantization_config": { "scalar": { "type": "int8", "quantile": 0.99 } },
    });
    assert_eq!(rest.put("/collections/c", body).await.unwrap(), json!(true));
    let info = rest
        .call(reqwest::Method::GET, "/collections/c", None)
        .await
        .unwrap();
    assert_eq!(
        info["config"]["params"]["vectors"],
        json!({ "size": 2, "distance": "Dot" })
    );
    assert_eq!(info["config"]["hnsw_config"]["m"], 32);
    assert_eq!(
        info["config"]["quantization_config"]["scalar"]["type"],
        "int8"
    );
    let list = rest
        .call(reqwest::Method::GET, "/collections", None)
        .await
        .unwrap();
    assert_eq!(list, json!({ "collections": [{ "name": "c" }] }));

    // Points 1..=4 on the unit axes and diagonals; payload `k`.
    let points = json!({ "points": [
        { "id": 1, "vector": [1.0, 0.0], "payload": { "k": "a" } },
        { "id": 2, "vector": [0.0, 1.0], "payload": { "k": "b" } },
        { "id": 3, "vector": [0.6, 0.4], "payload": { "k": "c" } },
        { "id": 4, "vector": [0.2, 0.1], "payload": { "k": "d" } },
    ]});
    rest.put("/collections/c/points?wait=true", points)
        .await
        .unwrap();

    // insert_only leaves an existing point alone and adds a new one.
    let insert_only = json!({ "points": [
        { "id": 1, "vector": [9.0, 9.0], "payload": { "k": "changed" } },
        { "id": 5, "vector": [0.0, 0.5], "payload": { "k": "e" } },
    ], "update_mode": "insert_only" });
    rest.put("/collections/c/points?wait=true", insert_only)
        .await
        .unwrap();
    let got = rest
        .post(
            "/collections/c/points",
            json!({ "ids": [1, 5], "with_vector": true }),
        )
        .await
        .unwrap();
    assert_eq!(got[0]["payload"]["k"], "a");
    assert_eq!(got[0]["vector"], json!([1.0, 0.0]));
    assert_eq!(got[1]["payload"]["k"], "e");

    // Update and delete vectors.
    rest.put(
        "/collections/c/points/vectors?wait=true",
        json!({ "points": [{ "id": 4, "vector": [0.0, 2.0] }] }),
    )
    .await
    .unwrap();
    let got = rest
        .call(reqwest::Method::GET, "/collections/c/points/4", None)
        .await
        .unwrap();
    assert_eq!(got["vector"], json!([0.0, 2.0]));

    // Query: nearest by vector with offset, score threshold and a payload selector.
    let query = json!({ "query": [0.0, 1.0], "limit": 2, "offset": 1, "with_payload": ["k"] });
    let got = rest
        .post("/collections/c/points/query", query)
        .await
        .unwrap();
    let ids: Vec<u64> = got["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![2, 5],
        "dot scores: 4 (2.0), 2 (1.0), 5 (0.5); offset 1 skips the first"
    );
    assert_eq!(got["points"][0]["payload"], json!({ "k": "b" }));
    let query = json!({ "query": { "nearest": [0.0, 1.0] }, "score_threshold": 0.75, "limit": 10 });
    let got = rest
        .post("/collections/c/points/query", query)
        .await
        .unwrap();
    assert_eq!(
        got["points"].as_array().unwrap().len(),
        2,
        "only 4 and 2 score at least 0.75"
    );
    // Nearest to a stored point excludes that point.
    let got = rest
        .post(
            "/collections/c/points/query",
            json!({ "query": 3, "limit": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(
        got["points"][0]["id"], 4,
        "closest to (0.6, 0.4) by dot is (0, 2), itself excluded"
    );

    // Prefetch fused with Qdrant's RRF (0-based position, k = 2 by default):
    // prefetch A ranks 1,3,4..; B ranks 4,2,5..; point 1: 1/2, point 4: 1/2 + ...
    let fused = json!({
        "prefetch": [
            { "query": [1.0, 0.0], "limit": 2 },
            { "query": [0.0, 1.0], "limit": 2 },
        ],
        "query": { "fusion": "rrf" },
        "limit": 4,
    });
    let got = rest
        .post("/collections/c/points/query", fused)
        .await
        .unwrap();
    let scores: Vec<(u64, f64)> = got["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_u64().unwrap(), p["score"].as_f64().unwrap()))
        .collect();
    // A: 1 (1.0), 3 (0.6); B: 4 (2.0), 2 (1.0). Each list's first scores 1/(2+0), second 1/(2+1).
    let ids: BTreeSet<u64> = scores.iter().map(|s| s.0).collect();
    assert_eq!(ids, BTreeSet::from([1, 2, 3, 4]));
    for (id, score) in &scores {
        let want = if *id == 1 || *id == 4 { 0.5 } else { 1.0 / 3.0 };
        assert!(
            (score - want).abs() < 1e-6,
            "RRF score of {id}: {score}, want {want}"
        );
    }

    // Recommend: positive 1, negative 2 (average_vector: 2*pos - neg = (2, -1)).
    let got = rest
        .post(
            "/collections/c/points/recommend",
            json!({ "positive": [1], "negative": [2], "limit": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(
        got[0]["id"], 3,
        "(0.6, 0.4) scores 0.8 against (2, -1); 1 and 2 are examples"
    );

    // Search batch.
    let got = rest
        .post(
            "/collections/c/points/search/batch",
            json!({ "searches": [
                { "vector": [1.0, 0.0], "limit": 1 }, { "vector": [0.0, 1.0], "limit": 1 },
            ]}),
        )
        .await
        .unwrap();
    assert_eq!(
        (got[0][0]["id"].clone(), got[1][0]["id"].clone()),
        (json!(1), json!(4))
    );

    // Update batch: set payload, delete vector of named-less point, delete.
    let batch = json!({ "operations": [
        { "set_payload": { "payload": { "x": 1 }, "points": [2] } },
        { "delete": { "points": [5] } },
        { "upsert": { "points": [{ "id": 6, "vector": [0.5, 0.5] }] } },
    ]});
    let results = rest
        .post("/collections/c/points/batch?wait=true", batch)
        .await
        .unwrap();
    assert_eq!(results.as_array().unwrap().len(), 3);
    assert!(
        results
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "completed")
    );
    assert_eq!(rest.count("c", None).await.unwrap(), 5);
    let got = rest
        .post("/collections/c/points", json!({ "ids": [2] }))
        .await
        .unwrap();
    assert_eq!(got[0]["payload"], json!({ "k": "b", "x": 1 }));

    rest.post(
        "/collections/c/points/vectors/delete?wait=true",
        json!({ "points": [6], "vector": [""] }),
    )
    .await
    .unwrap();
    let got = rest
        .post(
            "/collections/c/points",
            json!({ "ids": [6], "with_vector": true }),
        )
        .await
        .unwrap();
    let vector = &got[0]["vector"];
    assert!(
        vector.is_null() || *vector == json!({}),
        "the vector of point 6 is gone: {got}"
    );

    // Field index shows in the payload schema, and goes again.
    rest.put(
        "/collections/c/index?wait=true",
        json!({ "field_name": "k", "field_schema": "keyword" }),
    )
    .await
    .unwrap();
    let info = rest
        .call(reqwest::Method::GET, "/collections/c", None)
        .await
        .unwrap();
    assert_eq!(info["payload_schema"]["k"]["data_type"], "keyword");
    rest.call(
        reqwest::Method::DELETE,
        "/collections/c/index/k?wait=true",
        None,
    )
    .await
    .unwrap();
    let info = rest
        .call(reqwest::Method::GET, "/collections/c", None)
        .await
        .unwrap();
    assert!(info["payload_schema"].get("k").is_none(), "{info}");

    // Delete the collection.
    let exists = rest
        .call(reqwest::Method::GET, "/collections/c/exists", None)
        .await
        .unwrap();
    assert_eq!(exists, json!({ "exists": true }));
    assert_eq!(
        rest.call(reqwest::Method::DELETE, "/collections/c", None)
            .await
            .unwrap(),
        json!(true)
    );
    let exists = rest
        .call(reqwest::Method::GET, "/collections/c/exists", None)
        .await
        .unwrap();
    assert_eq!(exists, json!({ "exists": false }));
    t.upstream.stop().await;
}

fn ids_of(points: &[pb::ScoredPoint]) -> Vec<u64> {
    points.iter().map(|p| num_id(p.id.clone())).collect()
}

fn dense(values: &[f32]) -> pb::VectorInput {
    pb::VectorInput {
        variant: Some(pb::vector_input::Variant::Dense(pb::DenseVector {
            data: values.to_vec(),
        })),
    }
}

fn nearest(input: pb::VectorInput) -> Option<pb::Query> {
    Some(pb::Query {
        variant: Some(pb::query::Variant::Nearest(input)),
    })
}

/// The same as `rest_rest_of_subset`, over gRPC with qdrant-client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_rest_of_subset() {
    let t = start_upstream().await;
    let client = Qdrant::from_url(&t.upstream.grpc_url()).build().unwrap();
    let c = || "c".to_string();
    #[allow(deprecated)]
    let create = pb::CreateCollection {
        collection_name: c(),
        vectors_config: Some(pb::VectorsConfig {
            config: Some(pb::vectors_config::Config::Params(pb::VectorParams {
                size: 2,
                distance: pb::Distance::Dot as i32,
                ..Default::default()
            })),
        }),
        hnsw_config: Some(pb::HnswConfigDiff {
            m: Some(32),
            ..Default::default()
        }),
        quantization_config: Some(pb::QuantizationConfig {
            quantization: Some(pb::quantization_config::Quantization::Scalar(
                pb::ScalarQuantization {
                    r#type: pb::QuantizationType::Int8 as i32,
                    quantile: Some(0.99),
                    ..Default::default()
                },
            )),
        }),
        ..Default::default()
    };
    assert!(client.create_collection(create).await.unwrap().result);
    let info = client.collection_info("c").await.unwrap().result.unwrap();
    let config = info.config.unwrap();
    assert_eq!(config.hnsw_config.unwrap().m, Some(32));
    assert!(matches!(
        config.quantization_config.unwrap().quantization,
        Some(pb::quantization_config::Quantization::Scalar(_))
    ));
    let list = client.list_collections().await.unwrap();
    assert_eq!(
        list.collections
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        vec!["c"]
    );

    let point = |id: u64, v: [f32; 2], k: &str| {
        pb::PointStruct::new(
            id,
            v.to_vec(),
            qdrant_client::Payload::try_from(json!({ "k": k })).unwrap(),
        )
    };
    let upsert = |points: Vec<pb::PointStruct>, mode: Option<pb::UpdateMode>| pb::UpsertPoints {
        collection_name: c(),
        wait: Some(true),
        points,
        update_mode: mode.map(|m| m as i32),
        ..Default::default()
    };
    let base = vec![
        point(1, [1.0, 0.0], "a"),
        point(2, [0.0, 1.0], "b"),
        point(3, [0.6, 0.4], "c"),
        point(4, [0.2, 0.1], "d"),
    ];
    client.upsert_points(upsert(base, None)).await.unwrap();
    let insert_only = vec![point(1, [9.0, 9.0], "changed"), point(5, [0.0, 0.5], "e")];
    client
        .upsert_points(upsert(insert_only, Some(pb::UpdateMode::InsertOnly)))
        .await
        .unwrap();
    let got = client
        .get_points(pb::GetPoints {
            collection_name: c(),
            ids: vec![1.into(), 5.into()],
            with_payload: Some(true.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .result;
    assert_eq!(
        Value::from(got[0].payload["k"].clone()),
        "a",
        "insert_only left point 1 alone"
    );
    assert_eq!(Value::from(got[1].payload["k"].clone()), "e");

    let update = pb::UpdatePointVectors {
        collection_name: c(),
        wait: Some(true),
        points: vec![pb::PointVectors {
            id: Some(4.into()),
            vectors: Some(vec![0.0f32, 2.0].into()),
        }],
        ..Default::default()
    };
    client.update_vectors(update).await.unwrap();

    let query = pb::QueryPoints {
        collection_name: c(),
        query: nearest(dense(&[0.0, 1.0])),
        limit: Some(2),
        offset: Some(1),
        with_payload: Some(pb::WithPayloadSelector {
            selector_options: Some(pb::with_payload_selector::SelectorOptions::Include(
                pb::PayloadIncludeSelector {
                    fields: vec!["k".into()],
                },
            )),
        }),
        ..Default::default()
    };
    let got = client.query(query).await.unwrap().result;
    assert_eq!(
        ids_of(&got),
        vec![2, 5],
        "dot scores: 4 (2.0), 2 (1.0), 5 (0.5); offset 1 skips the first"
    );
    assert_eq!(Value::from(got[0].payload["k"].clone()), "b");
    let query = pb::QueryPoints {
        collection_name: c(),
        query: nearest(dense(&[0.0, 1.0])),
        score_threshold: Some(0.75),
        ..Default::default()
    };
    assert_eq!(client.query(query).await.unwrap().result.len(), 2);
    let by_id = pb::VectorInput {
        variant: Some(pb::vector_input::Variant::Id(3.into())),
    };
    let query = pb::QueryPoints {
        collection_name: c(),
        query: nearest(by_id),
        limit: Some(1),
        ..Default::default()
    };
    assert_eq!(ids_of(&client.query(query).await.unwrap().result), vec![4]);

    let prefetch = |v: [f32; 2]| pb::PrefetchQuery {
        query: nearest(dense(&v)),
        limit: Some(2),
        ..Default::default()
    };
    let fused = pb::QueryPoints {
        collection_name: c(),
        prefetch: vec![prefetch([1.0, 0.0]), prefetch([0.0, 1.0])],
        query: Some(pb::Query {
            variant: Some(pb::query::Variant::Fusion(pb::Fusion::Rrf as i32)),
        }),
        limit: Some(4),
        ..Default::default()
    };
    let got = client.query(fused).await.unwrap().result;
    assert_eq!(got.len(), 4);
    for p in &got {
        let id = num_id(p.id.clone());
        let want = if id == 1 || id == 4 { 0.5 } else { 1.0 / 3.0 };
        assert!(
            (p.score - want).abs() < 1e-6,
            "RRF score of {id}: {}, want {want}",
            p.score
        );
    }

    let recommend = pb::RecommendPoints {
        collection_name: c(),
        positive: vec![1.into()],
        negative: vec![2.into()],
        limit: 1,
        ..Default::default()
    };
    assert_eq!(
        ids_of(&client.recommend(recommend).await.unwrap().result),
        vec![3]
    );

    let search = |v: [f32; 2]| pb::SearchPoints {
        collection_name: c(),
        vector: v.to_vec(),
        limit: 1,
        ..Default::default()
    };
    let batch = pb::SearchBatchPoints {
        collection_name: c(),
        search_points: vec![search([1.0, 0.0]), search([0.0, 1.0])],
        ..Default::default()
    };
    let got = client.search_batch_points(batch).await.unwrap().result;
    assert_eq!(
        (ids_of(&got[0].result), ids_of(&got[1].result)),
        (vec![1], vec![4])
    );

    use pb::points_update_operation::{self as op, Operation};
    let operations = vec![
        pb::PointsUpdateOperation {
            operation: Some(Operation::SetPayload(op::SetPayload {
                payload: qdrant_client::Payload::try_from(json!({ "x": 1 }))
                    .unwrap()
                    .into(),
                points_selector: Some(id_selector(&[2])),
                ..Default::default()
            })),
        },
        pb::PointsUpdateOperation {
            operation: Some(Operation::DeletePoints(op::DeletePoints {
                points: Some(id_selector(&[5])),
                ..Default::default()
            })),
        },
        pb::PointsUpdateOperation {
            operation: Some(Operation::Upsert(op::PointStructList {
                points: vec![point(6, [0.5, 0.5], "f")],
                ..Default::default()
            })),
        },
    ];
    let results = client
        .update_points_batch(pb::UpdateBatchPoints {
            collection_name: c(),
            wait: Some(true),
            operations,
            ..Default::default()
        })
        .await
        .unwrap()
        .result;
    assert_eq!(results.len(), 3);
    assert!(
        results
            .iter()
            .all(|r| r.status == pb::UpdateStatus::Completed as i32)
    );
    let count = client
        .count(pb::CountPoints {
            collection_name: c(),
            exact: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(count.result.unwrap().count, 5);

    let index = pb::CreateFieldIndexCollection {
        collection_name: c(),
        wait: Some(true),
        field_name: "k".into(),
        field_type: Some(pb::FieldType::Keyword as i32),
        ..Default::default()
    };
    client.create_field_index(index).await.unwrap();
    let info = client.collection_info("c").await.unwrap().result.unwrap();
    assert_eq!(
        info.payload_schema["k"].data_type,
        pb::PayloadSchemaType::Keyword as i32
    );
    let drop_index = pb::DeleteFieldIndexCollection {
        collection_name: c(),
        wait: Some(true),
        field_name: "k".into(),
        ..Default::default()
    };
    client.delete_field_index(drop_index).await.unwrap();
    let info = client.collection_info("c").await.unwrap().result.unwrap();
    assert!(!info.payload_schema.contains_key("k"));

    let delete_vectors = pb::DeletePointVectors {
        collection_name: c(),
        wait: Some(true),
        points_selector: Some(id_selector(&[6])),
        vectors: Some(pb::VectorsSelector {
            names: vec![String::new()],
        }),
        ..Default::default()
    };
    client.delete_vectors(delete_vectors).await.unwrap();
    let got = client
        .get_points(pb::GetPoints {
            collection_name: c(),
            ids: vec![6.into()],
            with_vectors: Some(true.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .result;
    let has_vector = got[0]
        .vectors
        .as_ref()
        .is_some_and(|v| match &v.vectors_options {
            Some(pb::vectors_output::VectorsOptions::Vectors(named)) => !named.vectors.is_empty(),
            Some(pb::vectors_output::VectorsOptions::Vector(_)) => true,
            None => false,
        });
    assert!(!has_vector, "the vector of point 6 is gone: {got:?}");

    assert!(client.collection_exists("c").await.unwrap());
    assert!(client.delete_collection("c").await.unwrap().result);
    assert!(!client.collection_exists("c").await.unwrap());
    t.upstream.stop().await;
}
