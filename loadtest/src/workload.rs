//! The workload: seed a collection, then closed-loop gRPC searches from N
//! concurrent clients, each latency recorded in an HDR histogram.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::{self as pb};

pub struct Shape {
    pub collection: String,
    pub dim: usize,
    pub points: usize,
    pub top: u64,
}

/// Deterministic vectors (SplitMix64), so every run searches the same data.
pub fn vectors(count: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    (0..count)
        .map(|_| (0..dim).map(|_| next()).collect())
        .collect()
}

pub async fn seed(client: &Qdrant, shape: &Shape) -> anyhow::Result<()> {
    let _ = client.delete_collection(shape.collection.as_str()).await;
    client
        .create_collection(pb::CreateCollection {
            collection_name: shape.collection.clone(),
            vectors_config: Some(pb::VectorsConfig {
                config: Some(pb::vectors_config::Config::Params(pb::VectorParams {
                    size: shape.dim as u64,
                    distance: pb::Distance::Cosine as i32,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })
        .await?;
    let all = vectors(shape.points, shape.dim, 1);
    for (chunk_index, chunk) in all.chunks(256).enumerate() {
        let points = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let id = (chunk_index * 256 + i) as u64;
                pb::PointStruct::new(id, v.clone(), qdrant_client::Payload::new())
            })
            .collect();
        client
            .upsert_points(pb::UpsertPoints {
                collection_name: shape.collection.clone(),
                wait: Some(true),
                points,
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// What one closed-loop stretch measured.
pub struct Measured {
    pub latency_us: Histogram<u64>,
    pub errors: u64,
    pub elapsed: Duration,
}

/// `clients` concurrent searchers for `duration`, each sending its next
/// request as soon as the previous answered.
pub async fn closed_loop(
    client: Arc<Qdrant>,
    shape: Arc<Shape>,
    queries: Arc<Vec<Vec<f32>>>,
    clients: usize,
    duration: Duration,
) -> Measured {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|worker| {
            let (client, shape, queries) = (client.clone(), shape.clone(), queries.clone());
            tokio::spawn(async move {
                let mut histogram =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
                let mut errors = 0;
                let mut i = worker;
                while Instant::now() < deadline {
                    let request = pb::SearchPoints {
                        collection_name: shape.collection.clone(),
                        vector: queries[i % queries.len()].clone(),
                        limit: shape.top,
                        ..Default::default()
                    };
                    i += clients;
                    let sent = Instant::now();
                    match client.search_points(request).await {
                        Ok(_) => histogram.saturating_record(sent.elapsed().as_micros() as u64),
                        Err(_) => errors += 1,
                    }
                }
                (histogram, errors)
            })
        })
        .collect();
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut errors = 0;
    for task in tasks {
        let (histogram, task_errors) = task.await.expect("a search task does not panic");
        latency_us.add(histogram).expect("same bounds");
        errors += task_errors;
    }
    Measured {
        latency_us,
        errors,
        elapsed: started.elapsed(),
    }
}
