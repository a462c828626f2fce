//! A routed read (search, recommend, discover, query; one, batch or
//! groups), decoded only when its route needs to see inside it: the value a
//! payload routing key matches in its filter, the sizes of raw query
//! vectors (to skip a green they do not fit), its text (Document) queries
//! (to embed them per side), and its `limit`/`offset` (widened for fusion,
//! which pages the fused list, not each side's).

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use qdrant_client::qdrant as pb;
use serde_json::Value;

use crate::upstream::Protocol;

/// The kinds of read a split, shadow or fusion applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Search,
    Recommend,
    Discover,
    Query,
}

/// What one read asks for, and so what its answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One ranked list of points.
    One,
    /// One ranked list per request in the batch.
    Batch,
    /// A ranked list of groups of points.
    Groups,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadKind {
    pub family: Family,
    pub shape: Shape,
}

impl ReadKind {
    /// From a method label of either protocol (`SearchBatch`, `search_batch`).
    pub fn of(label: &str) -> Option<ReadKind> {
        let name = label.to_ascii_lowercase().replace('_', "");
        let (family, rest) = [
            ("search", Family::Search),
            ("recommend", Family::Recommend),
            ("discover", Family::Discover),
            ("query", Family::Query),
        ]
        .into_iter()
        .find_map(|(prefix, family)| Some((family, name.strip_prefix(prefix)?)))?;
        let shape = match rest {
            "" => Shape::One,
            "batch" => Shape::Batch,
            "groups" if family != Family::Discover => Shape::Groups,
            _ => return None,
        };
        Some(ReadKind { family, shape })
    }
}

/// A page of results a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub offset: usize,
    pub limit: usize,
}

/// Qdrant's default `limit` of a Query request.
const QUERY_DEFAULT_LIMIT: u64 = 10;

/// A decoded read request.
#[derive(Debug, Clone)]
pub enum ReadRequest {
    Grpc(Box<Grpc>),
    Rest(Value),
}

/// A gRPC read request, typed by its method.
#[derive(Debug, Clone)]
pub enum Grpc {
    Search(pb::SearchPoints),
    SearchBatch(pb::SearchBatchPoints),
    SearchGroups(pb::SearchPointGroups),
    Recommend(pb::RecommendPoints),
    RecommendBatch(pb::RecommendBatchPoints),
    RecommendGroups(pb::RecommendPointGroups),
    Discover(pb::DiscoverPoints),
    DiscoverBatch(pb::DiscoverBatchPoints),
    Query(pb::QueryPoints),
    QueryBatch(pb::QueryBatchPoints),
    QueryGroups(pb::QueryPointGroups),
}

/// A dense query vector sent as numbers: its vector name and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawVector {
    /// `""`: the unnamed vector.
    pub name: String,
    pub size: usize,
}

impl ReadRequest {
    /// Decodes a request body (a gRPC frame, or JSON); an error says why not.
    pub fn decode(protocol: Protocol, kind: ReadKind, body: &[u8]) -> Result<ReadRequest, String> {
        match protocol {
            Protocol::Rest => serde_json::from_slice(body)
                .map(ReadRequest::Rest)
                .map_err(|e| format!("the request body is not JSON: {e}")),
            Protocol::Grpc => {
                let message =
                    crate::grpc::message(body).ok_or("not a single uncompressed gRPC message")?;
                Grpc::decode(kind, message).map(|grpc| ReadRequest::Grpc(Box::new(grpc)))
            }
        }
    }

    pub fn encode(&self) -> Bytes {
        match self {
            ReadRequest::Rest(json) => {
                Bytes::from(serde_json::to_vec(json).expect("JSON values serialize"))
            }
            ReadRequest::Grpc(grpc) => grpc.encode(),
        }
    }

    /// The request as text, for the shadow mismatch sample.
    pub fn describe(&self) -> String {
        match self {
            ReadRequest::Rest(json) => json.to_string(),
            ReadRequest::Grpc(grpc) => format!("{grpc:?}"),
        }
    }

    /// The value the first filter's `must` matches on `field`, as text
    /// (`42`, `true`, `acme`), alike on both protocols.
    pub fn matched_value(&self, field: &str) -> Option<String> {
        match self {
            ReadRequest::Grpc(grpc) => grpc.filters().into_iter().find_map(|filter| {
                filter.must.iter().find_map(|condition| {
                    use pb::condition::ConditionOneOf;
                    use pb::r#match::MatchValue;
                    let Some(ConditionOneOf::Field(c)) = &condition.condition_one_of else {
                        return None;
                    };
                    if c.key != field {
                        return None;
                    }
                    match c.r#match.as_ref()?.match_value.as_ref()? {
                        MatchValue::Keyword(s) => Some(s.clone()),
                        MatchValue::Integer(i) => Some(i.to_string()),
                        MatchValue::Boolean(b) => Some(b.to_string()),
                        _ => None,
                    }
                })
            }),
            ReadRequest::Rest(json) => rest_requests(json).into_iter().find_map(|request| {
                let must = request.get("filter")?.get("must")?;
                let conditions = match must {
                    Value::Array(list) => list.iter().collect(),
                    one => vec![one],
                };
                conditions.into_iter().find_map(|c| {
                    if c.get("key")?.as_str()? != field {
                        return None;
                    }
                    match c.get("match")?.get("value")? {
                        Value::String(s) => Some(s.clone()),
                        v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
                        _ => None,
                    }
                })
            }),
        }
    }

    /// The dense query vectors given as numbers.
    pub fn raw_vectors(&self) -> Vec<RawVector> {
        let mut found = Vec::new();
        match self {
            ReadRequest::Grpc(grpc) => grpc.raw_vectors(&mut found),
            ReadRequest::Rest(json) => {
                for request in rest_requests(json) {
                    rest_raw_vectors(request, &mut found);
                }
            }
        }
        found
    }

    /// The text of every Document query (top level and prefetches), in order.
    pub fn documents(&mut self) -> Vec<String> {
        let mut texts = Vec::new();
        self.visit_documents(&mut |text| {
            texts.push(text.to_owned());
            None
        });
        texts
    }

    /// Replaces each Document query with its vector, in `documents` order.
    pub fn embed_documents(&mut self, vectors: Vec<Vec<f32>>) {
        let mut vectors = vectors.into_iter();
        self.visit_documents(&mut |_| vectors.next());
    }

    fn visit_documents(&mut self, visit: &mut dyn FnMut(&str) -> Option<Vec<f32>>) {
        match self {
            ReadRequest::Grpc(grpc) => match grpc.as_mut() {
                Grpc::Query(q) => grpc_query_documents(q, visit),
                Grpc::QueryBatch(b) => {
                    for q in &mut b.query_points {
                        grpc_query_documents(q, visit);
                    }
                }
                Grpc::QueryGroups(q) => {
                    for p in &mut q.prefetch {
                        grpc_prefetch_documents(p, visit);
                    }
                    if let Some(query) = &mut q.query {
                        grpc_document(query, visit);
                    }
                }
                _ => {}
            },
            ReadRequest::Rest(json) => {
                for request in rest_requests_mut(json) {
                    rest_documents(request, visit);
                }
            }
        }
    }

    /// Asks each request in it for `offset + limit` results from offset 0,
    /// answering the windows it asked for (a groups request has no offset).
    pub fn widen(&mut self) -> Vec<Window> {
        match self {
            ReadRequest::Grpc(grpc) => grpc.widen(),
            ReadRequest::Rest(json) => rest_requests_mut(json)
                .into_iter()
                .map(|request| {
                    let get = |name: &str| request.get(name).and_then(Value::as_u64);
                    let window = Window {
                        offset: get("offset").unwrap_or(0) as usize,
                        limit: get("limit").unwrap_or(QUERY_DEFAULT_LIMIT) as usize,
                    };
                    if let Some(object) = request.as_object_mut() {
                        object.insert("offset".into(), Value::from(0));
                        object.insert(
                            "limit".into(),
                            Value::from((window.offset + window.limit) as u64),
                        );
                    }
                    window
                })
                .collect(),
        }
    }
}

/// One uncompressed gRPC frame around `message`.
pub fn grpc_frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(len as u32);
    message.encode(&mut out).expect("a buffer with room");
    out.freeze()
}

/// Widens a Search, Recommend or Discover request (`limit: u64`, `offset: Option<u64>`).
macro_rules! widen_points {
    ($request:expr) => {{
        let r = $request;
        let window = Window {
            offset: r.offset.unwrap_or(0) as usize,
            limit: r.limit as usize,
        };
        r.offset = Some(0);
        r.limit = (window.offset + window.limit) as u64;
        window
    }};
}

fn widen_query(q: &mut pb::QueryPoints) -> Window {
    let window = Window {
        offset: q.offset.unwrap_or(0) as usize,
        limit: q.limit.unwrap_or(QUERY_DEFAULT_LIMIT) as usize,
    };
    q.offset = Some(0);
    q.limit = Some((window.offset + window.limit) as u64);
    window
}

impl Grpc {
    fn decode(kind: ReadKind, message: &[u8]) -> Result<Grpc, String> {
        use {Family as F, Shape as S};
        let decoded = match (kind.family, kind.shape) {
            (F::Search, S::One) => Message::decode(message).map(Grpc::Search),
            (F::Search, S::Batch) => Message::decode(message).map(Grpc::SearchBatch),
            (F::Search, S::Groups) => Message::decode(message).map(Grpc::SearchGroups),
            (F::Recommend, S::One) => Message::decode(message).map(Grpc::Recommend),
            (F::Recommend, S::Batch) => Message::decode(message).map(Grpc::RecommendBatch),
            (F::Recommend, S::Groups) => Message::decode(message).map(Grpc::RecommendGroups),
            (F::Discover, S::One) => Message::decode(message).map(Grpc::Discover),
            (F::Discover, S::Batch) => Message::decode(message).map(Grpc::DiscoverBatch),
            (F::Discover, S::Groups) => return Err("Discover has no groups form".into()),
            (F::Query, S::One) => Message::decode(message).map(Grpc::Query),
            (F::Query, S::Batch) => Message::decode(message).map(Grpc::QueryBatch),
            (F::Query, S::Groups) => Message::decode(message).map(Grpc::QueryGroups),
        };
        decoded.map_err(|e| format!("the request is not a valid message: {e}"))
    }

    fn encode(&self) -> Bytes {
        match self {
            Grpc::Search(m) => grpc_frame(m),
            Grpc::SearchBatch(m) => grpc_frame(m),
            Grpc::SearchGroups(m) => grpc_frame(m),
            Grpc::Recommend(m) => grpc_frame(m),
            Grpc::RecommendBatch(m) => grpc_frame(m),
            Grpc::RecommendGroups(m) => grpc_frame(m),
            Grpc::Discover(m) => grpc_frame(m),
            Grpc::DiscoverBatch(m) => grpc_frame(m),
            Grpc::Query(m) => grpc_frame(m),
            Grpc::QueryBatch(m) => grpc_frame(m),
            Grpc::QueryGroups(m) => grpc_frame(m),
        }
    }

    fn filters(&self) -> Vec<&pb::Filter> {
        let filters: Vec<Option<&pb::Filter>> = match self {
            Grpc::Search(m) => vec![m.filter.as_ref()],
            Grpc::SearchBatch(m) => m.search_points.iter().map(|r| r.filter.as_ref()).collect(),
            Grpc::SearchGroups(m) => vec![m.filter.as_ref()],
            Grpc::Recommend(m) => vec![m.filter.as_ref()],
            Grpc::RecommendBatch(m) => m
                .recommend_points
                .iter()
                .map(|r| r.filter.as_ref())
                .collect(),
            Grpc::RecommendGroups(m) => vec![m.filter.as_ref()],
            Grpc::Discover(m) => vec![m.filter.as_ref()],
            Grpc::DiscoverBatch(m) => m
                .discover_points
                .iter()
                .map(|r| r.filter.as_ref())
                .collect(),
            Grpc::Query(m) => vec![m.filter.as_ref()],
            Grpc::QueryBatch(m) => m.query_points.iter().map(|r| r.filter.as_ref()).collect(),
            Grpc::QueryGroups(m) => vec![m.filter.as_ref()],
        };
        filters.into_iter().flatten().collect()
    }

    fn raw_vectors(&self, found: &mut Vec<RawVector>) {
        let search = |s: &pb::SearchPoints, found: &mut Vec<RawVector>| {
            found.push(RawVector {
                name: s.vector_name.clone().unwrap_or_default(),
                size: s.vector.len(),
            })
        };
        match self {
            Grpc::Search(s) => search(s, found),
            Grpc::SearchBatch(b) => b.search_points.iter().for_each(|s| search(s, found)),
            Grpc::SearchGroups(g) => found.push(RawVector {
                name: g.vector_name.clone().unwrap_or_default(),
                size: g.vector.len(),
            }),
            Grpc::Query(q) => grpc_query_raw(&q.prefetch, &q.query, &q.using, found),
            Grpc::QueryBatch(b) => b
                .query_points
                .iter()
                .for_each(|q| grpc_query_raw(&q.prefetch, &q.query, &q.using, found)),
            Grpc::QueryGroups(q) => grpc_query_raw(&q.prefetch, &q.query, &q.using, found),
            // Recommend and discover name their examples by point ID, or by
            // vectors alike to a search's; only ID-based ones are common.
            _ => {}
        }
    }

    fn widen(&mut self) -> Vec<Window> {
        let groups = |limit: u64| {
            vec![Window {
                offset: 0,
                limit: limit as usize,
            }]
        };
        match self {
            Grpc::Search(r) => vec![widen_points!(r)],
            Grpc::SearchBatch(b) => b
                .search_points
                .iter_mut()
                .map(|r| widen_points!(r))
                .collect(),
            Grpc::Recommend(r) => vec![widen_points!(r)],
            Grpc::RecommendBatch(b) => b
                .recommend_points
                .iter_mut()
                .map(|r| widen_points!(r))
                .collect(),
            Grpc::Discover(r) => vec![widen_points!(r)],
            Grpc::DiscoverBatch(b) => b
                .discover_points
                .iter_mut()
                .map(|r| widen_points!(r))
                .collect(),
            Grpc::Query(q) => vec![widen_query(q)],
            Grpc::QueryBatch(b) => b.query_points.iter_mut().map(widen_query).collect(),
            Grpc::SearchGroups(g) => groups(u64::from(g.limit)),
            Grpc::RecommendGroups(g) => groups(u64::from(g.limit)),
            Grpc::QueryGroups(g) => groups(g.limit.unwrap_or(QUERY_DEFAULT_LIMIT)),
        }
    }
}

fn grpc_query_raw(
    prefetch: &[pb::PrefetchQuery],
    query: &Option<pb::Query>,
    using: &Option<String>,
    found: &mut Vec<RawVector>,
) {
    use pb::query::Variant;
    use pb::vector_input::Variant as Input;
    if let Some(pb::Query {
        variant:
            Some(Variant::Nearest(pb::VectorInput {
                variant: Some(Input::Dense(dense)),
            })),
    }) = query
    {
        found.push(RawVector {
            name: using.clone().unwrap_or_default(),
            size: dense.data.len(),
        });
    }
    for p in prefetch {
        grpc_query_raw(&p.prefetch, &p.query, &p.using, found);
    }
}

fn grpc_query_documents(q: &mut pb::QueryPoints, visit: &mut dyn FnMut(&str) -> Option<Vec<f32>>) {
    for p in &mut q.prefetch {
        grpc_prefetch_documents(p, visit);
    }
    if let Some(query) = &mut q.query {
        grpc_document(query, visit);
    }
}

fn grpc_prefetch_documents(
    p: &mut pb::PrefetchQuery,
    visit: &mut dyn FnMut(&str) -> Option<Vec<f32>>,
) {
    for inner in &mut p.prefetch {
        grpc_prefetch_documents(inner, visit);
    }
    if let Some(query) = &mut p.query {
        grpc_document(query, visit);
    }
}

fn grpc_document(query: &mut pb::Query, visit: &mut dyn FnMut(&str) -> Option<Vec<f32>>) {
    use pb::query::Variant;
    use pb::vector_input::Variant as Input;
    let Some(Variant::Nearest(input)) = &mut query.variant else {
        return;
    };
    if let Some(Input::Document(document)) = &input.variant
        && let Some(vector) = visit(&document.text)
    {
        input.variant = Some(Input::Dense(pb::DenseVector { data: vector }));
    }
}

/// The requests in a REST read body: the batch's `searches`, or the body itself.
fn rest_requests(json: &Value) -> Vec<&Value> {
    match json.get("searches") {
        Some(Value::Array(list)) => list.iter().collect(),
        _ => vec![json],
    }
}

fn rest_requests_mut(json: &mut Value) -> Vec<&mut Value> {
    if json.get("searches").is_some_and(Value::is_array) {
        return match json.get_mut("searches") {
            Some(Value::Array(list)) => list.iter_mut().collect(),
            _ => unreachable!("checked to be an array"),
        };
    }
    vec![json]
}

fn numbers(value: &Value) -> Option<usize> {
    let list = value.as_array()?;
    list.iter().all(Value::is_number).then_some(list.len())
}

fn rest_raw_vectors(request: &Value, found: &mut Vec<RawVector>) {
    let using = || {
        request
            .get("using")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    // Search: `vector` as numbers or `{"name", "vector"}`.
    match request.get("vector") {
        Some(v) if numbers(v).is_some() => found.push(RawVector {
            name: String::new(),
            size: numbers(v).unwrap_or(0),
        }),
        Some(Value::Object(named)) => {
            if let (Some(name), Some(size)) = (
                named.get("name").and_then(Value::as_str),
                named.get("vector").and_then(numbers),
            ) {
                found.push(RawVector {
                    name: name.to_owned(),
                    size,
                });
            }
        }
        _ => {}
    }
    // Query: `query` as numbers or `{"nearest": numbers}`.
    if let Some(query) = request.get("query") {
        let size = numbers(query).or_else(|| query.get("nearest").and_then(numbers));
        if let Some(size) = size {
            found.push(RawVector {
                name: using(),
                size,
            });
        }
    }
    match request.get("prefetch") {
        Some(Value::Array(list)) => list.iter().for_each(|p| rest_raw_vectors(p, found)),
        Some(one @ Value::Object(_)) => rest_raw_vectors(one, found),
        _ => {}
    }
}

fn rest_documents(request: &mut Value, visit: &mut dyn FnMut(&str) -> Option<Vec<f32>>) {
    match request.get_mut("prefetch") {
        Some(Value::Array(list)) => list.iter_mut().for_each(|p| rest_documents(p, visit)),
        Some(one @ Value::Object(_)) => rest_documents(one, visit),
        _ => {}
    }
    let Some(query) = request.get_mut("query") else {
        return;
    };
    // `{"text": ...}` or `{"nearest": {"text": ...}}`.
    let slot = if query.get("nearest").is_some() {
        query.get_mut("nearest").expect("checked")
    } else {
        query
    };
    let Some(text) = slot.get("text").and_then(Value::as_str) else {
        return;
    };
    if let Some(vector) = visit(text) {
        *slot = Value::from(vector);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_from_either_protocols_labels() {
        let kind = |family, shape| Some(ReadKind { family, shape });
        assert_eq!(
            ReadKind::of("SearchBatch"),
            kind(Family::Search, Shape::Batch)
        );
        assert_eq!(
            ReadKind::of("query_groups"),
            kind(Family::Query, Shape::Groups)
        );
        assert_eq!(ReadKind::of("Discover"), kind(Family::Discover, Shape::One));
        assert_eq!(ReadKind::of("discover_groups"), None);
        assert_eq!(ReadKind::of("scroll"), None);
        assert_eq!(ReadKind::of("SearchMatrixPairs"), None);
    }

    #[test]
    fn widening_asks_each_request_for_its_whole_page_from_zero() {
        let kind = ReadKind::of("query_batch").unwrap();
        let body = json!({ "searches": [
            { "query": [1.0, 0.0], "limit": 3, "offset": 2 },
            { "query": [0.0, 1.0] },
        ]});
        let mut request =
            ReadRequest::decode(Protocol::Rest, kind, body.to_string().as_bytes()).unwrap();
        let windows = request.widen();
        assert_eq!(
            windows,
            [
                Window {
                    offset: 2,
                    limit: 3
                },
                Window {
                    offset: 0,
                    limit: 10
                }
            ]
        );
        let ReadRequest::Rest(json) = &request else {
            unreachable!()
        };
        assert_eq!(json["searches"][0]["limit"], 5);
        assert_eq!(json["searches"][0]["offset"], 0);

        let search = pb::SearchPoints {
            collection_name: "docs".into(),
            vector: vec![1.0; 4],
            limit: 4,
            offset: Some(6),
            ..Default::default()
        };
        let kind = ReadKind::of("Search").unwrap();
        let mut request = ReadRequest::decode(Protocol::Grpc, kind, &grpc_frame(&search)).unwrap();
        assert_eq!(
            request.widen(),
            [Window {
                offset: 6,
                limit: 4
            }]
        );
        let ReadRequest::Grpc(grpc) =
            ReadRequest::decode(Protocol::Grpc, kind, &request.encode()).unwrap()
        else {
            unreachable!()
        };
        let Grpc::Search(widened) = *grpc else {
            unreachable!()
        };
        assert_eq!((widened.limit, widened.offset), (10, Some(0)));
    }

    #[test]
    fn a_payload_key_is_read_alike_from_both_protocols() {
        let kind = ReadKind::of("search").unwrap();
        let body = json!({ "vector": [1.0], "limit": 1, "filter": { "must": [
            { "key": "color", "match": { "value": "red" } },
            { "key": "tenant", "match": { "value": 42 } },
        ]}});
        let rest = ReadRequest::decode(Protocol::Rest, kind, body.to_string().as_bytes()).unwrap();
        assert_eq!(rest.matched_value("tenant").as_deref(), Some("42"));
        assert_eq!(rest.matched_value("absent"), None);
        let search = pb::SearchPoints {
            filter: Some(pb::Filter::must([pb::Condition::matches("tenant", 42i64)])),
            ..Default::default()
        };
        let grpc = ReadRequest::decode(Protocol::Grpc, kind, &grpc_frame(&search)).unwrap();
        assert_eq!(grpc.matched_value("tenant").as_deref(), Some("42"));
    }

    #[test]
    fn raw_vectors_and_documents_are_found_and_documents_replaced() {
        let kind = ReadKind::of("query").unwrap();
        let body = json!({
            "prefetch": [{ "query": { "text": "red shoes", "model": "m" }, "using": "text" }],
            "query": [0.5, 0.5, 0.5],
            "using": "image",
        });
        let mut rest =
            ReadRequest::decode(Protocol::Rest, kind, body.to_string().as_bytes()).unwrap();
        assert_eq!(
            rest.raw_vectors(),
            [RawVector {
                name: "image".into(),
                size: 3
            }]
        );
        assert_eq!(rest.documents(), ["red shoes"]);
        rest.embed_documents(vec![vec![1.0, 2.0]]);
        let ReadRequest::Rest(json) = &rest else {
            unreachable!()
        };
        assert_eq!(json["prefetch"][0]["query"], json!([1.0, 2.0]));

        let query = pb::QueryPoints {
            query: Some(pb::Query::new_nearest(pb::Document::new("blue shirt", "m"))),
            ..Default::default()
        };
        let mut grpc = ReadRequest::decode(Protocol::Grpc, kind, &grpc_frame(&query)).unwrap();
        assert_eq!(grpc.documents(), ["blue shirt"]);
        grpc.embed_documents(vec![vec![3.0, 4.0]]);
        assert_eq!(
            grpc.raw_vectors(),
            [RawVector {
                name: String::new(),
                size: 2
            }]
        );
    }
}
