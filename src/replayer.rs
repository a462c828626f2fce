//! The replayer: one task per route applies the route's replay log to its
//! side, oldest record first, one at a time, retrying with backoff. A record
//! leaves the log only once its side has applied it; nothing is skipped.
//! Operators pause, resume and drain it through the admin API.
//!
//! Appends go to one writer thread, which puts every append waiting for it
//! in the log with one sync: while the disk is slow, writes behind the log
//! wait together for one sync rather than a thread each for their own.

use std::collections::BTreeMap;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::replay_log::{Head, LogError, Record, ReplayLog, RouteQueue};
use crate::upstream::Upstream;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The most appends one sync covers.
const MAX_BATCH: usize = 1024;

/// The log and the tasks that apply it.
pub struct Replay {
    pub log: Arc<ReplayLog>,
    upstreams: BTreeMap<String, Arc<Upstream>>,
    shutdown: watch::Receiver<bool>,
    tasks: Mutex<BTreeMap<String, JoinHandle<()>>>,
    /// The writer thread's inbox; the thread ends when `Replay` is dropped.
    appends: mpsc::Sender<Append>,
}

/// A record waiting for the writer thread, and who waits for it.
struct Append {
    queue: Arc<RouteQueue>,
    record: Record,
    done: oneshot::Sender<Result<(), LogError>>,
}

/// What went wrong with one record.
enum Failure {
    /// Its side could not apply it now: try again later.
    Retry(&'static str, String),
    /// It cannot be read or sent as it is; an operator must look.
    Stuck(&'static str, String),
}

impl Replay {
    /// Starts a replayer for every route the log holds records for.
    pub fn start(
        log: Arc<ReplayLog>,
        upstreams: BTreeMap<String, Arc<Upstream>>,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Arc<Replay>> {
        let (appends, inbox) = mpsc::channel();
        let writer = log.clone();
        std::thread::Builder::new()
            .name("replay-append".into())
            .spawn(move || write_appends(&writer, &inbox))?;
        let replay = Arc::new(Replay {
            log,
            upstreams,
            shutdown,
            tasks: Mutex::new(BTreeMap::new()),
            appends,
        });
        for queue in replay.log.queues() {
            replay.queue(&queue.route);
        }
        Ok(replay)
    }

    /// The route's queue, its replayer started on first use.
    pub fn queue(self: &Arc<Self>, route: &str) -> Arc<RouteQueue> {
        let queue = self.log.queue(route);
        let mut tasks = self.tasks.lock();
        if !tasks.contains_key(route) {
            let span = tracing::info_span!("replay", route = %route);
            let task = tokio::spawn(self.clone().run(queue.clone()).instrument(span));
            tasks.insert(route.to_owned(), task);
        }
        queue
    }

    /// Appends a secondary write behind the route's log, on disk per the
    /// fsync policy before this returns.
    pub async fn append(&self, queue: &Arc<RouteQueue>, record: Record) -> Result<(), String> {
        let (done, appended) = oneshot::channel();
        let append = Append {
            queue: queue.clone(),
            record,
            done,
        };
        // A writer that is gone drops the append, and its `done` with it.
        let _ = self.appends.send(append);
        let result = appended
            .await
            .unwrap_or_else(|_| Err(LogError::stopped()))
            .map_err(|e| e.to_string());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        crate::metrics::replay_appended(&queue.route, outcome);
        result
    }

    /// Waits for the replayer to stop, after shutdown was signalled.
    pub async fn stop(&self) {
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock())
            .into_values()
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    async fn run(self: Arc<Self>, queue: Arc<RouteQueue>) {
        let mut shutdown = self.shutdown.clone();
        let mut backoff = FIRST_BACKOFF;
        loop {
            if queue.paused() || queue.records() == 0 {
                tokio::select! {
                    _ = queue.wake.notified() => continue,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    // The oldest record's age is a gauge that grows on its own.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        crate::metrics::replay_backlog(&queue.route, queue.records(), queue.bytes(), queue.oldest_age());
                        continue;
                    }
                }
            }
            match self.apply_head(&queue).await {
                Ok(()) => {
                    backoff = FIRST_BACKOFF;
                    *queue.last_error.lock() = None;
                }
                Err(failure) => {
                    let (reason, message, wait) = match failure {
                        Failure::Retry(reason, message) => (reason, message, backoff),
                        Failure::Stuck(reason, message) => (reason, message, MAX_BACKOFF),
                    };
                    crate::metrics::replay_failed(&queue.route, reason);
                    tracing::warn!(reason, %message, retry_in = ?wait, "replay: a record was not applied");
                    *queue.last_error.lock() = Some(message);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    crate::metrics::replay_backlog(
                        &queue.route,
                        queue.records(),
                        queue.bytes(),
                        queue.oldest_age(),
                    );
                    // Jitter keeps many routes from retrying in step.
                    let jitter = Duration::from_millis(rand_below(wait.as_millis() as u64 / 4 + 1));
                    tokio::select! {
                        // A drain asks to try again now.
                        _ = queue.wake.notified() => {}
                        _ = tokio::time::sleep(wait + jitter) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                }
            }
        }
    }

    /// Sends the oldest record; removes it once its side applied it.
    async fn apply_head(&self, queue: &Arc<RouteQueue>) -> Result<(), Failure> {
        let (log, q) = (self.log.clone(), queue.clone());
        let head = tokio::task::spawn_blocking(move || log.head(&q))
            .await
            .map_err(|e| Failure::Stuck("log", e.to_string()))?
            .map_err(|e| Failure::Stuck("log", e.to_string()))?;
        let Some(Head { seq, size, record }) = head else {
            return Ok(());
        };
        let record = record.map_err(|e| Failure::Stuck("corrupt", format!("record {seq}: {e}")))?;
        let upstream = self.upstreams.get(&record.upstream).ok_or_else(|| {
            Failure::Stuck(
                "unknown_upstream",
                format!(
                    "record {seq} goes to upstream `{}`, which this process was not started with",
                    record.upstream
                ),
            )
        })?;
        let record = record
            .ready()
            .await
            .map_err(|e| Failure::Retry("transform", e))?;
        let (answer, latency) =
            crate::whole::answer(upstream, record.protocol, record.to_request())
                .await
                .map_err(|e| Failure::Retry("unreachable", e.to_string()))?;
        if !answer.succeeded(record.protocol) {
            return Err(Failure::Retry("refused", answer.failure(record.protocol)));
        }
        crate::metrics::replay_applied(&queue.route, latency);
        let (log, q) = (self.log.clone(), queue.clone());
        tokio::task::spawn_blocking(move || log.remove(&q, seq, size))
            .await
            .map_err(|e| Failure::Stuck("log", e.to_string()))?
            .map_err(|e| Failure::Stuck("log", e.to_string()))
    }

    /// Applies the route's log now (resuming it if paused, retrying without
    /// waiting out the backoff) and waits until it is empty or `timeout`
    /// passes. Answers whether it emptied.
    pub async fn drain(self: &Arc<Self>, route: &str, timeout: Duration) -> bool {
        let queue = self.queue(route);
        queue.set_paused(false);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let emptied = queue.emptied.notified();
            if queue.records() == 0 {
                return true;
            }
            queue.wake.notify_one();
            tokio::select! {
                _ = emptied => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = tokio::time::sleep_until(deadline) => return queue.records() == 0,
            }
        }
    }
}

/// A cheap uniform-ish number below `n`, from the clock: jitter needs no more.
fn rand_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    nanos % n.max(1)
}

/// The writer thread: each turn, every append waiting (up to `MAX_BATCH`)
/// into the log with one sync, then each waiter told. Ends when the inbox
/// closes.
fn write_appends(log: &ReplayLog, inbox: &mpsc::Receiver<Append>) {
    while let Ok(first) = inbox.recv() {
        let (records, waiters): (Vec<_>, Vec<_>) = std::iter::once(first)
            .chain(inbox.try_iter().take(MAX_BATCH - 1))
            .map(|a| ((a.queue, a.record), a.done))
            .unzip();
        crate::metrics::replay_append_batch(records.len());
        for (done, result) in waiters.into_iter().zip(log.append_batch(records)) {
            // A waiter that went away (its client hung up) needs no answer.
            let _ = done.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use hyper::Request;

    use super::*;
    use crate::replay_log::Fsync;

    fn record(body: &str) -> Record {
        let request = Request::builder()
            .method("PUT")
            .uri("/collections/docs/points")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        Record::new(
            crate::upstream::Protocol::Rest,
            "green",
            &parts,
            &parts.uri,
            bytes::Bytes::copy_from_slice(body.as_bytes()),
        )
    }

    #[test]
    fn appends_waiting_together_are_all_written_in_order_and_answered() {
        let dir = tempfile::tempdir().unwrap();
        let log = ReplayLog::open(dir.path(), Fsync::Always).unwrap();
        let queue = log.queue("docs");
        let (appends, inbox) = mpsc::channel();
        let mut answers = Vec::new();
        for n in 0..50 {
            let (done, answer) = oneshot::channel();
            let append = Append {
                queue: queue.clone(),
                record: record(&n.to_string()),
                done,
            };
            appends.send(append).unwrap();
            answers.push(answer);
        }
        // A client that hung up while its write waited: the rest still land.
        drop(answers.remove(7));
        drop(appends);
        write_appends(&log, &inbox);
        for answer in answers {
            answer.blocking_recv().unwrap().unwrap();
        }
        assert_eq!(queue.records(), 50);
        let mut bodies = Vec::new();
        while let Some(head) = log.head(&queue).unwrap() {
            bodies.push(String::from_utf8(head.record.unwrap().body.to_vec()).unwrap());
            log.remove(&queue, head.seq, head.size).unwrap();
        }
        let expected: Vec<String> = (0..50).map(|n: i32| n.to_string()).collect();
        assert_eq!(bodies, expected);
    }
}
