//! Data in an embedded upstream survives a clean restart, and a `kill -9`
//! loses no write acknowledged with `wait=true`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::{self as pb};

const DIM: usize = 8;

async fn create(client: &Qdrant, name: &str, dim: usize) {
    client
        .create_collection(pb::CreateCollection {
            collection_name: name.into(),
            vectors_config: Some(pb::VectorsConfig {
                config: Some(pb::vectors_config::Config::Params(pb::VectorParams {
                    size: dim as u64,
                    distance: pb::Distance::Dot as i32,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })
        .await
        .expect("collection created");
}

async fn upsert(client: &Qdrant, name: &str, points: &[TestPoint]) {
    let points = points
        .iter()
        .map(|p| {
            pb::PointStruct::new(
                p.id,
                p.vector.clone(),
                qdrant_client::Payload::try_from(p.payload.clone()).unwrap(),
            )
        })
        .collect();
    client
        .upsert_points(pb::UpsertPoints {
            collection_name: name.into(),
            wait: Some(true),
            points,
            ..Default::default()
        })
        .await
        .expect("upsert acknowledged");
}

/// Every point is there, with its payload and vector, and search ranks as brute force does.
async fn assert_holds(client: &Qdrant, name: &str, points: &[TestPoint]) {
    let count = client
        .count(pb::CountPoints {
            collection_name: name.into(),
            exact: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(count.result.unwrap().count, points.len() as u64);
    for chunk in points.chunks(200) {
        let got = client
            .get_points(pb::GetPoints {
                collection_name: name.into(),
                ids: chunk.iter().map(|p| p.id.into()).collect(),
                with_payload: Some(true.into()),
                with_vectors: Some(true.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            got.result.len(),
            chunk.len(),
            "every acknowledged point is back"
        );
        for (point, want) in got.result.iter().zip(chunk) {
            let n = point.payload["n"].clone();
            assert_eq!(serde_json::Value::from(n), want.payload["n"]);
            #[allow(deprecated)]
            let vector = match point.vectors.clone().unwrap().vectors_options.unwrap() {
                pb::vectors_output::VectorsOptions::Vector(v) => match v.vector.unwrap() {
                    pb::vector_output::Vector::Dense(d) => d.data,
                    other => panic!("dense expected, got {other:?}"),
                },
                other => panic!("an unnamed vector expected, got {other:?}"),
            };
            assert_eq!(vector, want.vector);
        }
    }
    let query = Rng::new(5).vector(points[0].vector.len());
    let got = client
        .search_points(pb::SearchPoints {
            collection_name: name.into(),
            vector: query.clone(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<(u64, f32)> = got
        .result
        .iter()
        .map(|p| match p.id.clone().unwrap().point_id_options.unwrap() {
            pb::point_id::PointIdOptions::Num(n) => (n, p.score),
            other => panic!("numeric id expected, got {other:?}"),
        })
        .collect();
    assert_same_ranking(
        &got,
        &brute_force(points, Metric::Dot, &query, 10, |_| true),
        "after restart",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let points = dataset(2000, DIM, 21);

    let upstream = start_in(dir.path()).await;
    let client = Qdrant::from_url(&upstream.grpc_url()).build().unwrap();
    create(&client, "kept", DIM).await;
    for chunk in points.chunks(250) {
        upsert(&client, "kept", chunk).await;
    }
    upstream.stop().await;

    let upstream = start_in(dir.path()).await;
    let client = Qdrant::from_url(&upstream.grpc_url()).build().unwrap();
    assert_holds(&client, "kept", &points).await;
    upstream.stop().await;
}

/// The `cutover embedded` binary as a child process, on ports it chose itself.
struct Process {
    child: Child,
    grpc_url: String,
}

impl Process {
    fn start(data: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args([
                "embedded",
                "--grpc",
                "127.0.0.1:0",
                "--rest",
                "127.0.0.1:0",
                "--data",
            ])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cutover starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("cutover prints its addresses");
        // "embedded Qdrant upstream: gRPC http://127.0.0.1:N REST http://... data ..."
        let grpc_url = line
            .split_whitespace()
            .skip_while(|w| *w != "gRPC")
            .nth(1)
            .unwrap_or_else(|| panic!("an address line, got {line:?}"))
            .to_owned();
        Process { child, grpc_url }
    }

    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL delivered");
        self.child.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let points = dataset(3000, DIM, 33);

    let process = Process::start(dir.path());
    let client = Qdrant::from_url(&process.grpc_url).build().unwrap();
    create(&client, "crashy", DIM).await;
    let acknowledged = &points[..2400];
    for chunk in acknowledged.chunks(300) {
        upsert(&client, "crashy", chunk).await;
    }
    // A write in flight when the process dies: it may or may not land.
    let in_flight = {
        let client = Qdrant::from_url(&process.grpc_url).build().unwrap();
        let chunk = points[2400..].to_vec();
        tokio::spawn(async move {
            let _ = client
                .upsert_points(pb::UpsertPoints {
                    collection_name: "crashy".into(),
                    wait: Some(true),
                    points: chunk
                        .iter()
                        .map(|p| {
                            pb::PointStruct::new(
                                p.id,
                                p.vector.clone(),
                                qdrant_client::Payload::new(),
                            )
                        })
                        .collect(),
                    ..Default::default()
                })
                .await;
        })
    };
    process.kill_9();
    let _ = in_flight.await;

    let process = Process::start(dir.path());
    let client = Qdrant::from_url(&process.grpc_url).build().unwrap();
    let got = client
        .get_points(pb::GetPoints {
            collection_name: "crashy".into(),
            ids: acknowledged.iter().map(|p| p.id.into()).collect(),
            with_payload: Some(true.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        got.result.len(),
        acknowledged.len(),
        "every acknowledged write survived kill -9"
    );
    // Points beyond the acknowledged ones came from the write cut short; drop
    // them so the full check below compares exactly the acknowledged set.
    client
        .delete_points(pb::DeletePoints {
            collection_name: "crashy".into(),
            wait: Some(true),
            points: Some(id_selector(
                &points[2400..].iter().map(|p| p.id).collect::<Vec<_>>(),
            )),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_holds(&client, "crashy", acknowledged).await;
    process.kill_9();
}

/// A bulk load flushes the engine as it goes: 20,000 points of 768
/// dimensions are about 78 MB of operation log (768 CBOR floats of 5 bytes
/// a point), which stays under its 64 MiB bound; and a `kill -9` after it
/// loses nothing, neither what was flushed nor the writes logged since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_is_checkpointed_as_it_goes_and_survives_kill_9() {
    const BIG: usize = 768;
    let dir = tempfile::tempdir().unwrap();
    let points = dataset(20_010, BIG, 41);
    let (bulk, after) = points.split_at(20_000);

    let process = Process::start(dir.path());
    let client = Qdrant::from_url(&process.grpc_url).build().unwrap();
    create(&client, "bulk", BIG).await;
    let log = dir.path().join("collections/bulk/oplog.bin");
    let logged = || std::fs::metadata(&log).unwrap().len();
    let chunks: Vec<_> = bulk.chunks(500).collect();
    upsert(&client, "bulk", chunks[0]).await;
    let whole_load = logged() * chunks.len() as u64;
    assert!(
        whole_load > 64 << 20,
        "the load, {whole_load} bytes of log, must outgrow the bound to test it"
    );
    for chunk in &chunks[1..] {
        upsert(&client, "bulk", chunk).await;
    }
    let bytes = logged();
    assert!(bytes < 64 << 20, "the operation log holds {bytes} bytes");
    // Written after the checkpoint: in the log only when the process dies.
    upsert(&client, "bulk", after).await;
    process.kill_9();

    let process = Process::start(dir.path());
    let client = Qdrant::from_url(&process.grpc_url).build().unwrap();
    assert_holds(&client, "bulk", &points).await;
    process.kill_9();
}
