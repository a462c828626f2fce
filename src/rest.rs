//! The REST listener: every path forwarded, bodies streamed. A path under
//! `/collections/{name}` is looked up in the routing table; a routed one has
//! the name rewritten per side in the path, and in error messages back.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use tracing::Instrument;

use crate::proxy::{Proxy, Resolved, ShapeError, request_span};
use crate::reads::ReadError;
use crate::replay_log::Record;
use crate::routing::Operation;
use crate::upstream::{Protocol, ProxyBody, UpstreamError, full, read_whole, stream};
use crate::write::{self, DualError};

/// A path segment keeps RFC 3986's unreserved characters as they are.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A body read whole (to send it twice, or to bucket by it); Qdrant's own limit is 32 MiB.
const MAX_WHOLE_BODY: usize = 64 * 1024 * 1024;

/// Error bodies are read to rewrite the collection name; larger ones pass as they are.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// What cutover knows of a REST request from its method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub label: &'static str,
    pub operation: Operation,
    /// The collection named in the path, decoded.
    pub collection: Option<String>,
}

pub fn classify(method: &Method, path: &str) -> Classified {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let collection = match segments.as_slice() {
        ["collections", "aliases"] => None,
        ["collections", name, ..] if !name.is_empty() => {
            Some(percent_decode_str(name).decode_utf8_lossy().into_owned())
        }
        _ => None,
    };
    let rest: Vec<&str> = segments.iter().skip(2).copied().collect();
    use Operation::{CollectionAdmin as Admin, Query, Read, Write};
    let (label, operation) = match (method, rest.as_slice()) {
        _ if collection.is_none() => ("other", Read),
        (&Method::GET, []) => ("collection_get", Read),
        (_, []) => ("collection_change", Admin),
        (&Method::PUT, ["points"]) => ("upsert", Write),
        (&Method::POST, ["points"]) => ("get", Read),
        (&Method::POST, ["points", "delete"]) => ("delete", Write),
        (&Method::POST | &Method::PUT, ["points", "payload"]) => ("payload", Write),
        (&Method::POST, ["points", "payload", "delete" | "clear"]) => ("payload", Write),
        (&Method::PUT, ["points", "vectors"]) => ("update_vectors", Write),
        (&Method::POST, ["points", "vectors", "delete"]) => ("delete_vectors", Write),
        (&Method::POST, ["points", "batch"]) => ("batch", Write),
        (_, ["index", ..]) => ("index", Write),
        (_, ["points", "search"]) => ("search", Query),
        (_, ["points", "search", "batch"]) => ("search_batch", Query),
        (_, ["points", "search", "groups"]) => ("search_groups", Query),
        (_, ["points", "search", "matrix", ..]) => ("search_matrix", Read),
        (_, ["points", "query"]) => ("query", Query),
        (_, ["points", "query", "batch"]) => ("query_batch", Query),
        (_, ["points", "query", "groups"]) => ("query_groups", Query),
        (_, ["points", "recommend"]) => ("recommend", Query),
        (_, ["points", "recommend", "batch"]) => ("recommend_batch", Query),
        (_, ["points", "recommend", "groups"]) => ("recommend_groups", Query),
        (_, ["points", "discover"]) => ("discover", Query),
        (_, ["points", "discover", "batch"]) => ("discover_batch", Query),
        (_, ["points", "scroll"]) => ("scroll", Read),
        (_, ["points", "count"]) => ("count", Read),
        (_, ["points", "facet"]) => ("facet", Read),
        _ => ("other", Read),
    };
    Classified {
        label,
        operation,
        collection,
    }
}

/// Proxies one REST request.
pub async fn handle(proxy: Arc<Proxy>, request: Request<Incoming>) -> Response<ProxyBody> {
    let classified = classify(request.method(), request.uri().path());
    let span = request_span("rest", classified.label);
    forward(proxy, classified, request).instrument(span).await
}

/// A request body: as it streams in, or read whole when cutover must see it
/// (a split query's key, a copy for the other side).
enum RequestBody {
    Streaming(Incoming),
    Whole(Bytes),
}

impl RequestBody {
    async fn whole(self) -> Result<Bytes, String> {
        match self {
            RequestBody::Streaming(body) => read_whole(body, MAX_WHOLE_BODY).await,
            RequestBody::Whole(bytes) => Ok(bytes),
        }
    }
}

async fn forward(
    proxy: Arc<Proxy>,
    classified: Classified,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let table = proxy.router.load();
    let (mut parts, body) = request.into_parts();
    let label = classified.label;
    if classified.operation == Operation::Query
        && let Some(route) = classified.collection.as_deref().and_then(|c| table.get(c))
    {
        let body = match read_whole(body, MAX_WHOLE_BODY).await {
            Ok(body) => body,
            Err(err) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("cutover could not read the request: {err}"),
                );
            }
        };
        // Boxed, as are the other routed paths below: the passthrough's
        // future, moved into a task per request, stays small.
        let read = crate::reads::serve(&proxy, route, Protocol::Rest, label, parts, body);
        return match Box::pin(read).await {
            Ok((response, served)) => {
                served.record_in_span();
                finish(label, &served, table.version, response).await
            }
            Err(err) => read_failed(label, &route.collection, err),
        };
    }
    let body = RequestBody::Streaming(body);
    let mut resolved = proxy.resolve(
        &table,
        classified.collection.as_deref(),
        classified.operation,
    );
    resolved.record_in_span();
    // A routed write carrying vectors is shaped for each side's collection.
    let (body, other_body, pending) =
        if resolved.side.is_some() && crate::transform::carries_vectors(classified.label) {
            let whole = match body.whole().await {
                Ok(whole) => whole,
                Err(err) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        &format!("cutover could not read the request: {err}"),
                    );
                }
            };
            let label = classified.label;
            match Box::pin(proxy.shape_write(&table, &mut resolved, Protocol::Rest, label, &whole))
                .await
            {
                Ok(Some(shaped)) => {
                    // The body is rewritten: its length is the new body's.
                    parts.headers.remove(hyper::header::CONTENT_LENGTH);
                    let (other, pending) = shaped.secondary.unzip();
                    (RequestBody::Whole(shaped.primary), other, pending.flatten())
                }
                Ok(None) => (RequestBody::Whole(whole.clone()), Some(whole), None),
                Err(err) => {
                    let status = match err {
                        ShapeError::Refused(_) => StatusCode::BAD_REQUEST,
                        ShapeError::Embedding(_) => StatusCode::BAD_GATEWAY,
                    };
                    tracing::warn!(%err, "write refused");
                    crate::metrics::request(
                        "rest",
                        classified.label,
                        resolved.route_label(),
                        resolved.side,
                        "refused",
                    );
                    return error_response(status, &err.to_string());
                }
            }
        } else {
            (body, None, None)
        };

    let route = resolved.route_label().to_owned();
    let failed = |outcome: &'static str, status: StatusCode, message: String| {
        tracing::warn!(%message, "request failed");
        crate::metrics::request("rest", label, &route, resolved.side, outcome);
        error_response(status, &message)
    };
    let unavailable = |err: UpstreamError| {
        let status = match err {
            UpstreamError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Unreachable { .. } | UpstreamError::BrokenAnswer { .. } => {
                StatusCode::BAD_GATEWAY
            }
        };
        failed("upstream_unavailable", status, err.to_string())
    };
    let original_uri = parts.uri.clone();
    if let Some(physical) = &resolved.names.physical {
        parts.uri = renamed_uri(&original_uri, physical);
    }
    // A dual write's secondary copy.
    let response = match resolved.secondary.as_ref() {
        None => {
            let body = match body {
                RequestBody::Streaming(body) => stream(body),
                RequestBody::Whole(bytes) => full(bytes),
            };
            match resolved
                .upstream
                .send(Protocol::Rest, Request::from_parts(parts, body))
                .await
            {
                Ok((response, latency)) => {
                    crate::metrics::upstream_latency(Protocol::Rest, resolved.side, latency);
                    response
                }
                Err(err) => return unavailable(err),
            }
        }
        Some(other) => {
            let body = match body.whole().await {
                Ok(body) => body,
                Err(err) => {
                    return failed(
                        "bad_request",
                        StatusCode::BAD_REQUEST,
                        format!("cutover could not read the request: {err}"),
                    );
                }
            };
            let other_body = other_body.unwrap_or_else(|| body.clone());
            let uri = renamed_uri(&original_uri, &other.collection);
            let uri = match other.wait {
                Some(wait) => with_wait(&uri, wait),
                None => uri,
            };
            let mut record = Record::new(
                Protocol::Rest,
                &other.upstream.name,
                &parts,
                &uri,
                other_body,
            );
            record.embed = pending;
            let first = (
                resolved.side.expect("routed"),
                &*resolved.upstream,
                Request::from_parts(parts, full(body)),
            );
            let dual = write::dual(Protocol::Rest, &route, first, other, record, &proxy.replay);
            match Box::pin(dual).await {
                Ok(response) => response,
                Err(DualError::Primary(err)) => return unavailable(err),
                Err(err) => {
                    return failed("secondary_failed", StatusCode::BAD_GATEWAY, err.to_string());
                }
            }
        }
    };
    finish(label, &resolved, table.version, response).await
}

/// A routed read cutover could not serve.
fn read_failed(label: &'static str, route: &str, err: ReadError) -> Response<ProxyBody> {
    let (status, outcome) = match &err {
        ReadError::Upstream(UpstreamError::Timeout { .. }) => {
            (StatusCode::GATEWAY_TIMEOUT, "upstream_unavailable")
        }
        ReadError::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
        ReadError::Refused(_) => (StatusCode::BAD_REQUEST, "refused"),
        ReadError::Embedding { .. } => (StatusCode::BAD_GATEWAY, "embedding_failed"),
    };
    tracing::warn!(%err, "read failed");
    crate::metrics::request("rest", label, route, None, outcome);
    error_response(status, &err.to_string())
}

/// Counts a response, marks it with the side that served it, and rewrites
/// collection names in an error back to the client's.
async fn finish(
    label: &'static str,
    resolved: &Resolved,
    version: u64,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let outcome = if response.status().is_success() {
        "ok"
    } else {
        "error"
    };
    crate::metrics::request(
        "rest",
        label,
        resolved.route_label(),
        resolved.side,
        outcome,
    );
    let (mut parts, body) = response.into_parts();
    resolved.mark(&mut parts.headers, version);
    if resolved.names.physical.is_some() && !parts.status.is_success() {
        return rewrite_error_body(parts, body, resolved).await;
    }
    Response::from_parts(parts, body)
}

/// `/collections/{logical}/rest?query` becomes `/collections/{physical}/rest?query`.
pub fn renamed_uri(uri: &Uri, physical: &str) -> Uri {
    let path = uri.path();
    let after_name = path
        .trim_start_matches('/')
        .splitn(3, '/')
        .nth(2)
        .map(|rest| format!("/{rest}"))
        .unwrap_or_default();
    let encoded = utf8_percent_encode(physical, SEGMENT);
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    format!("/collections/{encoded}{after_name}{query}")
        .parse()
        .expect("a path built from a valid one")
}

/// The same URI with the `wait` query parameter set.
pub fn with_wait(uri: &Uri, wait: bool) -> Uri {
    let mut query: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some("wait"))
        .collect();
    let wait = format!("wait={wait}");
    query.push(&wait);
    format!("{}?{}", uri.path(), query.join("&"))
        .parse()
        .expect("a URI built from a valid one")
}

async fn rewrite_error_body(
    mut parts: hyper::http::response::Parts,
    body: ProxyBody,
    resolved: &Resolved,
) -> Response<ProxyBody> {
    let bytes = match read_whole(body, MAX_ERROR_BODY).await {
        Ok(bytes) => bytes,
        Err(err) => {
            return error_response(
                StatusCode::BAD_GATEWAY,
                &format!("cutover could not read the upstream's error: {err}"),
            );
        }
    };
    let body = match std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| resolved.names.rewrite_message(text))
    {
        Some(rewritten) => Bytes::from(rewritten),
        None => bytes,
    };
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    Response::from_parts(parts, full(body))
}

/// An error answered by cutover itself, in Qdrant's envelope.
pub fn error_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "status": { "error": message }, "time": 0.0 });
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(
            serde_json::to_vec(&body).expect("JSON values serialize"),
        ))
        .expect("static response parts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_method_and_path() {
        let c = classify(&Method::PUT, "/collections/docs/points");
        assert_eq!(
            (c.label, c.operation, c.collection.as_deref()),
            ("upsert", Operation::Write, Some("docs"))
        );
        let c = classify(&Method::POST, "/collections/my%20docs/points/query/batch");
        assert_eq!(
            (c.label, c.operation, c.collection.as_deref()),
            ("query_batch", Operation::Query, Some("my docs"))
        );
        assert_eq!(
            classify(&Method::DELETE, "/collections/docs").operation,
            Operation::CollectionAdmin
        );
        assert_eq!(
            classify(&Method::POST, "/collections/aliases").collection,
            None
        );
        assert_eq!(classify(&Method::GET, "/collections").collection, None);
    }

    #[test]
    fn sets_wait_in_the_query() {
        let uri: Uri = "/collections/docs/points?wait=true&ordering=weak"
            .parse()
            .unwrap();
        assert_eq!(
            with_wait(&uri, false).to_string(),
            "/collections/docs/points?ordering=weak&wait=false"
        );
        let uri: Uri = "/collections/docs/points".parse().unwrap();
        assert_eq!(
            with_wait(&uri, true).to_string(),
            "/collections/docs/points?wait=true"
        );
    }

    #[test]
    fn renames_only_the_collection_segment() {
        let uri: Uri = "/collections/docs/points/search?wait=true".parse().unwrap();
        assert_eq!(
            renamed_uri(&uri, "docs_v2").to_string(),
            "/collections/docs_v2/points/search?wait=true"
        );
        let uri: Uri = "/collections/docs".parse().unwrap();
        assert_eq!(
            renamed_uri(&uri, "new docs").to_string(),
            "/collections/new%20docs"
        );
    }
}
