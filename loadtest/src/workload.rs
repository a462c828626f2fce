//! The workload: seed a collection, then a mix of search, query, upsert and
//! payload update over gRPC (qdrant-client) or REST (plain HTTP), in a
//! closed loop (N clients) or an open loop (a fixed rate, latency measured
//! from the intended send time, so a stall cannot hide behind coordinated
//! omission). Every latency goes into an HDR histogram per operation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::{self as pb, Condition, Filter};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Search,
    Query,
    Upsert,
    SetPayload,
}

impl Op {
    pub fn writes(self) -> bool {
        matches!(self, Op::Upsert | Op::SetPayload)
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Search => "search",
            Op::Query => "query",
            Op::Upsert => "upsert",
            Op::SetPayload => "set_payload",
        }
    }
}

/// Operations by weight, e.g. `search=70,upsert=20,set_payload=10`.
#[derive(Debug, Clone)]
pub struct Mix(Vec<(Op, u32)>);

impl std::str::FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut mix = Vec::new();
        for part in text.split(',') {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let op = [Op::Search, Op::Query, Op::Upsert, Op::SetPayload]
                .into_iter()
                .find(|op| op.name() == name.trim())
                .ok_or_else(|| {
                    format!("unknown operation `{name}`; use search, query, upsert, set_payload")
                })?;
            let weight = weight
                .trim()
                .parse()
                .map_err(|_| format!("bad weight in `{part}`"))?;
            mix.push((op, weight));
        }
        if mix.iter().map(|(_, w)| w).sum::<u32>() == 0 {
            return Err("the mix needs a positive weight".into());
        }
        Ok(Mix(mix))
    }
}

impl Mix {
    /// The operation for the `n`th request: the weights spread evenly.
    fn pick(&self, n: u64) -> Op {
        let total: u64 = self.0.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut slot = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % total;
        for (op, weight) in &self.0 {
            if slot < u64::from(*weight) {
                return *op;
            }
            slot -= u64::from(*weight);
        }
        unreachable!("slot is below the total")
    }

    pub fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        self.0.iter().filter(|(_, w)| *w > 0).map(|(op, _)| *op)
    }
}

#[derive(Clone)]
pub struct Shape {
    pub collection: String,
    pub dim: usize,
    pub points: usize,
    pub top: u64,
    /// Searches and queries filter on a keyword matching a fifth of the points.
    pub filter: bool,
    /// Points per upsert.
    pub batch: usize,
    /// Bytes of filler in each point's payload.
    pub payload_bytes: usize,
}

impl Shape {
    fn payload(&self, id: u64) -> Value {
        json!({ "group": format!("g{}", id % 5), "blob": "x".repeat(self.payload_bytes) })
    }

    fn group(&self, n: u64) -> Option<String> {
        self.filter.then(|| format!("g{}", n % 5))
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Grpc,
    Rest,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "gRPC",
            Protocol::Rest => "REST",
        }
    }
}

/// A client of one target on one protocol.
pub enum Client {
    Grpc(Qdrant),
    Rest {
        http: reqwest::Client,
        base: String,
    },
    /// The application doing with a second upstream by itself, no proxy,
    /// what cutover does for it.
    Pair {
        first: Box<Client>,
        second: Arc<Client>,
        pairing: Pairing,
        /// Shadow copies in flight at once: past it none is sent (as cutover's default bound).
        room: Arc<tokio::sync::Semaphore>,
    },
}

/// What the application does with a second upstream by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    /// Each write sent to both, concurrently, answered when both have;
    /// reads from the first.
    DualWrites,
    /// Each read answered by the first, then a copy sent to the second
    /// without waiting (off the measured path); writes to the first only.
    ShadowReads,
}

/// Shadow copies a `Pairing::ShadowReads` client has in flight at most.
const SHADOWS_IN_FLIGHT: usize = 64;

impl Client {
    /// `first` with the application pairing `second` to it by itself.
    pub fn pair(first: Client, second: Client, pairing: Pairing) -> Client {
        Client::Pair {
            first: Box::new(first),
            second: Arc::new(second),
            pairing,
            room: Arc::new(tokio::sync::Semaphore::new(SHADOWS_IN_FLIGHT)),
        }
    }

    pub fn new(protocol: Protocol, url: &str) -> anyhow::Result<Client> {
        Ok(match protocol {
            // The embedded upstream reports Qdrant 1.18; the version check would only print.
            Protocol::Grpc => {
                Client::Grpc(Qdrant::from_url(url).skip_compatibility_check().build()?)
            }
            Protocol::Rest => Client::Rest {
                http: reqwest::Client::builder()
                    .pool_max_idle_per_host(256)
                    .build()?,
                base: url.trim_end_matches('/').to_owned(),
            },
        })
    }

    /// One request: the `n`th of its kind decides its vector, ids and filter.
    async fn run(&self, op: Op, n: u64, shape: &Shape, queries: &[Vec<f32>]) -> anyhow::Result<()> {
        let Client::Pair {
            first,
            second,
            pairing,
            room,
        } = self
        else {
            return self.send(op, n, shape, queries).await;
        };
        let answered = first.send(op, n, shape, queries);
        match pairing {
            Pairing::DualWrites if op.writes() => {
                tokio::try_join!(answered, second.send(op, n, shape, queries)).map(|_| ())
            }
            Pairing::ShadowReads if !op.writes() => {
                answered.await?;
                if let Ok(permit) = room.clone().try_acquire_owned() {
                    let (second, shape) = (second.clone(), shape.clone());
                    let query = [queries[n as usize % queries.len()].clone()];
                    tokio::spawn(async move {
                        let _ = second.send(op, n, &shape, &query).await;
                        drop(permit);
                    });
                }
                Ok(())
            }
            _ => answered.await,
        }
    }

    /// One request to one upstream.
    async fn send(
        &self,
        op: Op,
        n: u64,
        shape: &Shape,
        queries: &[Vec<f32>],
    ) -> anyhow::Result<()> {
        let query = &queries[n as usize % queries.len()];
        let filter_json = shape
            .group(n)
            .map(|g| json!({ "must": [{ "key": "group", "match": { "value": g } }] }));
        let filter_pb = shape
            .group(n)
            .map(|g| Filter::must([Condition::matches("group", g)]));
        let ids: Vec<u64> = (0..shape.batch as u64)
            .map(|i| (n * shape.batch as u64 + i) % shape.points as u64)
            .collect();
        let c = &shape.collection;
        match self {
            Client::Grpc(client) => {
                match op {
                    Op::Search => {
                        let request = pb::SearchPoints {
                            collection_name: c.clone(),
                            vector: query.clone(),
                            limit: shape.top,
                            filter: filter_pb,
                            ..Default::default()
                        };
                        client.search_points(request).await?;
                    }
                    Op::Query => {
                        let nearest = pb::VectorInput {
                            variant: Some(pb::vector_input::Variant::Dense(pb::DenseVector {
                                data: query.clone(),
                            })),
                        };
                        let request = pb::QueryPoints {
                            collection_name: c.clone(),
                            query: Some(pb::Query {
                                variant: Some(pb::query::Variant::Nearest(nearest)),
                            }),
                            limit: Some(shape.top),
                            filter: filter_pb,
                            ..Default::default()
                        };
                        client.query(request).await?;
                    }
                    Op::Upsert => {
                        let points = ids
                            .iter()
                            .map(|&id| {
                                let payload = qdrant_client::Payload::try_from(shape.payload(id))
                                    .expect("an object");
                                pb::PointStruct::new(
                                    id,
                                    queries[id as usize % queries.len()].clone(),
                                    payload,
                                )
                            })
                            .collect();
                        let request = pb::UpsertPoints {
                            collection_name: c.clone(),
                            wait: Some(true),
                            points,
                            ..Default::default()
                        };
                        client.upsert_points(request).await?;
                    }
                    Op::SetPayload => {
                        let request = pb::SetPayloadPoints {
                            collection_name: c.clone(),
                            wait: Some(true),
                            payload: qdrant_client::Payload::try_from(json!({ "tag": n }))
                                .expect("an object")
                                .into(),
                            points_selector: Some(pb::PointsSelector {
                                points_selector_one_of: Some(
                                    pb::points_selector::PointsSelectorOneOf::Points(
                                        pb::PointsIdsList {
                                            ids: vec![ids[0].into()],
                                        },
                                    ),
                                ),
                            }),
                            ..Default::default()
                        };
                        client.set_payload(request).await?;
                    }
                }
                Ok(())
            }
            Client::Rest { http, base } => {
                let (method, path, body) = match op {
                    Op::Search => (
                        reqwest::Method::POST,
                        "points/search",
                        json!({ "vector": query, "limit": shape.top, "filter": filter_json }),
                    ),
                    Op::Query => (
                        reqwest::Method::POST,
                        "points/query",
                        json!({ "query": query, "limit": shape.top, "filter": filter_json }),
                    ),
                    Op::Upsert => {
                        let points: Vec<Value> = ids
                            .iter()
                            .map(|&id| json!({ "id": id, "vector": queries[id as usize % queries.len()], "payload": shape.payload(id) }))
                            .collect();
                        (
                            reqwest::Method::PUT,
                            "points?wait=true",
                            json!({ "points": points }),
                        )
                    }
                    Op::SetPayload => (
                        reqwest::Method::POST,
                        "points/payload?wait=true",
                        json!({ "payload": { "tag": n }, "points": [ids[0]] }),
                    ),
                };
                let response = http
                    .request(method, format!("{base}/collections/{c}/{path}"))
                    .json(&body)
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!(
                        "{}: {}",
                        response.status(),
                        response.text().await.unwrap_or_default()
                    );
                }
                response.bytes().await?;
                Ok(())
            }
            Client::Pair { .. } => bail!("a pair sends through its two clients"),
        }
    }
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
        .await
        .context("creating the collection")?;
    let all = vectors(shape.points, shape.dim, 1);
    for (chunk_index, chunk) in all.chunks(256).enumerate() {
        let points = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let id = (chunk_index * 256 + i) as u64;
                let payload =
                    qdrant_client::Payload::try_from(shape.payload(id)).expect("an object");
                pb::PointStruct::new(id, v.clone(), payload)
            })
            .collect();
        client
            .upsert_points(pb::UpsertPoints {
                collection_name: shape.collection.clone(),
                wait: Some(true),
                points,
                ..Default::default()
            })
            .await
            .context("seeding")?;
    }
    Ok(())
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// What one stretch measured, per operation.
#[derive(Default)]
pub struct Measured {
    pub latency_us: BTreeMap<Op, Histogram<u64>>,
    pub errors: BTreeMap<Op, u64>,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Measured {
    fn record(&mut self, op: Op, result: Result<Duration, String>) {
        // Every operation tried has a histogram, empty when none answered,
        // so a target that only failed still has its row in the report.
        let latencies = self.latency_us.entry(op).or_insert_with(histogram);
        match result {
            Ok(latency) => latencies.saturating_record(latency.as_micros() as u64),
            Err(err) => {
                *self.errors.entry(op).or_default() += 1;
                self.first_error.get_or_insert(err);
            }
        }
    }

    fn merge(&mut self, other: Measured) {
        for (op, h) in other.latency_us {
            self.latency_us
                .entry(op)
                .or_insert_with(histogram)
                .add(h)
                .expect("same bounds");
        }
        for (op, e) in other.errors {
            *self.errors.entry(op).or_default() += e;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// How requests are issued.
#[derive(Debug, Clone, Copy)]
pub enum LoadModel {
    /// This many clients, each sending as soon as its last request answered.
    Closed { clients: usize },
    /// This many requests a second, on schedule, whatever the answers do.
    Open { rate: f64 },
}

pub struct Run {
    pub client: Arc<Client>,
    pub shape: Arc<Shape>,
    pub mix: Arc<Mix>,
    pub queries: Arc<Vec<Vec<f32>>>,
    /// A request unanswered this long counts as an error, so a stalled
    /// target cannot hold the run.
    pub timeout: Duration,
    /// At most this many requests per measured stretch.
    pub max_requests: u64,
}

/// One request, bounded by `timeout`.
async fn send(
    client: &Client,
    op: Op,
    n: u64,
    shape: &Shape,
    queries: &[Vec<f32>],
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, client.run(op, n, shape, queries)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

impl Run {
    pub async fn measure(&self, model: LoadModel, duration: Duration) -> Measured {
        let started = Instant::now();
        let mut measured = match model {
            LoadModel::Closed { clients } => self.closed(clients, started + duration).await,
            LoadModel::Open { rate } => self.open(rate, started, duration).await,
        };
        measured.elapsed = started.elapsed();
        measured
    }

    async fn closed(&self, clients: usize, deadline: Instant) -> Measured {
        let issued = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..clients)
            .map(|worker| {
                let (client, shape, mix, queries, issued) = (
                    self.client.clone(),
                    self.shape.clone(),
                    self.mix.clone(),
                    self.queries.clone(),
                    issued.clone(),
                );
                let (timeout, max_requests) = (self.timeout, self.max_requests);
                tokio::spawn(async move {
                    let mut measured = Measured::default();
                    let mut n = worker as u64;
                    while Instant::now() < deadline
                        && issued.fetch_add(1, Ordering::Relaxed) < max_requests
                    {
                        let op = mix.pick(n);
                        let sent = Instant::now();
                        let result = send(&client, op, n, &shape, &queries, timeout).await;
                        measured.record(op, result.map(|_| sent.elapsed()));
                        n += clients as u64;
                    }
                    measured
                })
            })
            .collect();
        let mut total = Measured::default();
        for task in tasks {
            total.merge(task.await.expect("a load task does not panic"));
        }
        total
    }

    async fn open(&self, rate: f64, started: Instant, duration: Duration) -> Measured {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let interval = Duration::from_secs_f64(1.0 / rate);
        let count = ((duration.as_secs_f64() * rate) as u64).min(self.max_requests);
        // Paced by an OS thread: tokio's timer ticks in whole milliseconds,
        // so a send it paced would leave up to 1 ms late, and that lateness
        // would count in the request's latency. A thread sleeps to within
        // tens of microseconds.
        let (due_tx, mut due) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for n in 0..count {
                let intended = started + interval.mul_f64(n as f64);
                std::thread::sleep(intended.saturating_duration_since(Instant::now()));
                if due_tx.send((n, intended)).is_err() {
                    return;
                }
            }
        });
        while let Some((n, intended)) = due.recv().await {
            let (client, shape, mix, queries, tx) = (
                self.client.clone(),
                self.shape.clone(),
                self.mix.clone(),
                self.queries.clone(),
                tx.clone(),
            );
            let timeout = self.timeout;
            tokio::spawn(async move {
                let op = mix.pick(n);
                let result = send(&client, op, n, &shape, &queries, timeout).await;
                // From when it should have been sent, not from when it was.
                let _ = tx.send((op, result.map(|_| intended.elapsed())));
            });
        }
        drop(tx);
        let mut measured = Measured::default();
        while let Some((op, result)) = rx.recv().await {
            measured.record(op, result);
        }
        measured
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A target that accepts connections and never answers: a stalled
    /// upstream, or a stalled cutover's admin API.
    pub(crate) async fn stalled_target() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        (url, held)
    }

    fn run(url: &str, protocol: Protocol, timeout_ms: u64, max_requests: u64) -> Run {
        Run {
            client: Arc::new(Client::new(protocol, url).unwrap()),
            shape: Arc::new(Shape {
                collection: "stalled".into(),
                dim: 4,
                points: 10,
                top: 3,
                filter: false,
                batch: 1,
                payload_bytes: 0,
            }),
            mix: Arc::new("search=1".parse().unwrap()),
            queries: Arc::new(vectors(4, 4, 1)),
            timeout: Duration::from_millis(timeout_ms),
            max_requests,
        }
    }

    fn errors(measured: &Measured) -> u64 {
        measured.errors.values().sum()
    }

    #[tokio::test]
    async fn a_stalled_target_costs_errors_not_the_run() {
        let (url, _held) = stalled_target().await;
        for protocol in [Protocol::Grpc, Protocol::Rest] {
            let run = run(&url, protocol, 200, 1_000_000);
            // Warmed up first, as the load test warms every target, so that
            // setting a client up on its first call (slow on a busy
            // machine) is not charged to the measured stretch.
            let warm_up = send(
                &run.client,
                Op::Search,
                0,
                &run.shape,
                &run.queries,
                run.timeout,
            );
            assert!(warm_up.await.is_err(), "a stalled target answered");
            for model in [
                LoadModel::Closed { clients: 3 },
                LoadModel::Open { rate: 20.0 },
            ] {
                let measured = run.measure(model, Duration::from_secs(1)).await;
                assert!(
                    measured.elapsed < Duration::from_secs(3),
                    "{model:?} over {protocol:?} took {:?}",
                    measured.elapsed
                );
                assert!(errors(&measured) >= 3, "{model:?}: {}", errors(&measured));
                // Tried and never answered: its histogram is there, empty,
                // so the report shows the target's row with its errors.
                let searches = &measured.latency_us[&Op::Search];
                assert!(searches.is_empty(), "{} answered", searches.len());
                let first = measured.first_error.as_deref().unwrap();
                assert!(first.contains("no answer within"), "{first}");
            }
        }
    }

    #[tokio::test]
    async fn a_stretch_sends_at_most_max_requests() {
        let (url, _held) = stalled_target().await;
        let run = run(&url, Protocol::Rest, 50, 5);
        for model in [
            LoadModel::Closed { clients: 2 },
            LoadModel::Open { rate: 100.0 },
        ] {
            let measured = run.measure(model, Duration::from_secs(30)).await;
            assert_eq!(errors(&measured), 5, "{model:?}");
            assert!(measured.elapsed < Duration::from_secs(5), "{model:?}");
        }
    }
}
