//! Requests and answers read whole, for the paths that must see an answer
//! before the client does: dual writes, and reads with a fallback, a shadow
//! or a fusion.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::HeaderMap;
use hyper::{Request, Response};

use crate::upstream::{Protocol, ProxyBody, Upstream, UpstreamError, full, read_with_trailers};

/// Bounds what an answer may hold in memory.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// A response read whole: status, headers, body and trailers.
pub struct Answer {
    response: Response<()>,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Answer {
    pub fn succeeded(&self, protocol: Protocol) -> bool {
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
    pub fn failure(&self, protocol: Protocol) -> String {
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

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The same answer with another body (a fused one).
    pub fn with_body(mut self, body: Bytes) -> Answer {
        self.response
            .headers_mut()
            .remove(hyper::header::CONTENT_LENGTH);
        self.body = body;
        self
    }

    pub fn into_response(self) -> Response<ProxyBody> {
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

pub async fn answer(
    upstream: &Upstream,
    protocol: Protocol,
    request: Request<ProxyBody>,
) -> Result<(Answer, Duration), UpstreamError> {
    answer_limited(upstream, protocol, request, MAX_ANSWER).await
}

/// An answer read whole, refused (as a broken answer) past `max` bytes.
pub async fn answer_limited(
    upstream: &Upstream,
    protocol: Protocol,
    request: Request<ProxyBody>,
    max: usize,
) -> Result<(Answer, Duration), UpstreamError> {
    let (response, latency) = upstream.send(protocol, request).await?;
    let (parts, body) = response.into_parts();
    let (body, trailers) =
        read_with_trailers(body, max)
            .await
            .map_err(|message| UpstreamError::BrokenAnswer {
                upstream: upstream.name.clone(),
                message,
            })?;
    Ok((
        Answer {
            response: Response::from_parts(parts, ()),
            body,
            trailers,
        },
        latency,
    ))
}
