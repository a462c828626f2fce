//! cutover's listeners themselves: gRPC messages larger than the HTTP/2
//! flow-control windows pass whole both ways, a call the client gives up
//! on leaves its connection's other calls alone, and stopping lets calls
//! in flight finish on both protocols.

mod common;

use std::time::Duration;

use common::faulty::{Fault, Faulty};
use common::*;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::{self as pb};
use serde_json::json;

/// How long calls in flight get to finish once cutover is told to stop.
const GRACE: Duration = Duration::from_secs(2);

/// cutover with blue's gRPC and REST behind fault-injecting hops.
struct Setup {
    blue: TestUpstream,
    green: TestUpstream,
    grpc_hop: Faulty,
    rest_hop: Faulty,
    proxy: TestProxy,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let blue = start_upstream().await;
    let green = start_upstream().await;
    let grpc_hop = Faulty::start(&blue.upstream.grpc_url(), true).await;
    let rest_hop = Faulty::start(&blue.upstream.rest_url(), false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = proxy_config_urls(
        (rest_hop.url(), grpc_hop.url()),
        (green.upstream.rest_url(), green.upstream.grpc_url()),
        dir.path(),
        "",
    )
    .replace(
        "[listen]\n",
        &format!("[listen]\nshutdown_grace_ms = {}\n", GRACE.as_millis()),
    );
    let proxy = start_proxy(&config, dir.path()).await;
    Setup {
        blue,
        green,
        grpc_hop,
        rest_hop,
        proxy,
        _dir: dir,
    }
}

async fn stop_upstreams(blue: TestUpstream, green: TestUpstream) {
    blue.upstream.stop().await;
    green.upstream.stop().await;
}

async fn create(client: &Qdrant, name: &str) {
    client
        .create_collection(
            pb::CreateCollectionBuilder::new(name)
                .vectors_config(pb::VectorParamsBuilder::new(4, pb::Distance::Dot)),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_messages_larger_than_the_windows_pass_whole_both_ways() {
    let s = setup().await;
    let client = Qdrant::from_url(&s.proxy.grpc_url()).build().unwrap();
    create(&client, "big").await;

    // About 3 MB each way: cutover's receive window for a stream is 1 MiB,
    // the client's 2 MiB, so both sides wait on WINDOW_UPDATEs mid-message.
    let text = |id: u64| format!("{id:05}").repeat(6_000);
    let points: Vec<pb::PointStruct> = (0..100)
        .map(|id| {
            let payload = qdrant_client::Payload::try_from(json!({ "text": text(id) })).unwrap();
            pb::PointStruct::new(id, vec![1.0, 0.0, 0.0, id as f32], payload)
        })
        .collect();
    client
        .upsert_points(pb::UpsertPointsBuilder::new("big", points).wait(true))
        .await
        .unwrap();
    let scrolled = client
        .scroll(
            pb::ScrollPointsBuilder::new("big")
                .limit(100)
                .with_payload(true),
        )
        .await
        .unwrap();
    assert_eq!(scrolled.result.len(), 100);
    for point in scrolled.result {
        let Some(pb::point_id::PointIdOptions::Num(id)) = point.id.unwrap().point_id_options else {
            panic!("numeric ids were written")
        };
        let got = point.payload["text"].as_str().map(String::as_str);
        assert_eq!(got, Some(text(id).as_str()), "point {id}'s payload");
    }
    s.proxy.running.stop().await;
    stop_upstreams(s.blue, s.green).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_client_gave_up_on_leaves_the_connection_serving() {
    let s = setup().await;
    let client = Qdrant::from_url(&s.proxy.grpc_url())
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    create(&client, "kept").await;

    // The client cancels (RST_STREAM) while cutover waits on blue.
    s.grpc_hop.set(Fault::Delay(Duration::from_secs(2)));
    let err = client.collection_info("kept").await.unwrap_err();
    assert!(
        format!("{err:?}").contains("Cancelled") || format!("{err:?}").contains("timed out"),
        "{err:?}"
    );

    // The same client, the same connection: the next calls are answered,
    // and so is a burst of them at once.
    s.grpc_hop.set(Fault::None);
    let info = client.collection_info("kept").await.unwrap();
    assert!(info.result.is_some());
    let calls = (0..32).map(|_| client.collection_exists("kept"));
    for exists in futures_util::future::join_all(calls).await {
        assert!(exists.unwrap());
    }
    s.proxy.running.stop().await;
    stop_upstreams(s.blue, s.green).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_lets_calls_in_flight_finish_on_both_protocols() {
    let s = setup().await;
    let client = Qdrant::from_url(&s.proxy.grpc_url()).build().unwrap();
    create(&client, "slow").await;
    let rest = s.proxy.rest_url();

    s.grpc_hop.set(Fault::Delay(Duration::from_millis(800)));
    s.rest_hop.set(Fault::Delay(Duration::from_millis(800)));
    let grpc_call = tokio::spawn({
        let client = client.clone();
        async move { client.collection_info("slow").await }
    });
    let rest_call = tokio::spawn(reqwest::get(format!("{rest}/collections/slow")));
    // Both calls are at the hops, waiting, when cutover is told to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (grpc_addr, rest_addr) = (s.proxy.running.grpc_addr, s.proxy.running.rest_addr);
    // Clients connected that never said a word, or only HTTP/2's preface
    // (so never answer the server's goodbye), hold stopping up no longer
    // than the grace.
    let mut silent = Vec::new();
    for addr in [grpc_addr, rest_addr] {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        let mut preface_only = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The client preface, then an empty SETTINGS frame; then silence.
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
        tokio::io::AsyncWriteExt::write_all(&mut preface_only, preface)
            .await
            .unwrap();
        silent.push(preface_only);
    }
    let stopping = tokio::spawn(s.proxy.running.stop());

    // Stopping: the listeners are closed at once, while the calls go on.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for addr in [grpc_addr, rest_addr] {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts connections"
        );
    }
    assert!(!grpc_call.is_finished() && !rest_call.is_finished());

    let info = grpc_call
        .await
        .unwrap()
        .expect("the gRPC call in flight is answered");
    assert!(info.result.is_some());
    let response = rest_call
        .await
        .unwrap()
        .expect("the REST call in flight is answered");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("cutover stops with silent clients connected")
        .unwrap();
    stop_upstreams(s.blue, s.green).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_the_shutdown_grace_is_cut_off() {
    let s = setup().await;
    let client = Qdrant::from_url(&s.proxy.grpc_url()).build().unwrap();
    create(&client, "stuck").await;
    let rest = s.proxy.rest_url();

    s.grpc_hop.set(Fault::Delay(GRACE * 5));
    s.rest_hop.set(Fault::Delay(GRACE * 5));
    let grpc_call = tokio::spawn({
        let client = client.clone();
        async move { client.collection_info("stuck").await }
    });
    let rest_call = tokio::spawn(reqwest::get(format!("{rest}/collections/stuck")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    s.proxy.running.stop().await;
    let stopped_in = started.elapsed();
    assert!(
        stopped_in >= GRACE && stopped_in < GRACE * 4,
        "stopping took {stopped_in:?}, the grace being {GRACE:?}"
    );
    // Cut off: each client sees its call fail, none hangs.
    assert!(grpc_call.await.unwrap().is_err());
    assert!(rest_call.await.unwrap().is_err());
    stop_upstreams(s.blue, s.green).await;
}
