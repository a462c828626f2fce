//! Dual writes: one write sent to both sides concurrently, so its latency is
//! that of the slower side, not their sum. The client gets the primary's
//! answer. A secondary that fails is, under `on_secondary_failure = "fail"`,
//! an error to the client naming that side; the replay log that will make
//! `replay` the default is not built yet.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::header::HeaderMap;
use hyper::http::request::Parts;
use hyper::{Request, Response};

use crate::proxy::Secondary;
use crate::routing::Side;
use crate::upstream::{Protocol, ProxyBody, Upstream, UpstreamError, full};

/// Answers of writes are small; this bounds what is held in memory.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

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

/// A response read whole: status, headers, body and trailers.
struct Answer {
    response: Response<()>,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Answer {
    fn succeeded(&self, protocol: Protocol) -> bool {
        match protocol {
            Protocol::Rest => self.response.status().is_success(),
            Protocol::Grpc => {
                let status = self
                    .response
                    .headers()
                    .get("grpc-status")
                    .or_else(|| self.trailers.as_ref()?.get("grpc-status"));
                status.is_some_and(|s| s == "0")
            }
        }
    }

    /// What went wrong, as the side said it.
    fn failure(&self, protocol: Protocol) -> String {
        match protocol {
            Protocol::Rest => format!(
                "{} {}",
                self.response.status(),
                String::from_utf8_lossy(&self.body)
            ),
            Protocol::Grpc => {
                let message = |h: &HeaderMap| {
                    h.get("grpc-message")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let text = message(self.response.headers())
                    .or_else(|| self.trailers.as_ref().and_then(message))
                    .unwrap_or_default();
                percent_encoding::percent_decode_str(&text)
                    .decode_utf8_lossy()
                    .into_owned()
            }
        }
    }

    fn into_response(self) -> Response<ProxyBody> {
        let (parts, ()) = self.response.into_parts();
        let body = match self.trailers {
            None => full(self.body),
            Some(trailers) => {
                let frames = [
                    Ok(hyper::body::Frame::data(self.body)),
                    Ok(hyper::body::Frame::trailers(trailers)),
                ];
                http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
            }
        };
        Response::from_parts(parts, body)
    }
}

async fn answer(
    upstream: &Upstream,
    protocol: Protocol,
    request: Request<ProxyBody>,
) -> Result<(Answer, Duration), UpstreamError> {
    let (response, latency) = upstream.send(protocol, request).await?;
    let (parts, body) = response.into_parts();
    let collected = Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map_err(|err| UpstreamError::BrokenAnswer {
            upstream: upstream.name.clone(),
            message: err.to_string(),
        })?;
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    Ok((
        Answer {
            response: Response::from_parts(parts, ()),
            body,
            trailers,
        },
        latency,
    ))
}

/// A second copy of a request: same method, path, version and headers.
pub fn copy_request(parts: &Parts, body: Bytes) -> Request<ProxyBody> {
    let mut request = Request::new(full(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// Sends `primary` and `secondary` concurrently; answers the primary's
/// response, whole, when both sides applied the write (or the primary
/// refused it, which the client must see as it is).
pub async fn dual(
    protocol: Protocol,
    route: &str,
    primary: (Side, &Upstream, Request<ProxyBody>),
    secondary: (&Secondary, Request<ProxyBody>),
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
