//! Dual writes: one write sent to both sides concurrently, so its latency is
//! that of the slower side, not their sum. The client gets the primary's
//! answer. A secondary that fails, or has not answered within the route's
//! `secondary_timeout_ms`, is under `replay` appended to the route's replay
//! log (the client gets the primary's answer once it is on disk), and under
//! `fail` an error to the client naming that side.
//!
//! While a route's log holds records (or is paused), new secondary writes go
//! behind them without being sent, so the secondary applies writes in the
//! order the primary did.

use std::time::Duration;

use hyper::{Request, Response};

use crate::proxy::OtherSide;
use crate::replay_log::Record;
use crate::replayer::Replay;
use crate::routing::Side;
use crate::upstream::{Protocol, ProxyBody, Upstream, UpstreamError};
use crate::whole::{Answer, answer};

/// Why a dual write did not succeed on both sides.
#[derive(Debug, thiserror::Error)]
pub enum DualError {
    #[error(transparent)]
    Primary(#[from] UpstreamError),
    #[error("the write was applied on {primary}, but {secondary} failed: {message}")]
    Secondary {
        primary: &'static str,
        secondary: &'static str,
        message: String,
    },
}

/// Sends `primary` and the secondary's `record`; answers the primary's
/// response, whole, when the secondary applied the write or it is in the
/// replay log (or when the primary refused it, which the client must see).
pub async fn dual(
    protocol: Protocol,
    route: &str,
    primary: (Side, &Upstream, Request<ProxyBody>),
    secondary: &OtherSide,
    record: Record,
    replay: &Replay,
) -> Result<Response<ProxyBody>, DualError> {
    let (primary_side, primary_upstream, primary_request) = primary;
    let count = |side: Side, outcome: &'static str| {
        crate::metrics::dual_write(protocol.as_str(), route, side, outcome);
    };
    let queue = secondary.replay.as_ref();
    if let Some(queue) = queue.filter(|q| q.holding()) {
        // Behind a non-empty log: the primary first, then the log.
        let first = answer_counted(
            primary_upstream,
            protocol,
            primary_request,
            primary_side,
            route,
        )
        .await?;
        if first.succeeded(protocol) {
            count(secondary.side, "queued");
            return log_behind(primary_side, secondary, replay, queue, record, first).await;
        }
        return Ok(first.into_response());
    }
    let send_secondary = async {
        let ready = record.ready().await.map_err(Unsent::Transform)?;
        answer(&secondary.upstream, protocol, ready.to_request())
            .await
            .map_err(Unsent::Upstream)
    };
    let (first, second) = tokio::join!(
        answer_counted(
            primary_upstream,
            protocol,
            primary_request,
            primary_side,
            route
        ),
        tokio::time::timeout(secondary.timeout, send_secondary),
    );
    let failure = match second {
        Ok(Ok((answer, latency))) if answer.succeeded(protocol) => {
            crate::metrics::upstream_latency(protocol, Some(secondary.side), latency);
            count(secondary.side, "ok");
            None
        }
        Ok(Ok((answer, _))) => {
            count(secondary.side, "error");
            Some(answer.failure(protocol))
        }
        Ok(Err(Unsent::Upstream(err))) => {
            count(secondary.side, "unreachable");
            Some(err.to_string())
        }
        Ok(Err(Unsent::Transform(message))) => {
            count(secondary.side, "transform_failed");
            Some(message)
        }
        Err(_) => {
            count(secondary.side, "timeout");
            Some(format!(
                "upstream `{}` did not answer within the route's secondary_timeout_ms ({} ms)",
                secondary.upstream.name,
                secondary.timeout.as_millis()
            ))
        }
    };
    let first = first?;
    let Some(message) = failure.filter(|_| first.succeeded(protocol)) else {
        return Ok(first.into_response());
    };
    tracing::warn!(route, secondary = secondary.side.as_str(), %message, "dual write: the secondary failed");
    match queue {
        Some(queue) => log_behind(primary_side, secondary, replay, queue, record, first).await,
        None => Err(DualError::Secondary {
            primary: primary_side.as_str(),
            secondary: secondary.side.as_str(),
            message,
        }),
    }
}

/// Why the secondary's copy was not answered.
enum Unsent {
    Transform(String),
    Upstream(UpstreamError),
}

/// The primary's answer once the secondary's write is in the log; if it
/// cannot be logged, an error that says the primary applied it.
async fn log_behind(
    primary: Side,
    secondary: &OtherSide,
    replay: &Replay,
    queue: &std::sync::Arc<crate::replay_log::RouteQueue>,
    record: Record,
    first: Answer,
) -> Result<Response<ProxyBody>, DualError> {
    match replay.append(queue, record).await {
        Ok(()) => Ok(first.into_response()),
        Err(err) => Err(DualError::Secondary {
            primary: primary.as_str(),
            secondary: secondary.side.as_str(),
            message: format!("and the write could not be put in the replay log: {err}"),
        }),
    }
}

/// The primary's answer, counted and timed.
async fn answer_counted(
    upstream: &Upstream,
    protocol: Protocol,
    request: Request<ProxyBody>,
    side: Side,
    route: &str,
) -> Result<Answer, UpstreamError> {
    let result = answer(upstream, protocol, request).await;
    let outcome = match &result {
        Ok((answer, latency)) => {
            crate::metrics::upstream_latency(protocol, Some(side), *latency);
            if answer.succeeded(protocol) {
                "ok"
            } else {
                "error"
            }
        }
        Err(_) => "unreachable",
    };
    crate::metrics::dual_write(protocol.as_str(), route, side, outcome);
    result.map(|(answer, _): (Answer, Duration)| answer)
}
