//! A route flipped between blue and green 1,000 times through the admin API
//! while clients stream reads and writes through cutover on both protocols:
//! no request fails, and every answer came from the side that the routing
//! version it was decided by names.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use parking_lot::Mutex;
use qdrant_client::qdrant::{self as pb, points_client::PointsClient};
use serde_json::{Value, json};

const FLIPS: u64 = 1000;

/// One answer: the version and side cutover reported, what the data says,
/// and the id written, for writes.
#[derive(Debug)]
struct Seen {
    version: u64,
    side: String,
    data_side: Option<String>,
    written: Option<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_flips_under_load_fail_nothing() {
    let blue = start_upstream().await;
    let green = start_upstream().await;
    let http = reqwest::Client::new();
    for (upstream, name, side) in [(&blue, "docs", "blue"), (&green, "docs_v2", "green")] {
        let base = upstream.upstream.rest_url();
        create_collection(&base, name, 2, "Dot").await;
        let marker = json!({ "id": 1, "vector": [1.0, 0.0], "payload": { "side": side } });
        upsert_points(&base, name, vec![marker]).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        &proxy_config(&blue.upstream, &green.upstream, dir.path(), DOCS_ROUTE),
        dir.path(),
    )
    .await;

    let done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let next_id = Arc::new(AtomicU64::new(1000));
    let mut clients = Vec::new();
    for worker in 0..3 {
        clients.push(tokio::spawn(rest_client(
            proxy.rest_url(),
            worker % 2 == 0,
            done.clone(),
            seen.clone(),
            next_id.clone(),
        )));
        clients.push(tokio::spawn(grpc_client(
            proxy.grpc_url(),
            worker % 2 == 1,
            done.clone(),
            seen.clone(),
            next_id.clone(),
        )));
    }

    // The flipper: green, blue, green, ... recording which side each version names.
    let mut sides = BTreeMap::from([(1u64, "blue".to_string())]);
    let admin = proxy.admin_url();
    for flip in 0..FLIPS {
        let side = if flip % 2 == 0 { "green" } else { "blue" };
        let response = http
            .patch(format!("{admin}/routes/docs"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "primary": side, "writes": format!("{side}_only") }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let body: Value = response.json().await.unwrap();
        sides.insert(body["version"].as_u64().unwrap(), side.to_string());
    }
    done.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} requests failed, first: {:?}",
        failures.len(),
        failures.first()
    );

    let seen = std::mem::take(&mut *seen.lock());
    assert!(
        seen.len() > 200,
        "the clients kept going through the flips: {} requests",
        seen.len()
    );
    let versions: BTreeSet<u64> = seen.iter().map(|s| s.version).collect();
    assert!(
        versions.len() > 20,
        "requests saw many versions: {}",
        versions.len()
    );
    let mut written: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for s in seen.iter() {
        assert_eq!(
            sides[&s.version], s.side,
            "version {} names {}, the answer said {}",
            s.version, sides[&s.version], s.side
        );
        if let Some(data_side) = &s.data_side {
            assert_eq!(
                data_side, &s.side,
                "the data came from the side the answer named"
            );
        }
        if let Some(id) = s.written {
            written
                .entry(if s.side == "blue" { "blue" } else { "green" })
                .or_default()
                .insert(id);
        }
    }
    // Each acknowledged write is on the side that acknowledged it, and only there.
    for (upstream, name, side) in [(&blue, "docs", "blue"), (&green, "docs_v2", "green")] {
        let acked = written.get(side).cloned().unwrap_or_default();
        let response = http
            .post(format!(
                "{}/collections/{name}/points/count",
                upstream.upstream.rest_url()
            ))
            .json(&json!({ "exact": true }))
            .send()
            .await
            .unwrap();
        let count = response.json::<Value>().await.unwrap()["result"]["count"]
            .as_u64()
            .unwrap();
        assert_eq!(
            count,
            acked.len() as u64 + 1,
            "{side}: acknowledged writes plus the marker"
        );
    }
    proxy.running.stop().await;
    blue.upstream.stop().await;
    green.upstream.stop().await;
}

async fn rest_client(
    base: String,
    writes: bool,
    done: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    next_id: Arc<AtomicU64>,
) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut failures = Vec::new();
    while !done.load(Ordering::SeqCst) {
        let (request, written) = if writes {
            let id = next_id.fetch_add(1, Ordering::SeqCst);
            let body = json!({ "points": [{ "id": id, "vector": [0.5, 0.5] }] });
            (
                http.put(format!("{base}/collections/docs/points?wait=true"))
                    .json(&body),
                Some(id),
            )
        } else {
            let body = json!({ "ids": [1], "with_payload": true });
            (
                http.post(format!("{base}/collections/docs/points"))
                    .json(&body),
                None,
            )
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (version, side) = (
            header("x-cutover-routing-version"),
            header("x-cutover-side"),
        );
        if !response.status().is_success() {
            failures.push(format!(
                "{}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ));
            continue;
        }
        let body: Value = response.json().await.unwrap();
        let data_side = (!writes).then(|| {
            body["result"][0]["payload"]["side"]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        });
        seen.lock().push(Seen {
            version: version.unwrap().parse().unwrap(),
            side: side.unwrap(),
            data_side,
            written,
        });
    }
    failures
}

async fn grpc_client(
    url: String,
    writes: bool,
    done: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    next_id: Arc<AtomicU64>,
) -> Vec<String> {
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = PointsClient::new(channel);
    let mut failures = Vec::new();
    while !done.load(Ordering::SeqCst) {
        let result = if writes {
            let id = next_id.fetch_add(1, Ordering::SeqCst);
            let request = one_point_upsert("docs", id, vec![0.5, 0.5]);
            client
                .upsert(request)
                .await
                .map(|r| (r.metadata().clone(), None, Some(id)))
        } else {
            let request = pb::GetPoints {
                collection_name: "docs".into(),
                ids: vec![1.into()],
                with_payload: Some(true.into()),
                ..Default::default()
            };
            client.get(request).await.map(|r| {
                let metadata = r.metadata().clone();
                let point = r.into_inner().result.remove(0);
                let side = Value::from(point.payload["side"].clone())
                    .as_str()
                    .unwrap_or("?")
                    .to_owned();
                (metadata, Some(side), None)
            })
        };
        match result {
            Ok((metadata, data_side, written)) => {
                let get = |name: &str| metadata.get(name).unwrap().to_str().unwrap().to_owned();
                seen.lock().push(Seen {
                    version: get("x-cutover-routing-version").parse().unwrap(),
                    side: get("x-cutover-side"),
                    data_side,
                    written,
                });
            }
            Err(status) => failures.push(status.to_string()),
        }
    }
    failures
}
