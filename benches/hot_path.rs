//! The hot paths, per request: classify the method, look the collection up
//! in the routing table, rewrite the name for the chosen side; and a dual
//! write's vector check (transform `same`), where it runs: when the sides'
//! vector sizes differ.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use cutover::config::Config;
use cutover::routing::{Operation, Router};
use cutover::transform::{Schema, Shaping, Transform};
use prost::Message;
use qdrant_client::qdrant::{PointStruct, SearchPoints, UpsertPoints};

/// A config with 100 routes, `c0` .. `c99`, each to `cN_v2` on green.
fn config(state_dir: &std::path::Path) -> Config {
    let mut text = format!(
        r#"
state_file = "{}"
default_upstream = "blue"
[listen]
rest = "127.0.0.1:0"
grpc = "127.0.0.1:0"
admin = "127.0.0.1:0"
allow_unauthenticated_admin = true
[upstreams.blue]
rest = "http://127.0.0.1:6333"
grpc = "http://127.0.0.1:6334"
[upstreams.green]
rest = "http://127.0.0.1:7333"
grpc = "http://127.0.0.1:7334"
"#,
        state_dir.join("state.json").display()
    );
    for i in 0..100 {
        text.push_str(&format!(
            "[[routes]]\ncollection = \"c{i}\"\nblue = {{ upstream = \"blue\", collection = \"c{i}\" }}\ngreen = {{ upstream = \"green\", collection = \"c{i}_v2\" }}\n"
        ));
    }
    Config::parse(&text, "bench.toml").unwrap()
}

/// A gRPC search for 768 dimensions, framed as on the wire.
fn search_frame(collection: &str) -> Vec<u8> {
    let message = SearchPoints {
        collection_name: collection.into(),
        vector: vec![0.25; 768],
        limit: 10,
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

fn hot_path(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::new(&config(dir.path())).unwrap();
    let routed = search_frame("c42");
    let unrouted = search_frame("not_routed");

    c.bench_function("grpc classify + lookup (unrouted search)", |b| {
        b.iter(|| {
            let method = cutover::grpc::classify(black_box("/qdrant.Points/Search"));
            let table = router.load();
            let name = cutover::grpc::collection_name(black_box(&unrouted)).unwrap();
            black_box((method, table.get(name).is_none()))
        })
    });
    c.bench_function(
        "grpc classify + lookup + rename (routed search, 768 dims)",
        |b| {
            b.iter(|| {
                let method = cutover::grpc::classify(black_box("/qdrant.Points/Search"));
                let table = router.load();
                let name = cutover::grpc::collection_name(black_box(&routed)).unwrap();
                let route = table.get(name).unwrap();
                let target = route.target(route.side_for(method.operation));
                black_box(cutover::grpc::rename(&routed, &target.collection).unwrap())
            })
        },
    );
    let uri: hyper::Uri = "/collections/c42/points/search".parse().unwrap();
    c.bench_function("rest classify + lookup + rename (routed search)", |b| {
        b.iter(|| {
            let classified = cutover::rest::classify(&hyper::Method::POST, black_box(uri.path()));
            let table = router.load();
            let route = table
                .get(classified.collection.as_deref().unwrap())
                .unwrap();
            let target = route.target(route.side_for(Operation::Read));
            black_box(cutover::rest::renamed_uri(
                black_box(&uri),
                &target.collection,
            ))
        })
    });
}

/// An upsert of 8 points of 768 dimensions with a 64-byte payload filler,
/// as the load test sends it: gRPC (framed) and REST.
fn upsert_bodies() -> (Vec<u8>, Vec<u8>) {
    let vector = |i: usize| (0..768).map(move |d| ((i * 768 + d) % 97) as f32 / 97.0 - 0.5);
    let payload =
        |i: usize| serde_json::json!({ "group": format!("g{}", i % 5), "blob": "x".repeat(64) });
    let grpc = UpsertPoints {
        collection_name: "c42".into(),
        wait: Some(true),
        points: (0..8)
            .map(|i| {
                PointStruct::new(
                    i as u64,
                    vector(i).collect::<Vec<f32>>(),
                    qdrant_client::Payload::try_from(payload(i)).unwrap(),
                )
            })
            .collect(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&(grpc.len() as u32).to_be_bytes());
    frame.extend_from_slice(&grpc);
    let points: Vec<_> = (0..8)
        .map(|i| serde_json::json!({ "id": i, "vector": vector(i).collect::<Vec<f32>>(), "payload": payload(i) }))
        .collect();
    let rest = serde_json::to_vec(&serde_json::json!({ "points": points })).unwrap();
    (frame, rest)
}

fn dual_write_check(c: &mut Criterion) {
    let schema = Schema([(String::new(), 768)].into());
    let shaping = Shaping {
        transform: &Transform::Same,
        blue: Some(&schema),
        green: Some(&schema),
    };
    let (grpc, rest) = upsert_bodies();
    c.bench_function("grpc upsert check (8 points, 768 dims, same)", |b| {
        b.iter(|| black_box(shaping.grpc("Upsert", black_box(&grpc)).unwrap().is_none()))
    });
    c.bench_function("rest upsert check (8 points, 768 dims, same)", |b| {
        b.iter(|| black_box(shaping.rest("upsert", black_box(&rest)).unwrap().is_none()))
    });
}

criterion_group!(benches, hot_path, dual_write_check);
criterion_main!(benches);
