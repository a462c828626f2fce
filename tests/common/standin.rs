//! A STAND-IN embedding server, for tests only (embedding models are outside
//! cutover's scope): it answers OpenAI's `POST /v1/embeddings` and TEI's
//! `POST /embed` shapes with deterministic vectors seeded by the text, not
//! a model's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::Rng;

/// Its vectors' size unless the model says otherwise.
pub const DEFAULT_DIM: usize = 768;

/// The stand-in's vector for a text: deterministic, seeded by the text.
pub fn standin_vector(text: &str, dim: usize) -> Vec<f32> {
    let seed = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Rng::new(seed).vector(dim)
}

/// How long a model named `slow-...` takes to answer.
pub const SLOW: std::time::Duration = std::time::Duration::from_millis(1600);

/// A model named `...-dN` answers N dimensions; any other, `DEFAULT_DIM`.
fn model_dim(model: &Value) -> usize {
    model
        .as_str()
        .and_then(|m| m.rsplit_once("-d"))
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(DEFAULT_DIM)
}

/// A stand-in embedding service: `POST /v1/embeddings` (OpenAI) and
/// `POST /embed` (TEI). While `down`, it answers 503; a `slow-` model
/// answers after `SLOW`; a model told to [`StandIn::fail`] answers 500.
pub struct StandIn {
    pub addr: SocketAddr,
    pub down: Arc<AtomicBool>,
    /// Requests answered, by model.
    calls: Arc<Mutex<BTreeMap<String, u64>>>,
    failing: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    pub async fn start() -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let flag = down.clone();
        let calls = Arc::new(Mutex::new(BTreeMap::new()));
        let counts = calls.clone();
        let failing = Arc::new(Mutex::new(BTreeSet::new()));
        let broken = failing.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let down = flag.clone();
                let counts = counts.clone();
                let broken = broken.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let down = down.load(Ordering::SeqCst);
                            let counts = counts.clone();
                            let broken = broken.clone();
                            async move {
                                let path = request.uri().path().to_owned();
                                let body: Value = serde_json::from_slice(
                                    &request.into_body().collect().await?.to_bytes(),
                                )
                                .unwrap_or(Value::Null);
                                let model = body["model"].as_str().unwrap_or_default().to_owned();
                                if model.starts_with("slow-") {
                                    tokio::time::sleep(SLOW).await;
                                }
                                let fails = broken.lock().unwrap().contains(&model);
                                *counts.lock().unwrap().entry(model).or_default() += 1;
                                let texts = |v: &Value| -> Vec<String> {
                                    v.as_array()
                                        .unwrap()
                                        .iter()
                                        .map(|t| t.as_str().unwrap().to_owned())
                                        .collect()
                                };
                                let (status, answer) = match (down, path.as_str()) {
                                    (true, _) => (503, json!({ "error": "stand-in is down" })),
                                    _ if fails => (500, json!({ "error": "this model fails" })),
                                    (false, "/v1/embeddings") => (
                                        200,
                                        json!({
                                            "object": "list",
                                            "data": texts(&body["input"]).iter().enumerate().rev()
                                                .map(|(i, t)| json!({ "object": "embedding", "index": i, "embedding": standin_vector(t, model_dim(&body["model"])) }))
                                                .collect::<Vec<_>>(),
                                        }),
                                    ),
                                    (false, "/embed") => (
                                        200,
                                        json!(
                                            texts(&body["inputs"])
                                                .iter()
                                                .map(|t| standin_vector(t, DEFAULT_DIM))
                                                .collect::<Vec<_>>()
                                        ),
                                    ),
                                    _ => (404, json!({ "error": "no such path" })),
                                };
                                Ok::<_, hyper::Error>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(answer.to_string())))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        StandIn {
            addr,
            down,
            calls,
            failing,
            task,
        }
    }

    /// From now on, requests for `model` are answered 500.
    pub fn fail(&self, model: &str) {
        self.failing.lock().unwrap().insert(model.to_owned());
    }

    /// How many requests for `model` it has answered.
    pub fn calls(&self, model: &str) -> u64 {
        self.calls.lock().unwrap().get(model).copied().unwrap_or(0)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}
