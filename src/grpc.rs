//! The gRPC listener: every Qdrant method, known by name or not, forwarded by
//! path. A request that names a collection (field 1 of every Points and
//! Collections request) is read to find its route; a routed one has the name
//! rewritten per side, in the request and in error messages coming back.
//! Nothing else is decoded: other bytes pass as they came.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use tracing::Instrument;

use crate::proxy::{Names, Proxy, Resolved, ShapeError, request_span};
use crate::reads::ReadError;
use crate::replay_log::Record;
use crate::replayer::Replay;
use crate::routing::Operation;
use crate::upstream::{Protocol, ProxyBody, UpstreamError, full, read_whole};
use crate::write::{self, DualError};

/// Largest request read to find its collection, as Qdrant accepts large batches.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// What cutover knows of a gRPC method from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// A bounded label for metrics and logs.
    pub label: &'static str,
    pub operation: Operation,
    /// Whether field 1 of the request is a collection name.
    pub names_collection: bool,
}

const fn m(label: &'static str, operation: Operation, names_collection: bool) -> Method {
    Method {
        label,
        operation,
        names_collection,
    }
}

use Operation::{CollectionAdmin as Admin, Query, Read, Write};

/// Qdrant's public gRPC methods. Any other path is forwarded too, as
/// `other`, its field 1 read in case it names a routed collection.
static METHODS: &[(&str, Method)] = &[
    ("/qdrant.Qdrant/HealthCheck", m("HealthCheck", Read, false)),
    ("/qdrant.Collections/Get", m("CollectionGet", Read, true)),
    ("/qdrant.Collections/List", m("CollectionList", Read, false)),
    (
        "/qdrant.Collections/Create",
        m("CollectionCreate", Admin, true),
    ),
    (
        "/qdrant.Collections/Update",
        m("CollectionUpdate", Admin, true),
    ),
    (
        "/qdrant.Collections/Delete",
        m("CollectionDelete", Admin, true),
    ),
    (
        "/qdrant.Collections/UpdateAliases",
        m("UpdateAliases", Admin, false),
    ),
    (
        "/qdrant.Collections/ListCollectionAliases",
        m("ListCollectionAliases", Read, true),
    ),
    (
        "/qdrant.Collections/ListAliases",
        m("ListAliases", Read, false),
    ),
    (
        "/qdrant.Collections/CollectionClusterInfo",
        m("CollectionClusterInfo", Read, true),
    ),
    (
        "/qdrant.Collections/CollectionExists",
        m("CollectionExists", Read, true),
    ),
    (
        "/qdrant.Collections/UpdateCollectionClusterSetup",
        m("UpdateCollectionClusterSetup", Admin, true),
    ),
    (
        "/qdrant.Collections/CreateShardKey",
        m("CreateShardKey", Admin, true),
    ),
    (
        "/qdrant.Collections/DeleteShardKey",
        m("DeleteShardKey", Admin, true),
    ),
    (
        "/qdrant.Collections/ListShardKeys",
        m("ListShardKeys", Read, true),
    ),
    ("/qdrant.Points/Upsert", m("Upsert", Write, true)),
    ("/qdrant.Points/Delete", m("Delete", Write, true)),
    ("/qdrant.Points/Get", m("Get", Read, true)),
    (
        "/qdrant.Points/UpdateVectors",
        m("UpdateVectors", Write, true),
    ),
    (
        "/qdrant.Points/DeleteVectors",
        m("DeleteVectors", Write, true),
    ),
    ("/qdrant.Points/SetPayload", m("SetPayload", Write, true)),
    (
        "/qdrant.Points/OverwritePayload",
        m("OverwritePayload", Write, true),
    ),
    (
        "/qdrant.Points/DeletePayload",
        m("DeletePayload", Write, true),
    ),
    (
        "/qdrant.Points/ClearPayload",
        m("ClearPayload", Write, true),
    ),
    (
        "/qdrant.Points/CreateFieldIndex",
        m("CreateFieldIndex", Write, true),
    ),
    (
        "/qdrant.Points/DeleteFieldIndex",
        m("DeleteFieldIndex", Write, true),
    ),
    (
        "/qdrant.Points/CreateVectorName",
        m("CreateVectorName", Write, true),
    ),
    (
        "/qdrant.Points/DeleteVectorName",
        m("DeleteVectorName", Write, true),
    ),
    ("/qdrant.Points/Search", m("Search", Query, true)),
    ("/qdrant.Points/SearchBatch", m("SearchBatch", Query, true)),
    (
        "/qdrant.Points/SearchGroups",
        m("SearchGroups", Query, true),
    ),
    ("/qdrant.Points/Scroll", m("Scroll", Read, true)),
    ("/qdrant.Points/Recommend", m("Recommend", Query, true)),
    (
        "/qdrant.Points/RecommendBatch",
        m("RecommendBatch", Query, true),
    ),
    (
        "/qdrant.Points/RecommendGroups",
        m("RecommendGroups", Query, true),
    ),
    ("/qdrant.Points/Discover", m("Discover", Query, true)),
    (
        "/qdrant.Points/DiscoverBatch",
        m("DiscoverBatch", Query, true),
    ),
    ("/qdrant.Points/Count", m("Count", Read, true)),
    ("/qdrant.Points/UpdateBatch", m("UpdateBatch", Write, true)),
    ("/qdrant.Points/Query", m("Query", Query, true)),
    ("/qdrant.Points/QueryBatch", m("QueryBatch", Query, true)),
    ("/qdrant.Points/QueryGroups", m("QueryGroups", Query, true)),
    ("/qdrant.Points/Facet", m("Facet", Read, true)),
    (
        "/qdrant.Points/SearchMatrixPairs",
        m("SearchMatrixPairs", Read, true),
    ),
    (
        "/qdrant.Points/SearchMatrixOffsets",
        m("SearchMatrixOffsets", Read, true),
    ),
    ("/qdrant.Snapshots/Create", m("SnapshotCreate", Read, true)),
    ("/qdrant.Snapshots/List", m("SnapshotList", Read, true)),
    ("/qdrant.Snapshots/Delete", m("SnapshotDelete", Read, true)),
    (
        "/qdrant.Snapshots/CreateFull",
        m("SnapshotCreateFull", Read, false),
    ),
    (
        "/qdrant.Snapshots/ListFull",
        m("SnapshotListFull", Read, false),
    ),
    (
        "/qdrant.Snapshots/DeleteFull",
        m("SnapshotDeleteFull", Read, false),
    ),
];

pub fn classify(path: &str) -> Method {
    METHODS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(m("other", Read, true), |(_, method)| *method)
}

/// Proxies one gRPC call.
pub async fn handle(proxy: Arc<Proxy>, request: Request<ProxyBody>) -> Response<ProxyBody> {
    if request.uri().path() == HEALTH_CHECK {
        return health(&proxy).await;
    }
    let method = classify(request.uri().path());
    forward(proxy, method, request)
        .instrument(request_span("grpc", method.label))
        .await
}

async fn forward(
    proxy: Arc<Proxy>,
    method: Method,
    request: Request<ProxyBody>,
) -> Response<ProxyBody> {
    let table = proxy.router.load();
    let (mut parts, body) = request.into_parts();
    let (body, collection) = if method.names_collection {
        let message = match read_whole(body, MAX_MESSAGE).await {
            Ok(message) => message,
            Err(err) => {
                return status_response(
                    Code::Internal,
                    &format!("cutover could not read the request: {err}"),
                );
            }
        };
        if message.first() == Some(&1) {
            // Its collection cannot be read, so its route cannot be known.
            return status_response(
                Code::Unimplemented,
                "cutover does not accept compressed gRPC requests; send them uncompressed",
            );
        }
        let collection = collection_name(&message).map(str::to_owned);
        (message, collection)
    } else {
        let resolved = proxy.resolve(&table, None, method.operation);
        let request = Request::from_parts(parts, body);
        return send(
            method,
            &resolved,
            table.version,
            request,
            None,
            &proxy.replay,
        )
        .await;
    };
    if method.operation == Operation::Query
        && let Some(route) = collection.as_deref().and_then(|c| table.get(c))
    {
        // Boxed, as are the other routed paths below: the passthrough's
        // future, moved into a task per request, stays small.
        let read = crate::reads::serve(&proxy, route, Protocol::Grpc, method.label, parts, body);
        return match Box::pin(read).await {
            Ok((response, served)) => {
                served.record_in_span();
                finish(method, &served, table.version, response)
            }
            Err(err) => read_failed(method, &route.collection, err),
        };
    }
    let mut resolved = proxy.resolve(&table, collection.as_deref(), method.operation);
    // A write carrying vectors is shaped for each side's collection.
    let shaped = proxy.shape_write(&table, &mut resolved, Protocol::Grpc, method.label, &body);
    let (body, mut other_body, pending) = match Box::pin(shaped).await {
        Ok(Some(shaped)) => {
            let (other, pending) = shaped.secondary.unzip();
            (shaped.primary, other, pending.flatten())
        }
        Ok(None) => (body.clone(), Some(body), None),
        Err(err) => {
            let code = match err {
                ShapeError::Refused(_) => Code::InvalidArgument,
                ShapeError::Embedding(_) => Code::Unavailable,
            };
            resolved.record_in_span();
            tracing::warn!(%err, "write refused");
            crate::metrics::request(
                "grpc",
                method.label,
                resolved.route_label(),
                resolved.side,
                "refused",
            );
            return status_response(code, &err.to_string());
        }
    };
    let cannot_rename = || {
        status_response(
            Code::InvalidArgument,
            "cutover could not rewrite the collection name in this request",
        )
    };
    if resolved.names.physical.is_some() {
        // The body is rewritten: its length is the new body's, not the old header's.
        parts.headers.remove(hyper::header::CONTENT_LENGTH);
    }
    // A dual write's secondary copy.
    let other = match (resolved.secondary.as_ref(), other_body.take()) {
        (Some(other), Some(other_body)) => match rename(&other_body, &other.collection) {
            Some(copy) => {
                let copy = match other.wait {
                    Some(wait) => with_wait(&copy, wait).unwrap_or(copy),
                    None => copy,
                };
                let mut record = Record::new(
                    Protocol::Grpc,
                    &other.upstream.name,
                    &parts,
                    &parts.uri,
                    copy,
                );
                record.embed = pending;
                Some(record)
            }
            None => return cannot_rename(),
        },
        _ => None,
    };
    let body = match &resolved.names.physical {
        Some(physical) => match rename(&body, physical) {
            Some(renamed) => renamed,
            None => return cannot_rename(),
        },
        None => body,
    };
    send(
        method,
        &resolved,
        table.version,
        Request::from_parts(parts, full(body)),
        other,
        &proxy.replay,
    )
    .await
}

/// Sends a request (and a dual write's secondary copy) and answers the
/// chosen side's response, marked, with names rewritten back.
async fn send(
    method: Method,
    resolved: &Resolved,
    version: u64,
    request: Request<ProxyBody>,
    other: Option<Record>,
    replay: &Replay,
) -> Response<ProxyBody> {
    resolved.record_in_span();
    let route = resolved.route_label().to_owned();
    let failed = |outcome: &'static str, code: Code, message: String| {
        tracing::warn!(%message, "request failed");
        crate::metrics::request("grpc", method.label, &route, resolved.side, outcome);
        status_response(code, &message)
    };
    let response = match (&resolved.secondary, other) {
        (Some(second), Some(record)) => {
            let primary = (
                resolved.side.expect("a dual write is routed"),
                &*resolved.upstream,
                request,
            );
            let dual = write::dual(Protocol::Grpc, &route, primary, second, record, replay);
            match Box::pin(dual).await {
                Ok(response) => response,
                Err(DualError::Primary(err)) => {
                    return unavailable(method, &route, resolved.side, err);
                }
                Err(err) => return failed("secondary_failed", Code::Unavailable, err.to_string()),
            }
        }
        _ => match resolved.upstream.send(Protocol::Grpc, request).await {
            Ok((response, latency)) => {
                crate::metrics::upstream_latency(Protocol::Grpc, resolved.side, latency);
                response
            }
            Err(err) => return unavailable(method, &route, resolved.side, err),
        },
    };
    finish(method, resolved, version, response)
}

/// An upstream that did not answer, as the client's gRPC status.
fn unavailable(
    method: Method,
    route: &str,
    side: Option<crate::routing::Side>,
    err: UpstreamError,
) -> Response<ProxyBody> {
    let code = match err {
        UpstreamError::Timeout { .. } => Code::DeadlineExceeded,
        UpstreamError::Unreachable { .. } | UpstreamError::BrokenAnswer { .. } => Code::Unavailable,
    };
    tracing::warn!(%err, "request failed");
    crate::metrics::request("grpc", method.label, route, side, "upstream_unavailable");
    status_response(code, &err.to_string())
}

/// A routed read cutover could not serve.
fn read_failed(method: Method, route: &str, err: ReadError) -> Response<ProxyBody> {
    let (code, outcome) = match err {
        ReadError::Upstream(err) => return unavailable(method, route, None, err),
        ReadError::Refused(_) => (Code::InvalidArgument, "refused"),
        ReadError::Embedding { .. } => (Code::Unavailable, "embedding_failed"),
    };
    tracing::warn!(%err, "read failed");
    crate::metrics::request("grpc", method.label, route, None, outcome);
    status_response(code, &err.to_string())
}

/// Marks a response with the side that served it, rewrites collection
/// names in its status back to the client's, and counts it when its
/// status is known.
fn finish(
    method: Method,
    resolved: &Resolved,
    version: u64,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let route = resolved.route_label().to_owned();
    let (mut parts, body) = response.into_parts();
    resolved.mark(&mut parts.headers, version);
    // A trailers-only answer carries its status in the headers.
    if parts.headers.contains_key("grpc-status") {
        rewrite_grpc_message(&mut parts.headers, &resolved.names);
        crate::metrics::request(
            "grpc",
            method.label,
            &route,
            resolved.side,
            outcome(&parts.headers),
        );
        return Response::from_parts(parts, body);
    }
    let side = resolved.side;
    let names = resolved.names.clone();
    let body = body
        .map_frame(move |frame| match frame.into_trailers() {
            Ok(mut trailers) => {
                rewrite_grpc_message(&mut trailers, &names);
                crate::metrics::request("grpc", method.label, &route, side, outcome(&trailers));
                Frame::trailers(trailers)
            }
            Err(frame) => frame,
        })
        .boxed_unsync();
    Response::from_parts(parts, body)
}

fn outcome(headers: &HeaderMap) -> &'static str {
    match headers.get("grpc-status").and_then(|v| v.to_str().ok()) {
        Some("0") | None => "ok",
        Some(_) => "error",
    }
}

fn rewrite_grpc_message(headers: &mut HeaderMap, names: &Names) {
    let Some(message) = headers.get("grpc-message").and_then(|v| v.to_str().ok()) else {
        return;
    };
    let decoded = percent_decode_str(message).decode_utf8_lossy().into_owned();
    if let Some(rewritten) = names.rewrite_message(&decoded) {
        let encoded = utf8_percent_encode(&rewritten, GRPC_MESSAGE).to_string();
        headers.insert(
            "grpc-message",
            HeaderValue::from_str(&encoded).expect("percent-encoded ASCII"),
        );
    }
}

/// gRPC percent-encodes bytes outside printable ASCII, and `%` itself.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

#[derive(Clone, Copy)]
enum Code {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
}

/// A trailers-only gRPC error answered by cutover itself.
fn status_response(code: Code, message: &str) -> Response<ProxyBody> {
    Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", (code as i32).to_string())
        .header(
            "grpc-message",
            utf8_percent_encode(message, GRPC_MESSAGE).to_string(),
        )
        .body(full(Bytes::new()))
        .expect("static response parts")
}

/// The standard gRPC health check, answered by cutover itself.
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// `grpc.health.v1.HealthCheckResponse`: SERVING (1) when every upstream
/// answers its health check, NOT_SERVING (2) otherwise.
async fn health(proxy: &Proxy) -> Response<ProxyBody> {
    let serving = proxy.upstream_health().await.iter().all(|(_, up)| *up);
    let status = if serving { 1 } else { 2 };
    // One frame: uncompressed, 2 bytes, field 1 varint.
    let message = Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = [Ok(Frame::data(message)), Ok(Frame::trailers(trailers))];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    Response::builder()
        .header("content-type", "application/grpc")
        .body(body.boxed_unsync())
        .expect("static response parts")
}

/// The collection name in a unary gRPC request: field 1, length-delimited,
/// of the one message in the body. `None` when there is none to read.
pub fn collection_name(body: &[u8]) -> Option<&str> {
    let (range, _) = field_one(message(body)?)?;
    std::str::from_utf8(&message(body)?[range]).ok()
}

/// The message of a single uncompressed gRPC frame.
pub fn message(body: &[u8]) -> Option<&[u8]> {
    let (&compressed, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    (compressed == 0 && rest.len() == 4 + len).then(|| &rest[4..])
}

/// Where field 1 (wire type 2) sits in a protobuf message: the value's byte
/// range and the whole field's (tag and length included).
fn field_one(msg: &[u8]) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let mut pos = 0;
    while pos < msg.len() {
        let start = pos;
        let key = varint(msg, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(msg, &mut pos)?;
            }
            1 => pos += 8,
            2 => {
                let len = varint(msg, &mut pos)? as usize;
                let value = pos..pos.checked_add(len)?;
                if value.end > msg.len() {
                    return None;
                }
                pos = value.end;
                if field == 1 {
                    return Some((value, start..pos));
                }
            }
            5 => pos += 4,
            _ => return None,
        }
    }
    None
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The same gRPC frame with field 1 set to `name`; other bytes untouched.
pub fn rename(body: &[u8], name: &str) -> Option<Bytes> {
    let msg = message(body)?;
    let (_, whole) = field_one(msg)?;
    let mut field = BytesMut::with_capacity(name.len() + 6);
    field.put_u8(0x0a); // field 1, wire type 2
    let mut len = name.len() as u64;
    while len >= 0x80 {
        field.put_u8((len as u8) | 0x80);
        len >>= 7;
    }
    field.put_u8(len as u8);
    field.put_slice(name.as_bytes());
    let new_len = msg.len() - whole.len() + field.len();
    let mut out = BytesMut::with_capacity(5 + new_len);
    out.put_u8(0);
    out.put_u32(u32::try_from(new_len).ok()?);
    out.put_slice(&field);
    out.put_slice(&msg[..whole.start]);
    out.put_slice(&msg[whole.end..]);
    Some(out.freeze())
}

/// The same write with `wait` (field 2 of every Points write request) set:
/// a field given again is taken last-wins, so it is appended.
pub fn with_wait(body: &[u8], wait: bool) -> Option<Bytes> {
    let msg = message(body)?;
    let mut out = BytesMut::with_capacity(body.len() + 2);
    out.put_u8(0);
    out.put_u32(u32::try_from(msg.len() + 2).ok()?);
    out.put_slice(msg);
    out.put_slice(&[0x10, u8::from(wait)]); // field 2, varint
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use qdrant_client::qdrant::{SearchPoints, UpsertPoints};

    fn frame(msg: &impl Message) -> Vec<u8> {
        let body = msg.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn reads_and_rewrites_the_collection_keeping_every_other_field() {
        let search = SearchPoints {
            collection_name: "docs".into(),
            vector: vec![0.5; 300],
            limit: 7,
            ..Default::default()
        };
        let body = frame(&search);
        assert_eq!(collection_name(&body), Some("docs"));
        let renamed = rename(&body, &"docs_v2_with_a_much_longer_name".repeat(5)).unwrap();
        let decoded = SearchPoints::decode(&renamed[5..]).unwrap();
        assert_eq!(
            decoded.collection_name,
            "docs_v2_with_a_much_longer_name".repeat(5)
        );
        assert_eq!(
            SearchPoints {
                collection_name: "docs".into(),
                ..decoded
            },
            search
        );
    }

    #[test]
    fn sets_wait_on_a_write() {
        let upsert = UpsertPoints {
            collection_name: "docs".into(),
            wait: Some(true),
            ..Default::default()
        };
        let framed = with_wait(&frame(&upsert), false).unwrap();
        let decoded = UpsertPoints::decode(&framed[5..]).unwrap();
        assert_eq!(
            decoded,
            UpsertPoints {
                wait: Some(false),
                ..upsert.clone()
            }
        );
        let framed = with_wait(
            &frame(&UpsertPoints {
                wait: None,
                ..upsert
            }),
            true,
        )
        .unwrap();
        assert_eq!(UpsertPoints::decode(&framed[5..]).unwrap().wait, Some(true));
    }

    #[test]
    fn no_name_where_there_is_none() {
        assert_eq!(collection_name(&frame(&UpsertPoints::default())), None);
        assert_eq!(
            collection_name(&[0, 0, 0, 0, 9, 1]),
            None,
            "truncated frame"
        );
        assert_eq!(collection_name(&[1, 0, 0, 0, 0]), None, "compressed frame");
        assert_eq!(
            classify("/qdrant.Points/Upsert").operation,
            Operation::Write
        );
        assert_eq!(classify("/qdrant.Points/NewMethod").label, "other");
    }
}
