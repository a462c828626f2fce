//! Shadow reads: a copy of a read the primary served is sent to the
//! secondary off the client's path, and the two answers compared.
//!
//! Bounded: at most `max_in_flight` mirrored reads at once (a semaphore
//! taken without waiting: when none is free the shadow is dropped and
//! counted, never queued), requests over `max_body_bytes` are not mirrored,
//! answers over `max_answer_bytes` are not compared. So a slow secondary
//! costs at most `max_in_flight` × (request + both answers) of memory and
//! nothing on the client's path but keeping the primary's answer to
//! compare: the copies are made in the mirror task.
//!
//! Mirrored reads run on a thread of their own at a lower CPU priority
//! (`[shadow] nice`, `background.rs`): where CPU is short the client's path
//! runs first, and shadows wait, fill their bound and are dropped.
//!
//! For `baseline_percent` of mirrored reads the primary is asked a second
//! time: its disagreement with itself is the noise floor (approximate
//! search is not exact) beside which blue-vs-green disagreement is read.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::Request;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::background::Background;
use crate::config::ShadowConfig;
use crate::ranking::{Agreement, agreement};
use crate::read_answer::Ranked;
use crate::read_request::{ReadKind, ReadRequest};
use crate::routing::Side;
use crate::upstream::{Protocol, ProxyBody, Upstream};

/// What a mirrored read is compared as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pair {
    /// The primary's answer against the secondary's.
    Sides,
    /// The primary's answer against its own second answer.
    Baseline,
}

impl Pair {
    fn as_str(self) -> &'static str {
        match self {
            Pair::Sides => "sides",
            Pair::Baseline => "baseline",
        }
    }
}

/// One read to mirror: the primary's answer and the copies to send.
pub struct Mirror {
    pub route: String,
    pub protocol: Protocol,
    pub method: &'static str,
    pub kind: ReadKind,
    pub primary: Side,
    pub primary_answer: Bytes,
    pub primary_latency: Duration,
}

/// How long a request summary in the mismatch sample may be.
const SUMMARY_CHARS: usize = 512;

/// The copies a mirrored read sends, made in its task.
pub struct Copies {
    pub secondary: (Arc<Upstream>, Request<ProxyBody>),
    /// The primary asked again, for the noise baseline.
    pub baseline: Option<(Arc<Upstream>, Request<ProxyBody>)>,
    /// The read as the client asked it: described, shortened, only for a
    /// mismatch kept in the sample.
    pub asked: ReadRequest,
}

/// Why a mirrored read was not compared: a reason (its metric label) and what happened.
pub type Uncompared = (&'static str, String);

/// A mirrored read whose answers differ.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub unix_ms: u64,
    pub route: String,
    pub protocol: &'static str,
    pub method: &'static str,
    pub pair: Pair,
    pub primary: Side,
    pub request: String,
    /// Ranked IDs per request (one list, or one per batch entry).
    pub primary_ids: Ranked,
    pub other_ids: Ranked,
    pub agreement: Agreement,
}

/// Running sums of one route's comparisons of one pair.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    pub compared: u64,
    pub identical: u64,
    pub top1_agree: u64,
    pub count_differs: u64,
    pub mean_overlap: f64,
    pub mean_rbo: f64,
}

impl Tally {
    fn add(&mut self, a: &Agreement) {
        self.compared += 1;
        self.identical += u64::from(a.identical());
        self.top1_agree += u64::from(a.top1);
        self.count_differs += u64::from(a.count_difference != 0);
        let n = self.compared as f64;
        self.mean_overlap += (a.overlap - self.mean_overlap) / n;
        self.mean_rbo += (a.rbo - self.mean_rbo) / n;
    }
}

/// One route's shadow report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub mirrored: u64,
    /// Not mirrored: no room (`full`) or too large (`too_large`).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Mirrored but not compared, by reason.
    pub uncompared: BTreeMap<&'static str, u64>,
    pub sides: Tally,
    pub baseline: Tally,
}

pub struct Shadows {
    config: ShadowConfig,
    /// Where mirrored reads run: off the client's path, at a lower CPU priority.
    background: Background,
    permits: Arc<Semaphore>,
    reports: Mutex<BTreeMap<String, Report>>,
    sample: Mutex<VecDeque<Mismatch>>,
    log: Option<Mutex<MismatchLog>>,
}

struct MismatchLog {
    file: std::fs::File,
    written: u64,
}

impl Shadows {
    /// Starts the mirror thread: called from within the main runtime.
    pub fn new(config: ShadowConfig) -> Result<Shadows, String> {
        let log = match &config.mismatch_log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("shadow.mismatch_log {}: {e}", path.display()))?;
                let written = file.metadata().map(|m| m.len()).unwrap_or(0);
                Some(Mutex::new(MismatchLog { file, written }))
            }
            None => None,
        };
        let background = Background::start("cutover-shadow", config.nice)
            .map_err(|e| format!("cannot start the shadow thread: {e}"))?;
        Ok(Shadows {
            background,
            permits: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            reports: Mutex::default(),
            sample: Mutex::default(),
            log,
        })
    }

    /// Room for one more mirrored read of `body_len` bytes, or `None`
    /// (counted): the shadow is dropped.
    pub fn admit(&self, route: &str, body_len: usize) -> Option<OwnedSemaphorePermit> {
        let dropped = if body_len > self.config.max_body_bytes {
            "too_large"
        } else {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    self.in_flight_changed();
                    return Some(permit);
                }
                Err(_) => "full",
            }
        };
        crate::metrics::shadow_dropped(route, dropped);
        *self
            .reports
            .lock()
            .entry(route.to_owned())
            .or_default()
            .dropped
            .entry(dropped)
            .or_default() += 1;
        None
    }

    fn in_flight_changed(&self) {
        let in_flight = self.config.max_in_flight - self.permits.available_permits();
        crate::metrics::shadow_in_flight(in_flight);
    }

    /// Mirrored reads now in flight.
    pub fn in_flight(&self) -> usize {
        self.config.max_in_flight - self.permits.available_permits()
    }

    pub fn max_in_flight(&self) -> usize {
        self.config.max_in_flight
    }

    /// The largest request (or secondary's copy of one) mirrored.
    pub fn max_body_bytes(&self) -> usize {
        self.config.max_body_bytes
    }

    /// Makes the copies and sends them off the client's path; the permit
    /// is held until they are compared.
    pub fn spawn(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
        mirror: Mirror,
        copies: impl Future<Output = Result<Copies, Uncompared>> + Send + 'static,
    ) {
        let shadows = self.clone();
        let span = tracing::info_span!("shadow", route = %mirror.route, side = mirror.primary.other().as_str());
        self.background.spawn(tracing::Instrument::instrument(
            async move {
                shadows.run(mirror, copies).await;
                drop(permit);
                shadows.in_flight_changed();
            },
            span,
        ));
    }

    async fn run(&self, mirror: Mirror, copies: impl Future<Output = Result<Copies, Uncompared>>) {
        let Mirror {
            route,
            protocol,
            kind,
            primary,
            ..
        } = &mirror;
        self.report(route, |r| r.mirrored += 1);
        crate::metrics::shadow_latency(route, *primary, mirror.primary_latency);
        let Copies {
            secondary,
            baseline,
            asked,
        } = match copies.await {
            Ok(copies) => copies,
            Err((reason, err)) => return self.uncompared(route, reason, &err),
        };
        let primary_ids = match crate::read_answer::ranked(*protocol, *kind, &mirror.primary_answer)
        {
            Ok(ids) => ids,
            Err(err) => return self.uncompared(route, "primary_unreadable", &err),
        };
        let (secondary, baseline) = tokio::join!(
            self.ask(route, *protocol, *kind, primary.other(), secondary),
            async {
                match baseline {
                    Some(copy) => Some(self.ask(route, *protocol, *kind, *primary, copy).await),
                    None => None,
                }
            }
        );
        for (pair, other) in [(Pair::Sides, Some(secondary)), (Pair::Baseline, baseline)] {
            match other {
                Some(Ok(ids)) => self.compare(&mirror, &asked, pair, &primary_ids, ids),
                Some(Err((reason, err))) => self.uncompared(route, reason, &err),
                None => {}
            }
        }
    }

    /// Sends one copy and reads its ranked IDs.
    async fn ask(
        &self,
        route: &str,
        protocol: Protocol,
        kind: ReadKind,
        side: Side,
        (upstream, request): (Arc<Upstream>, Request<ProxyBody>),
    ) -> Result<Ranked, Uncompared> {
        let (answer, latency) = crate::whole::answer_limited(
            &upstream,
            protocol,
            request,
            self.config.max_answer_bytes,
        )
        .await
        .map_err(|e| ("unreachable", e.to_string()))?;
        crate::metrics::shadow_latency(route, side, latency);
        if !answer.succeeded(protocol) {
            return Err(("error", answer.failure(protocol)));
        }
        crate::read_answer::ranked(protocol, kind, answer.body()).map_err(|e| ("unreadable", e))
    }

    fn uncompared(&self, route: &str, reason: &'static str, err: &str) {
        tracing::debug!(route, reason, %err, "shadow read not compared");
        crate::metrics::shadow_uncompared(route, reason);
        self.report(route, |r| *r.uncompared.entry(reason).or_default() += 1);
    }

    fn compare(
        &self,
        mirror: &Mirror,
        asked: &ReadRequest,
        pair: Pair,
        primary_ids: &Ranked,
        other_ids: Ranked,
    ) {
        // A batch is compared entry by entry; the mismatch keeps them all.
        let agreements: Vec<Agreement> = primary_ids
            .iter()
            .zip(other_ids.iter().chain(std::iter::repeat(&Vec::new())))
            .map(|(a, b)| agreement(a, b))
            .collect();
        let mut differs = other_ids.len() != primary_ids.len();
        for a in &agreements {
            crate::metrics::shadow_comparison(&mirror.route, pair.as_str(), a);
            self.report(&mirror.route, |r| match pair {
                Pair::Sides => r.sides.add(a),
                Pair::Baseline => r.baseline.add(a),
            });
            differs |= !a.identical();
        }
        if !differs {
            return;
        }
        let worst = agreements
            .iter()
            .copied()
            .min_by(|a, b| a.rbo.total_cmp(&b.rbo))
            .unwrap_or(agreement::<String>(&[], &["".into()]));
        self.keep(Mismatch {
            unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            route: mirror.route.clone(),
            protocol: mirror.protocol.as_str(),
            method: mirror.method,
            pair,
            primary: mirror.primary,
            request: summary(&asked.describe(), SUMMARY_CHARS),
            primary_ids: primary_ids.clone(),
            other_ids,
            agreement: worst,
        });
    }

    /// Keeps a mismatch in the bounded sample and the JSONL file.
    fn keep(&self, mismatch: Mismatch) {
        if let Some(log) = &self.log {
            let mut log = log.lock();
            if log.written < self.config.mismatch_log_max_bytes {
                let mut line = serde_json::to_vec(&mismatch).expect("a mismatch serializes");
                line.push(b'\n');
                match log.file.write_all(&line) {
                    Ok(()) => log.written += line.len() as u64,
                    Err(err) => tracing::warn!(%err, "cannot append to the shadow mismatch log"),
                }
            }
        }
        let mut sample = self.sample.lock();
        if sample.len() == self.config.sample_size {
            sample.pop_front();
        }
        if self.config.sample_size > 0 {
            sample.push_back(mismatch);
        }
    }

    fn report(&self, route: &str, change: impl FnOnce(&mut Report)) {
        change(self.reports.lock().entry(route.to_owned()).or_default());
    }

    /// A route's report and its recent mismatches, newest last.
    pub fn route_report(&self, route: &str) -> (Report, Vec<Mismatch>) {
        let report = self.reports.lock().get(route).cloned().unwrap_or_default();
        let sample = self
            .sample
            .lock()
            .iter()
            .filter(|m| m.route == route)
            .cloned()
            .collect();
        (report, sample)
    }
}

/// The first `max` characters of a request, for the mismatch sample.
fn summary(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
