//! Shared test support: an embedded upstream on ephemeral ports in a temporary
//! directory, a deterministic data set, and brute-force answers to check
//! the engine's against.
#![allow(dead_code)]

pub mod faulty;
pub mod standin;

use std::net::SocketAddr;

use cutover::embedded::EmbeddedUpstream;
use serde_json::{Value, json};

pub struct TestUpstream {
    pub upstream: EmbeddedUpstream,
    pub dir: tempfile::TempDir,
}

pub async fn start_upstream() -> TestUpstream {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = start_in(dir.path()).await;
    TestUpstream { upstream, dir }
}

pub async fn start_in(path: &std::path::Path) -> EmbeddedUpstream {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    EmbeddedUpstream::start(path, any, any)
        .await
        .expect("embedded upstream starts")
}

/// A small deterministic generator (SplitMix64), so runs are reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.next_f32()).collect()
    }
}

#[derive(Clone, Debug)]
pub struct TestPoint {
    pub id: u64,
    pub vector: Vec<f32>,
    pub payload: Value,
}

/// Points with a keyword `group`, an integer `n`, a float `score` and a `tags` list.
pub fn dataset(count: u64, dim: usize, seed: u64) -> Vec<TestPoint> {
    let mut rng = Rng::new(seed);
    (1..=count)
        .map(|id| TestPoint {
            id,
            vector: rng.vector(dim),
            payload: json!({
                "group": format!("g{}", id % 5),
                "n": id,
                "score": (id % 100) as f64 / 10.0,
                "tags": [format!("t{}", id % 3), format!("t{}", id % 7)],
            }),
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Cosine,
    Dot,
    Euclid,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "Cosine",
            Metric::Dot => "Dot",
            Metric::Euclid => "Euclid",
        }
    }

    /// Qdrant's score: higher is better for cosine and dot; for euclid the
    /// score is the distance and smaller is better.
    pub fn score(self, a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        match self {
            Metric::Dot => dot,
            Metric::Cosine => {
                let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
                let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
                dot / (na * nb)
            }
            Metric::Euclid => a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f32>()
                .sqrt(),
        }
    }

    pub fn better(self, a: f32, b: f32) -> bool {
        match self {
            Metric::Euclid => a < b,
            _ => a > b,
        }
    }
}

/// The ids of the `limit` best points for `query` among those `keep` accepts.
pub fn brute_force(
    points: &[TestPoint],
    metric: Metric,
    query: &[f32],
    limit: usize,
    keep: impl Fn(&TestPoint) -> bool,
) -> Vec<(u64, f32)> {
    let mut scored: Vec<(u64, f32)> = points
        .iter()
        .filter(|p| keep(p))
        .map(|p| (p.id, metric.score(&p.vector, query)))
        .collect();
    scored.sort_by(|a, b| {
        if metric.better(a.1, b.1) {
            std::cmp::Ordering::Less
        } else if metric.better(b.1, a.1) {
            std::cmp::Ordering::Greater
        } else {
            a.0.cmp(&b.0)
        }
    });
    scored.truncate(limit);
    scored
}

/// Checks an answer against brute force: the same ids in the same order,
/// scores within float tolerance. Where two scores tie within tolerance,
/// their order may differ.
pub fn assert_same_ranking(got: &[(u64, f32)], want: &[(u64, f32)], what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: result count, got {got:?} want {want:?}"
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g.1 - w.1).abs() <= 1e-4 * w.1.abs().max(1.0),
            "{what}: score at rank {i}: got {g:?} want {w:?}"
        );
        if g.0 != w.0 {
            let tie = want.iter().any(|o| o.0 == g.0 && (o.1 - g.1).abs() <= 1e-5);
            assert!(tie, "{what}: id at rank {i}: got {got:?}\nwant {want:?}");
        }
    }
}

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// cutover in front of two upstreams, reached as remote ones over loopback.
/// `routes` is TOML appended to the config; the default upstream is blue.
pub struct TestProxy {
    pub running: cutover::serve::Running,
    pub config_path: std::path::PathBuf,
}

pub fn proxy_config(
    blue: &EmbeddedUpstream,
    green: &EmbeddedUpstream,
    dir: &std::path::Path,
    routes: &str,
) -> String {
    let urls = |u: &EmbeddedUpstream| (u.rest_url(), u.grpc_url());
    proxy_config_urls(urls(blue), urls(green), dir, routes)
}

/// The same config, with each side's (REST, gRPC) URLs given.
pub fn proxy_config_urls(
    (blue_rest, blue_grpc): (String, String),
    (green_rest, green_grpc): (String, String),
    dir: &std::path::Path,
    routes: &str,
) -> String {
    std::fs::write(dir.join("admin-token"), ADMIN_TOKEN).unwrap();
    format!(
        r#"
state_file = "{state}"
default_upstream = "blue"

[listen]
rest = "127.0.0.1:0"
grpc = "127.0.0.1:0"
admin = "127.0.0.1:0"
admin_token_file = "{token}"

[upstreams.blue]
rest = "{blue_rest}"
grpc = "{blue_grpc}"

[upstreams.green]
rest = "{green_rest}"
grpc = "{green_grpc}"

{routes}
"#,
        state = dir.join("state.json").display(),
        token = dir.join("admin-token").display(),
    )
}

pub async fn start_proxy(config_text: &str, dir: &std::path::Path) -> TestProxy {
    let config_path = dir.join("cutover.toml");
    std::fs::write(&config_path, config_text).unwrap();
    let config = cutover::config::Config::load(&config_path).expect("a valid test config");
    let running = cutover::serve::start(config, Some(config_path.clone()))
        .await
        .expect("cutover starts");
    TestProxy {
        running,
        config_path,
    }
}

impl TestProxy {
    pub fn rest_url(&self) -> String {
        format!("http://{}", self.running.rest_addr)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.running.grpc_addr)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.running.admin_addr)
    }
}

/// The demo route: `docs` is `docs` on blue and `docs_v2` on green.
pub const DOCS_ROUTE: &str = r#"
[[routes]]
collection = "docs"
blue = { upstream = "blue", collection = "docs" }
green = { upstream = "green", collection = "docs_v2" }
"#;

/// Upserts `points` (REST JSON) into `collection` at `rest_url`, waiting for them.
pub async fn upsert_points(rest_url: &str, collection: &str, points: Vec<Value>) {
    let response = reqwest::Client::new()
        .put(format!(
            "{rest_url}/collections/{collection}/points?wait=true"
        ))
        .json(&json!({ "points": points }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "upserting into {collection}: {}",
        response.text().await.unwrap()
    );
}

/// Creates a collection of one unnamed vector straight on an upstream, over REST.
pub async fn create_collection(rest_url: &str, name: &str, size: usize, distance: &str) {
    let response = reqwest::Client::new()
        .put(format!("{rest_url}/collections/{name}"))
        .json(&json!({ "vectors": { "size": size, "distance": distance } }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "creating {name}: {}",
        response.text().await.unwrap()
    );
}

/// A gRPC upsert of one point without payload, waited for.
pub fn one_point_upsert(
    collection: &str,
    id: u64,
    vectors: impl Into<qdrant_client::qdrant::Vectors>,
) -> qdrant_client::qdrant::UpsertPoints {
    qdrant_client::qdrant::UpsertPoints {
        collection_name: collection.into(),
        wait: Some(true),
        points: vec![qdrant_client::qdrant::PointStruct::new(
            id,
            vectors,
            qdrant_client::Payload::new(),
        )],
        ..Default::default()
    }
}

/// A gRPC points selector naming these ids.
pub fn id_selector(ids: &[u64]) -> qdrant_client::qdrant::PointsSelector {
    use qdrant_client::qdrant::{PointsIdsList, points_selector::PointsSelectorOneOf};
    qdrant_client::qdrant::PointsSelector {
        points_selector_one_of: Some(PointsSelectorOneOf::Points(PointsIdsList {
            ids: ids.iter().map(|&id| id.into()).collect(),
        })),
    }
}

/// Scrapes cutover's `/metrics` and checks that each line fragment is there.
pub async fn assert_metrics_contain(admin_url: &str, needles: &[&str]) {
    let metrics = reqwest::get(format!("{admin_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in needles {
        assert!(metrics.contains(needle), "{needle} in\n{metrics}");
    }
}

/// How many TCP connections to `127.0.0.1:port` are open on this machine
/// (`/proc/net/tcp`: the connecting side's sockets, established).
pub fn established_connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("Linux's TCP table");
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl, local address, remote address, state (01: established)
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// Every point of a collection, straight from its upstream, in id order,
/// with payloads and vectors.
pub async fn all_points(http: &reqwest::Client, rest_url: &str, collection: &str) -> Value {
    let body = json!({ "limit": 100000, "with_payload": true, "with_vector": true });
    let response = http
        .post(format!("{rest_url}/collections/{collection}/points/scroll"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    response.json::<Value>().await.unwrap()["result"]["points"].clone()
}

/// Calls the admin API with the test token: (status, JSON body).
pub async fn admin_call(
    admin_url: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (reqwest::StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{admin_url}{path}"))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The binary's `serve` in a process of its own, killed (SIGKILL) when
/// dropped, so that a failed assertion leaves no server running.
pub struct Served {
    child: std::process::Child,
    /// The gRPC and REST addresses and the admin URL it printed.
    pub grpc: String,
    pub rest: String,
    pub admin: String,
}

/// Starts `serve` on `config` with `options`, pinned to `cpu` (through
/// taskset) if given, and reads the address line it prints ("cutover:
/// gRPC ADDR REST ADDR admin URL").
pub fn spawn_serve(config: &std::path::Path, cpu: Option<usize>, options: &[&str]) -> Served {
    use std::io::BufRead;
    let binary = env!("CARGO_BIN_EXE_cutover");
    let mut command = match cpu {
        Some(cpu) => {
            let mut pinned = std::process::Command::new("taskset");
            pinned.args(["-c", &cpu.to_string(), binary]);
            pinned
        }
        None => std::process::Command::new(binary),
    };
    let mut child = command
        .args(["serve", "--config"])
        .arg(config)
        .args(options)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cutover starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let served = Served {
        grpc: words.get(2).copied().unwrap_or_default().to_owned(),
        rest: words.get(4).copied().unwrap_or_default().to_owned(),
        admin: words.get(6).copied().unwrap_or_default().to_owned(),
        child,
    };
    assert_eq!(words.len(), 7, "cutover's address line: {line:?}");
    served
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
