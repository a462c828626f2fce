//! The replay log: secondary writes that could not be applied when they were
//! made, kept on disk in order per route until the replayer applies them.
//!
//! Storage is fjall (an LSM store with a checksummed, rotated journal; chosen
//! over redb by measurement, see docs/replay.md). Each record is keyed by
//! route and a per-route sequence number, so a prefix scan reads a route's
//! log in the order it was written. Records carry their own CRC32 too: a
//! damaged one is reported, never applied.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::embedder::EmbedSpec;
use crate::upstream::{Protocol, ProxyBody, full};

/// When appended records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Before the client gets its answer (the default: nothing acknowledged is lost).
    #[default]
    Always,
    /// Every `fsync_interval_ms`: a crash loses at most that much of the log.
    Interval,
    /// When the operating system writes back: a power loss may lose records.
    Os,
}

/// One secondary write, as it is to be sent: its collection already renamed
/// for the side and `wait` set as the route says.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub protocol: Protocol,
    /// The upstream it goes to.
    pub upstream: String,
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it was appended, in milliseconds since the Unix epoch.
    pub enqueued_ms: u64,
    /// Green's embeddings still to be computed before it is sent.
    pub embed: Option<EmbedSpec>,
}

/// Headers not worth keeping: they describe one connection or one body.
const DROPPED_HEADERS: &[&str] = &["content-length", "connection", "host", "te"];

const RECORD_VERSION: u8 = 1;

impl Record {
    pub fn new(
        protocol: Protocol,
        upstream: &str,
        parts: &hyper::http::request::Parts,
        uri: &hyper::Uri,
        body: Bytes,
    ) -> Record {
        let mut headers = parts.headers.clone();
        for name in DROPPED_HEADERS {
            headers.remove(*name);
        }
        Record {
            protocol,
            upstream: upstream.to_owned(),
            method: parts.method.clone(),
            uri: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            headers,
            body,
            enqueued_ms: 0,
            embed: None,
        }
    }

    /// The record as it is to be sent: with its embeddings, if it still
    /// needs them.
    pub async fn ready(&self) -> Result<std::borrow::Cow<'_, Record>, String> {
        let Some(spec) = &self.embed else {
            return Ok(std::borrow::Cow::Borrowed(self));
        };
        Ok(std::borrow::Cow::Owned(Record {
            body: crate::transform::embed(spec, self.protocol, &self.body).await?,
            embed: None,
            ..self.clone()
        }))
    }

    /// The request to send, as it was made.
    pub fn to_request(&self) -> Request<ProxyBody> {
        let mut request = Request::new(full(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.parse().expect("a URI that parsed before");
        *request.headers_mut() = self.headers.clone();
        request
    }

    /// `crc32 | version | protocol | enqueued_ms | upstream | method | uri |
    /// embed (JSON, empty for none) | headers | body`.
    fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64 + self.uri.len() + self.body.len());
        out.put_u32(0); // the checksum, filled in below
        out.put_u8(RECORD_VERSION);
        out.put_u8(match self.protocol {
            Protocol::Rest => 0,
            Protocol::Grpc => 1,
        });
        out.put_u64(self.enqueued_ms);
        put_bytes(&mut out, self.upstream.as_bytes());
        put_bytes(&mut out, self.method.as_str().as_bytes());
        put_bytes(&mut out, self.uri.as_bytes());
        let embed = self
            .embed
            .as_ref()
            .map(|spec| serde_json::to_vec(spec).expect("a spec serializes"));
        put_bytes(&mut out, embed.as_deref().unwrap_or_default());
        out.put_u32(self.headers.len() as u32);
        for (name, value) in &self.headers {
            put_bytes(&mut out, name.as_str().as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        out.put_slice(&self.body);
        let crc = crc32fast::hash(&out[4..]);
        out[..4].copy_from_slice(&crc.to_be_bytes());
        out.freeze()
    }

    fn decode(mut bytes: Bytes) -> Result<Record, String> {
        if bytes.len() < 4 {
            return Err("record shorter than its checksum".into());
        }
        let crc = bytes.get_u32();
        if crc32fast::hash(&bytes) != crc {
            return Err("record checksum mismatch".into());
        }
        let truncated = || "record truncated".to_string();
        if bytes.remaining() < 10 {
            return Err(truncated());
        }
        let version = bytes.get_u8();
        if version != RECORD_VERSION {
            return Err(format!("record version {version} is unknown"));
        }
        let protocol = match bytes.get_u8() {
            0 => Protocol::Rest,
            1 => Protocol::Grpc,
            other => return Err(format!("record protocol {other} is unknown")),
        };
        let enqueued_ms = bytes.get_u64();
        let text = |b: Bytes| String::from_utf8(b.to_vec()).map_err(|e| e.to_string());
        let upstream = text(get_bytes(&mut bytes).ok_or_else(truncated)?)?;
        let method = Method::from_bytes(&get_bytes(&mut bytes).ok_or_else(truncated)?)
            .map_err(|e| e.to_string())?;
        let uri = text(get_bytes(&mut bytes).ok_or_else(truncated)?)?;
        let embed = get_bytes(&mut bytes).ok_or_else(truncated)?;
        let embed = match embed.is_empty() {
            true => None,
            false => Some(serde_json::from_slice(&embed).map_err(|e| e.to_string())?),
        };
        if bytes.remaining() < 4 {
            return Err(truncated());
        }
        let count = bytes.get_u32();
        let mut headers = HeaderMap::new();
        for _ in 0..count {
            let name = get_bytes(&mut bytes).ok_or_else(truncated)?;
            let value = get_bytes(&mut bytes).ok_or_else(truncated)?;
            headers.append(
                HeaderName::from_bytes(&name).map_err(|e| e.to_string())?,
                HeaderValue::from_maybe_shared(value).map_err(|e| e.to_string())?,
            );
        }
        Ok(Record {
            protocol,
            upstream,
            method,
            uri,
            headers,
            body: bytes,
            enqueued_ms,
            embed,
        })
    }
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn get_bytes(bytes: &mut Bytes) -> Option<Bytes> {
    if bytes.remaining() < 4 {
        return None;
    }
    let len = bytes.get_u32() as usize;
    (bytes.remaining() >= len).then(|| bytes.split_to(len))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("replay log: {0}")]
pub struct LogError(String);

impl LogError {
    /// The log's writer is gone: cutover is stopping.
    pub fn stopped() -> LogError {
        LogError("its writer has stopped".to_owned())
    }
}

impl From<fjall::Error> for LogError {
    fn from(err: fjall::Error) -> Self {
        LogError(err.to_string())
    }
}

/// A route's oldest record: where it is, its size, and the record (or why
/// it cannot be read).
pub struct Head {
    pub seq: u64,
    pub size: u64,
    pub record: Result<Record, String>,
}

/// The log of every route, in one store.
pub struct ReplayLog {
    db: Database,
    records: Keyspace,
    fsync: Fsync,
    queues: Mutex<HashMap<String, Arc<RouteQueue>>>,
}

/// One route's log: its counters, and what the replayer waits on.
pub struct RouteQueue {
    pub route: String,
    prefix: Vec<u8>,
    /// The next sequence number; held while a record is inserted, so keys
    /// are in append order.
    next: Mutex<u64>,
    records: AtomicU64,
    bytes: AtomicU64,
    paused: AtomicBool,
    /// Wakes the replayer: a record was appended, or an operator asked.
    pub wake: tokio::sync::Notify,
    /// Tells drain waiters that the log emptied.
    pub emptied: tokio::sync::Notify,
    pub last_error: Mutex<Option<String>>,
    pub oldest_ms: AtomicU64,
}

impl RouteQueue {
    /// While this is true, the route's secondary writes go behind the log,
    /// never around it.
    pub fn holding(&self) -> bool {
        self.records.load(Ordering::Acquire) > 0 || self.paused.load(Ordering::Acquire)
    }

    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Acquire)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        self.wake.notify_one();
    }

    /// Seconds the oldest record has waited (0 when empty).
    pub fn oldest_age(&self) -> Duration {
        match self.oldest_ms.load(Ordering::Acquire) {
            0 => Duration::ZERO,
            oldest => Duration::from_millis(now_ms().saturating_sub(oldest)),
        }
    }

    fn key(&self, seq: u64) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(&seq.to_be_bytes());
        key
    }

    fn record_metrics(&self) {
        crate::metrics::replay_backlog(
            &self.route,
            self.records(),
            self.bytes(),
            self.oldest_age(),
        );
    }
}

/// A route's keys start with its name, length first, so no route's prefix
/// is another's.
fn prefix_of(route: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(route.len() + 2);
    prefix.extend_from_slice(&(route.len() as u16).to_be_bytes());
    prefix.extend_from_slice(route.as_bytes());
    prefix
}

fn route_of(key: &[u8]) -> Option<(String, u64)> {
    let len = u16::from_be_bytes(key.get(..2)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(key.get(2..2 + len)?).ok()?.to_owned();
    let seq = u64::from_be_bytes(key.get(2 + len..)?.try_into().ok()?);
    Some((name, seq))
}

impl ReplayLog {
    /// Opens (or creates) the log in `dir` and counts what it holds per route.
    pub fn open(dir: &Path, fsync: Fsync) -> Result<ReplayLog, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| LogError(format!("{}: {e}", dir.display())))?;
        restrict_to_owner(dir);
        let db = Database::builder(dir)
            .worker_threads(1)
            .manual_journal_persist(fsync != Fsync::Os)
            .open()?;
        let records = db.keyspace("records", KeyspaceCreateOptions::default)?;
        let log = ReplayLog {
            db,
            records,
            fsync,
            queues: Mutex::new(HashMap::new()),
        };
        for item in log.records.iter() {
            let (key, value) = item.into_inner()?;
            let Some((route, seq)) = route_of(&key) else {
                return Err(LogError(format!("a key of unknown shape: {key:?}")));
            };
            let queue = log.queue(&route);
            *queue.next.lock() = seq + 1;
            if queue.records.fetch_add(1, Ordering::AcqRel) == 0 {
                let oldest = Record::decode(value.clone().into()).map_or(1, |r| r.enqueued_ms);
                queue.oldest_ms.store(oldest, Ordering::Release);
            }
            queue.bytes.fetch_add(value.len() as u64, Ordering::AcqRel);
        }
        for queue in log.queues.lock().values() {
            queue.record_metrics();
            if queue.records() > 0 {
                tracing::info!(route = %queue.route, records = queue.records(), bytes = queue.bytes(), "replay log: resuming");
            }
        }
        Ok(log)
    }

    /// The queue of a route, made on first use.
    pub fn queue(&self, route: &str) -> Arc<RouteQueue> {
        self.queues
            .lock()
            .entry(route.to_owned())
            .or_insert_with(|| {
                Arc::new(RouteQueue {
                    route: route.to_owned(),
                    prefix: prefix_of(route),
                    next: Mutex::new(0),
                    records: AtomicU64::new(0),
                    bytes: AtomicU64::new(0),
                    paused: AtomicBool::new(false),
                    wake: tokio::sync::Notify::new(),
                    emptied: tokio::sync::Notify::new(),
                    last_error: Mutex::new(None),
                    oldest_ms: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// The queue of a route, if it has one.
    pub fn find(&self, route: &str) -> Option<Arc<RouteQueue>> {
        self.queues.lock().get(route).cloned()
    }

    /// Every route that has a queue, by name.
    pub fn queues(&self) -> Vec<Arc<RouteQueue>> {
        let mut queues: Vec<_> = self.queues.lock().values().cloned().collect();
        queues.sort_by(|a, b| a.route.cmp(&b.route));
        queues
    }

    /// Appends records, each behind its route's others, in the order given;
    /// with `fsync = "always"` they are on disk, with one sync for them all,
    /// when this returns. One result per record. Blocking: call off the
    /// async workers.
    pub fn append_batch(&self, batch: Vec<(Arc<RouteQueue>, Record)>) -> Vec<Result<(), LogError>> {
        let mut results: Vec<_> = batch
            .into_iter()
            .map(|(queue, record)| self.insert(&queue, record).map(|()| queue))
            .collect();
        if self.fsync == Fsync::Always
            && results.iter().any(Result::is_ok)
            && let Err(err) = self.db.persist(PersistMode::SyncData)
        {
            let failed = LogError::from(err);
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(failed.clone());
            }
        }
        results
            .into_iter()
            .map(|result| {
                result.map(|queue| {
                    queue.record_metrics();
                    queue.wake.notify_one();
                })
            })
            .collect()
    }

    /// Puts a record behind its route's others and counts it.
    fn insert(&self, queue: &RouteQueue, mut record: Record) -> Result<(), LogError> {
        record.enqueued_ms = now_ms();
        let value = record.encode();
        let size = value.len() as u64;
        let mut next = queue.next.lock();
        self.records.insert(queue.key(*next), value)?;
        *next += 1;
        if queue.records.fetch_add(1, Ordering::AcqRel) == 0 {
            queue.oldest_ms.store(record.enqueued_ms, Ordering::Release);
        }
        queue.bytes.fetch_add(size, Ordering::AcqRel);
        Ok(())
    }

    /// The route's oldest record.
    pub fn head(&self, queue: &RouteQueue) -> Result<Option<Head>, LogError> {
        let Some(item) = self.records.prefix(&queue.prefix).next() else {
            return Ok(None);
        };
        let (key, value) = item.into_inner()?;
        Ok(Some(Head {
            seq: route_of(&key).map_or(0, |(_, seq)| seq),
            size: value.len() as u64,
            record: Record::decode(value.into()),
        }))
    }

    /// Removes an applied record, durably: a crash must not apply it twice
    /// after later ones (a delete by filter re-run later could remove a
    /// point written since).
    pub fn remove(&self, queue: &RouteQueue, seq: u64, size: u64) -> Result<(), LogError> {
        self.records.remove(queue.key(seq))?;
        if self.fsync != Fsync::Os {
            self.db.persist(PersistMode::SyncData)?;
        }
        queue.bytes.fetch_sub(size, Ordering::AcqRel);
        if queue.records.fetch_sub(1, Ordering::AcqRel) == 1 {
            queue.oldest_ms.store(0, Ordering::Release);
            queue.emptied.notify_waiters();
        } else if let Ok(Some(Head {
            record: Ok(next), ..
        })) = self.head(queue)
        {
            queue.oldest_ms.store(next.enqueued_ms, Ordering::Release);
        }
        queue.record_metrics();
        Ok(())
    }

    /// Writes buffered records to disk (the `interval` policy's tick).
    pub fn persist(&self) -> Result<(), LogError> {
        Ok(self.db.persist(PersistMode::SyncData)?)
    }

    /// Bytes the store holds on disk (journal and tables).
    pub fn disk_space(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

/// The log holds request headers (a client's API key, under `client_api_key
/// = "pass"`): only its owner may read it.
fn restrict_to_owner(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(err) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(dir = %dir.display(), %err, "replay log: cannot restrict the directory to its owner");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: &'static [u8]) -> Record {
        let request = Request::builder()
            .method(Method::PUT)
            .uri("/collections/docs_v2/points?wait=true")
            .header("content-type", "application/json")
            .header("content-length", "2")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        Record::new(
            Protocol::Rest,
            "green",
            &parts,
            &parts.uri,
            Bytes::from_static(body),
        )
    }

    #[test]
    fn a_record_survives_encoding_and_a_flipped_bit_is_caught() {
        let mut record = record(b"{\"points\": []}");
        assert!(!record.headers.contains_key("content-length"));
        record.embed = Some(EmbedSpec {
            url: "http://tei:8080/embed".into(),
            api: crate::embedder::EmbedApi::Tei,
            model: None,
            text_field: "text".into(),
            vector: Some("dense".into()),
            batch_size: 8,
            timeout_ms: 1000,
            retries: 1,
        });
        let encoded = record.encode();
        assert_eq!(Record::decode(encoded.clone()).unwrap(), record);
        for at in [0, 5, encoded.len() / 2, encoded.len() - 1] {
            let mut damaged = encoded.to_vec();
            damaged[at] ^= 0x10;
            assert!(Record::decode(Bytes::from(damaged)).is_err(), "bit at {at}");
        }
    }

    #[test]
    fn records_come_back_in_order_per_route_and_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = ReplayLog::open(dir.path(), Fsync::Always).unwrap();
            let (docs, other) = (log.queue("docs"), log.queue("docs2"));
            // One batch, two routes: each route's records in the batch's order.
            let batch = [
                (&docs, &b"1"[..]),
                (&other, b"x"),
                (&docs, b"2"),
                (&docs, b"3"),
            ]
            .map(|(queue, body)| (queue.clone(), record(body)));
            let appended = log.append_batch(batch.into());
            assert!(appended.iter().all(Result::is_ok), "{appended:?}");
            let head = log.head(&docs).unwrap().unwrap();
            assert_eq!(head.record.unwrap().body, "1");
            log.remove(&docs, head.seq, head.size).unwrap();
            assert_eq!(docs.records(), 2);
            assert!(docs.holding());
        }
        let log = ReplayLog::open(dir.path(), Fsync::Always).unwrap();
        let docs = log.queue("docs");
        assert_eq!(docs.records(), 2);
        let mut bodies = Vec::new();
        while let Some(head) = log.head(&docs).unwrap() {
            bodies.push(head.record.unwrap().body);
            log.remove(&docs, head.seq, head.size).unwrap();
        }
        assert_eq!(bodies, ["2", "3"]);
        assert!(!docs.holding());
        assert_eq!(docs.bytes(), 0);
        assert_eq!(log.queue("docs2").records(), 1);
        // New records go after the old ones, not over them.
        log.append_batch(vec![(docs.clone(), record(b"4"))])
            .pop()
            .unwrap()
            .unwrap();
        assert_eq!(log.head(&docs).unwrap().unwrap().record.unwrap().body, "4");
    }
}
