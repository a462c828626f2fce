//! Dual writes: one write sent to both sides concurrently, so its latency is
//! that of the slower side, not their sum. The client gets the primary's
//! answer. A secondary that fails is, under `on_secondary_failure = "fail"`,
//! an error to the client naming that side; the replay log that will make
//! `replay` the default is not built yet.

use std::time::Duration;

use hyper::{Request, Response};

use crate::proxy::OtherSide;
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

/// Sends `primary` and `secondary` concurrently; answers the primary's
/// response, whole, when both sides applied the write (or the primary
/// refused it, which the client must see as it is).
pub async fn dual(
    protocol: Protocol,
    route: &str,
    primary: (Side, &Upstream, Request<ProxyBody>),
    secondary: (&OtherSide, Request<ProxyBody>),
) -> Result<Response<ProxyBody>, DualError> {
    let (primary_side, primary_upstream, primary_request) = primary;
    let (secondary, secondary_request) = secondary;
    let (first, second) = tokio::join!(
        answer(primary_upstream, protocol, primary_request),
        answer(&secondary.upstream, protocol, secondary_request),
    );
    let outcome = |result: &Result<(Answer, Duration), UpstreamError>| match result {
        Ok((answer, _)) if answer.succeeded(protocol) => "ok",
        Ok(_) => "error",
        Err(_) => "unreachable",
    };
    for (side, result) in [(primary_side, &first), (secondary.side, &second)] {
        crate::metrics::dual_write(protocol.as_str(), route, side, outcome(result));
        if let Ok((_, latency)) = result {
            crate::metrics::upstream_latency(protocol.as_str(), Some(side), *latency);
        }
    }
    let (first, _) = first?;
    let secondary_failure = match second {
        Ok((answer, _)) if answer.succeeded(protocol) => None,
        Ok((answer, _)) => Some(answer.failure(protocol)),
        Err(err) => Some(err.to_string()),
    };
    match secondary_failure {
        Some(message) if first.succeeded(protocol) => {
            tracing::warn!(route, secondary = secondary.side.as_str(), %message, "dual write: the secondary failed");
            Err(DualError::Secondary {
                primary: primary_side.as_str(),
                secondary: secondary.side.as_str(),
                message,
            })
        }
        _ => Ok(first.into_response()),
    }
}
