//! Qdrant's gRPC messages, lowered into the engine's model, and the engine's
//! answers raised back into gRPC messages.
//!
//! Filters and a few settings go through their REST JSON form: that is the
//! form the engine's own types parse, so both protocols share one parser.

use std::collections::HashMap;

use qdrant_client::qdrant as pb;
use qdrant_edge::{
    Filter, Payload, PointId, PointStructPersisted, PointVectorsPersisted, Record, ScoredPoint,
    UpdateMode, VectorInternal, VectorPersisted, VectorStructInternal, VectorStructPersisted,
    WithPayloadInterface, WithVector,
};
use serde_json::{Value, json};

use super::error::ApiError;
use super::model::*;

fn bad(what: impl Into<String>) -> ApiError {
    ApiError::BadInput(what.into())
}

fn invalid(what: &str) -> ApiError {
    ApiError::BadRequest(what.into())
}

pub fn point_id(id: Option<pb::PointId>) -> Result<PointId, ApiError> {
    use pb::point_id::PointIdOptions;
    match id.and_then(|id| id.point_id_options) {
        Some(PointIdOptions::Num(n)) => Ok(PointId::NumId(n)),
        Some(PointIdOptions::Uuid(s)) => s
            .parse()
            .map(PointId::Uuid)
            .map_err(|_| bad(format!("Unable to parse UUID: {s}"))),
        None => Err(invalid("Validation error: point id is required")),
    }
}

fn point_ids(ids: Vec<pb::PointId>) -> Result<Vec<PointId>, ApiError> {
    ids.into_iter().map(|id| point_id(Some(id))).collect()
}

pub fn pb_point_id(id: PointId) -> pb::PointId {
    use pb::point_id::PointIdOptions;
    pb::PointId {
        point_id_options: Some(match id {
            PointId::NumId(n) => PointIdOptions::Num(n),
            PointId::Uuid(u) => PointIdOptions::Uuid(u.to_string()),
        }),
    }
}

pub fn filter(filter: Option<pb::Filter>) -> Result<Option<Filter>, ApiError> {
    filter
        .map(|f| Ok(serde_json::from_value(filter_json(f)?)?))
        .transpose()
}

fn filter_json(filter: pb::Filter) -> Result<Value, ApiError> {
    let conditions = |list: Vec<pb::Condition>| -> Result<Value, ApiError> {
        Ok(Value::Array(
            list.into_iter()
                .map(condition_json)
                .collect::<Result<_, _>>()?,
        ))
    };
    let mut json = json!({
        "must": conditions(filter.must)?,
        "should": conditions(filter.should)?,
        "must_not": conditions(filter.must_not)?,
    });
    if let Some(min) = filter.min_should {
        json["min_should"] = json!({
            "conditions": conditions(min.conditions)?,
            "min_count": min.min_count,
        });
    }
    Ok(json)
}

fn condition_json(condition: pb::Condition) -> Result<Value, ApiError> {
    use pb::condition::ConditionOneOf as C;
    match condition.condition_one_of {
        Some(C::Field(field)) => field_condition_json(field),
        Some(C::IsEmpty(c)) => Ok(json!({ "is_empty": { "key": c.key } })),
        Some(C::IsNull(c)) => Ok(json!({ "is_null": { "key": c.key } })),
        Some(C::HasId(c)) => Ok(json!({ "has_id": point_ids(c.has_id)? })),
        Some(C::HasVector(c)) => Ok(json!({ "has_vector": c.has_vector })),
        Some(C::Filter(f)) => filter_json(f),
        Some(C::Nested(n)) => Ok(json!({
            "nested": { "key": n.key, "filter": filter_json(n.filter.unwrap_or_default())? }
        })),
        Some(C::Slice(_)) => Err(ApiError::Unimplemented("The slice condition".into())),
        None => Err(invalid("Validation error: empty condition")),
    }
}

fn field_condition_json(field: pb::FieldCondition) -> Result<Value, ApiError> {
    use pb::r#match::MatchValue as M;
    let mut json = json!({ "key": field.key });
    if let Some(m) = field.r#match.and_then(|m| m.match_value) {
        json["match"] = match m {
            M::Keyword(s) => json!({ "value": s }),
            M::Integer(i) => json!({ "value": i }),
            M::Boolean(b) => json!({ "value": b }),
            M::Text(t) => json!({ "text": t }),
            M::Phrase(p) => json!({ "phrase": p }),
            M::Keywords(k) => json!({ "any": k.strings }),
            M::Integers(i) => json!({ "any": i.integers }),
            M::ExceptKeywords(k) => json!({ "except": k.strings }),
            M::ExceptIntegers(i) => json!({ "except": i.integers }),
            _ => return Err(ApiError::Unimplemented("This match condition".into())),
        };
    }
    if let Some(r) = field.range {
        json["range"] = json!({ "lt": r.lt, "gt": r.gt, "gte": r.gte, "lte": r.lte });
    }
    if let Some(v) = field.values_count {
        json["values_count"] = json!({ "lt": v.lt, "gt": v.gt, "gte": v.gte, "lte": v.lte });
    }
    if let Some(b) = field.is_empty {
        json["is_empty"] = json!(b);
    }
    if let Some(b) = field.is_null {
        json["is_null"] = json!(b);
    }
    if field.geo_bounding_box.is_some()
        || field.geo_radius.is_some()
        || field.geo_polygon.is_some()
        || field.datetime_range.is_some()
    {
        return Err(ApiError::Unimplemented(
            "Geo and datetime conditions".into(),
        ));
    }
    Ok(json)
}

pub fn payload(map: HashMap<String, pb::Value>) -> Payload {
    Payload(map.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
}

fn pb_payload(payload: Option<Payload>) -> HashMap<String, pb::Value> {
    payload
        .map(|p| {
            p.0.into_iter()
                .map(|(k, v)| (k, pb::Value::from(v)))
                .collect()
        })
        .unwrap_or_default()
}

pub fn with_payload(
    selector: Option<pb::WithPayloadSelector>,
    default: bool,
) -> WithPayloadInterface {
    use pb::with_payload_selector::SelectorOptions as S;
    let json = match selector.and_then(|s| s.selector_options) {
        None => return WithPayloadInterface::Bool(default),
        Some(S::Enable(b)) => json!(b),
        Some(S::Include(i)) => json!({ "include": i.fields }),
        Some(S::Exclude(e)) => json!({ "exclude": e.fields }),
    };
    serde_json::from_value(json).unwrap_or(WithPayloadInterface::Bool(default))
}

pub fn with_vectors(selector: Option<pb::WithVectorsSelector>) -> WithVector {
    use pb::with_vectors_selector::SelectorOptions as S;
    match selector.and_then(|s| s.selector_options) {
        None => WithVector::Bool(false),
        Some(S::Enable(b)) => WithVector::Bool(b),
        Some(S::Include(i)) => WithVector::Selector(i.names),
    }
}

pub fn selector(selector: Option<pb::PointsSelector>) -> Result<PointsSelector, ApiError> {
    use pb::points_selector::PointsSelectorOneOf as S;
    match selector.and_then(|s| s.points_selector_one_of) {
        Some(S::Points(list)) => Ok(PointsSelector::Ids(point_ids(list.ids)?)),
        Some(S::Filter(f)) => Ok(PointsSelector::Filter(
            filter(Some(f))?.expect("a filter was given"),
        )),
        None => Err(invalid("Validation error: a points selector is required")),
    }
}

/// A vector as clients send it: the `vector` oneof, or the deprecated `data`.
#[allow(deprecated)]
fn vector(vector: pb::Vector) -> Result<VectorPersisted, ApiError> {
    use pb::vector::Vector as V;
    match vector.vector {
        Some(V::Dense(d)) => Ok(VectorPersisted::Dense(d.data)),
        None if vector.indices.is_none() && vector.vectors_count.is_none() => {
            Ok(VectorPersisted::Dense(vector.data))
        }
        _ => Err(ApiError::Unimplemented(
            "Sparse, multi and inference vectors".into(),
        )),
    }
}

fn vectors(vectors: Option<pb::Vectors>) -> Result<VectorStructPersisted, ApiError> {
    use pb::vectors::VectorsOptions as V;
    match vectors.and_then(|v| v.vectors_options) {
        Some(V::Vector(v)) => match vector(v)? {
            VectorPersisted::Dense(d) => Ok(VectorStructPersisted::Single(d)),
            _ => unreachable!("vector() yields dense vectors only"),
        },
        Some(V::Vectors(named)) => Ok(VectorStructPersisted::Named(
            named
                .vectors
                .into_iter()
                .map(|(name, v)| Ok((name, vector(v)?)))
                .collect::<Result<_, ApiError>>()?,
        )),
        None => Err(invalid("Validation error: vectors are required")),
    }
}

pub fn upsert_mode(mode: Option<i32>) -> Result<UpdateMode, ApiError> {
    match mode.map(pb::UpdateMode::try_from) {
        None | Some(Ok(pb::UpdateMode::Upsert)) => Ok(UpdateMode::Upsert),
        Some(Ok(pb::UpdateMode::InsertOnly)) => Ok(UpdateMode::InsertOnly),
        Some(Ok(pb::UpdateMode::UpdateOnly)) => Ok(UpdateMode::UpdateOnly),
        Some(Err(_)) => Err(invalid("Validation error: unknown update_mode")),
    }
}

pub fn upsert(
    points: Vec<pb::PointStruct>,
    update_filter: Option<pb::Filter>,
    update_mode: Option<i32>,
) -> Result<Write, ApiError> {
    let points = points
        .into_iter()
        .map(|p| {
            Ok(PointStructPersisted {
                id: point_id(p.id)?,
                vector: vectors(p.vectors)?,
                payload: Some(payload(p.payload)),
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Write::Upsert {
        points,
        update_filter: filter(update_filter)?,
        mode: upsert_mode(update_mode)?,
    })
}

pub fn update_vectors(
    points: Vec<pb::PointVectors>,
    update_filter: Option<pb::Filter>,
) -> Result<Write, ApiError> {
    let points = points
        .into_iter()
        .map(|p| {
            Ok(PointVectorsPersisted {
                id: point_id(p.id)?,
                vector: vectors(p.vectors)?,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Write::UpdateVectors {
        points,
        update_filter: filter(update_filter)?,
    })
}

pub fn vector_names(selector: Option<pb::VectorsSelector>) -> Vec<String> {
    selector.map(|s| s.names).unwrap_or_default()
}

/// One operation of `UpdateBatch`.
pub fn batch_operation(op: pb::PointsUpdateOperation) -> Result<Write, ApiError> {
    use pb::points_update_operation::Operation as O;
    #[allow(deprecated)]
    match op.operation {
        Some(O::Upsert(u)) => upsert(u.points, u.update_filter, u.update_mode),
        Some(O::DeletePoints(d)) => Ok(Write::Delete(selector(d.points)?)),
        Some(O::SetPayload(s)) => Ok(Write::SetPayload {
            payload: payload(s.payload),
            selector: selector(s.points_selector)?,
            key: s.key,
        }),
        Some(O::OverwritePayload(s)) => Ok(Write::OverwritePayload {
            payload: payload(s.payload),
            selector: selector(s.points_selector)?,
        }),
        Some(O::DeletePayload(d)) => Ok(Write::DeletePayload {
            keys: d.keys,
            selector: selector(d.points_selector)?,
        }),
        Some(O::ClearPayload(c)) => Ok(Write::ClearPayload(selector(c.points)?)),
        Some(O::UpdateVectors(u)) => update_vectors(u.points, u.update_filter),
        Some(O::DeleteVectors(d)) => Ok(Write::DeleteVectors {
            selector: selector(d.points_selector)?,
            names: vector_names(d.vectors),
        }),
        Some(O::DeleteDeprecated(s)) => Ok(Write::Delete(selector(Some(s))?)),
        Some(O::ClearPayloadDeprecated(s)) => Ok(Write::ClearPayload(selector(Some(s))?)),
        None => Err(invalid("Validation error: empty operation")),
    }
}

pub fn field_schema(
    field_type: Option<i32>,
    params: Option<pb::PayloadIndexParams>,
) -> Result<Option<qdrant_edge::PayloadFieldSchema>, ApiError> {
    if params.is_some() {
        return Err(ApiError::Unimplemented("`field_index_params`".into()));
    }
    let Some(field_type) = field_type else {
        return Ok(None);
    };
    let name = match pb::FieldType::try_from(field_type) {
        Ok(pb::FieldType::Keyword) => "keyword",
        Ok(pb::FieldType::Integer) => "integer",
        Ok(pb::FieldType::Float) => "float",
        Ok(pb::FieldType::Geo) => "geo",
        Ok(pb::FieldType::Text) => "text",
        Ok(pb::FieldType::Bool) => "bool",
        Ok(pb::FieldType::Datetime) => "datetime",
        Ok(pb::FieldType::Uuid) => "uuid",
        Err(_) => return Err(invalid("Validation error: unknown field_type")),
    };
    Ok(Some(serde_json::from_value(json!(name))?))
}

pub fn search_params(params: Option<pb::SearchParams>) -> Option<qdrant_edge::SearchParams> {
    params.map(|p| qdrant_edge::SearchParams {
        hnsw_ef: p.hnsw_ef.map(|ef| ef as usize),
        exact: p.exact.unwrap_or(false),
        indexed_only: p.indexed_only.unwrap_or(false),
        ..Default::default()
    })
}

fn limit(limit: Option<u64>) -> usize {
    limit.map(|l| l as usize).unwrap_or(DEFAULT_SEARCH_LIMIT)
}

pub fn search(s: pb::SearchPoints) -> Result<QueryRequest, ApiError> {
    if s.sparse_indices.is_some() {
        return Err(ApiError::Unimplemented("Sparse search".into()));
    }
    Ok(QueryRequest {
        prefetch: Vec::new(),
        query: Some(Query::Nearest(VectorInput::Dense(s.vector))),
        using: s.vector_name.filter(|n| !n.is_empty()),
        filter: filter(s.filter)?,
        params: search_params(s.params),
        score_threshold: s.score_threshold,
        limit: s.limit as usize,
        offset: s.offset.unwrap_or(0) as usize,
        with_payload: with_payload(s.with_payload, false),
        with_vector: with_vectors(s.with_vectors),
    })
}

fn recommend_strategy(strategy: Option<i32>) -> RecommendStrategy {
    match strategy.map(pb::RecommendStrategy::try_from) {
        Some(Ok(pb::RecommendStrategy::BestScore)) => RecommendStrategy::BestScore,
        Some(Ok(pb::RecommendStrategy::SumScores)) => RecommendStrategy::SumScores,
        _ => RecommendStrategy::AverageVector,
    }
}

pub fn recommend(r: pb::RecommendPoints) -> Result<QueryRequest, ApiError> {
    if r.lookup_from.is_some() {
        return Err(ApiError::Unimplemented("`lookup_from`".into()));
    }
    let examples =
        |ids: Vec<pb::PointId>, vectors: Vec<pb::Vector>| -> Result<Vec<VectorInput>, ApiError> {
            let mut inputs: Vec<VectorInput> =
                point_ids(ids)?.into_iter().map(VectorInput::Id).collect();
            for v in vectors {
                match vector(v)? {
                    VectorPersisted::Dense(d) => inputs.push(VectorInput::Dense(d)),
                    _ => unreachable!("vector() yields dense vectors only"),
                }
            }
            Ok(inputs)
        };
    Ok(QueryRequest {
        prefetch: Vec::new(),
        query: Some(Query::Recommend {
            positive: examples(r.positive, r.positive_vectors)?,
            negative: examples(r.negative, r.negative_vectors)?,
            strategy: recommend_strategy(r.strategy),
        }),
        using: r.using.filter(|n| !n.is_empty()),
        filter: filter(r.filter)?,
        params: search_params(r.params),
        score_threshold: r.score_threshold,
        limit: r.limit as usize,
        offset: r.offset.unwrap_or(0) as usize,
        with_payload: with_payload(r.with_payload, false),
        with_vector: with_vectors(r.with_vectors),
    })
}

fn vector_input(input: Option<pb::VectorInput>) -> Result<VectorInput, ApiError> {
    use pb::vector_input::Variant as V;
    match input.and_then(|i| i.variant) {
        Some(V::Id(id)) => Ok(VectorInput::Id(point_id(Some(id))?)),
        Some(V::Dense(d)) => Ok(VectorInput::Dense(d.data)),
        Some(_) => Err(ApiError::Unimplemented(
            "A query input other than a dense vector or a point id".into(),
        )),
        None => Err(invalid("Validation error: empty vector input")),
    }
}

fn query(q: Option<pb::Query>) -> Result<Option<Query>, ApiError> {
    use pb::query::Variant as V;
    let Some(variant) = q.and_then(|q| q.variant) else {
        return Ok(None);
    };
    Ok(Some(match variant {
        V::Nearest(input) => Query::Nearest(vector_input(Some(input))?),
        V::Recommend(r) => Query::Recommend {
            positive: r
                .positive
                .into_iter()
                .map(|i| vector_input(Some(i)))
                .collect::<Result<_, _>>()?,
            negative: r
                .negative
                .into_iter()
                .map(|i| vector_input(Some(i)))
                .collect::<Result<_, _>>()?,
            strategy: recommend_strategy(r.strategy),
        },
        V::Fusion(f) if f == pb::Fusion::Rrf as i32 => Query::Rrf {
            k: QDRANT_RRF_K,
            weights: None,
        },
        V::Rrf(rrf) => Query::Rrf {
            k: rrf.k.map(|k| k as usize).unwrap_or(QDRANT_RRF_K),
            weights: (!rrf.weights.is_empty()).then_some(rrf.weights),
        },
        _ => return Err(ApiError::Unimplemented("This query variant".into())),
    }))
}

fn prefetch(p: pb::PrefetchQuery) -> Result<Prefetch, ApiError> {
    if p.lookup_from.is_some() {
        return Err(ApiError::Unimplemented("`lookup_from`".into()));
    }
    Ok(Prefetch {
        prefetch: p
            .prefetch
            .into_iter()
            .map(prefetch)
            .collect::<Result<_, _>>()?,
        query: query(p.query)?,
        using: p.using.filter(|n| !n.is_empty()),
        filter: filter(p.filter)?,
        params: search_params(p.params),
        score_threshold: p.score_threshold,
        limit: limit(p.limit),
    })
}

pub fn query_points(q: pb::QueryPoints) -> Result<QueryRequest, ApiError> {
    if q.lookup_from.is_some() {
        return Err(ApiError::Unimplemented("`lookup_from`".into()));
    }
    Ok(QueryRequest {
        prefetch: q
            .prefetch
            .into_iter()
            .map(prefetch)
            .collect::<Result<_, _>>()?,
        query: query(q.query)?,
        using: q.using.filter(|n| !n.is_empty()),
        filter: filter(q.filter)?,
        params: search_params(q.params),
        score_threshold: q.score_threshold,
        limit: limit(q.limit),
        offset: q.offset.unwrap_or(0) as usize,
        with_payload: with_payload(q.with_payload, false),
        with_vector: with_vectors(q.with_vectors),
    })
}

fn pb_vector(v: VectorInternal) -> pb::VectorOutput {
    use pb::vector_output::Vector as V;
    let vector = match v {
        VectorInternal::Dense(data) => V::Dense(pb::DenseVector { data }),
        VectorInternal::Sparse(s) => V::Sparse(pb::SparseVector {
            values: s.values,
            indices: s.indices,
        }),
        VectorInternal::MultiDense(m) => V::MultiDense(pb::MultiDenseVector {
            vectors: m
                .multi_vectors()
                .map(|d| pb::DenseVector { data: d.to_vec() })
                .collect(),
        }),
    };
    #[allow(deprecated)]
    pb::VectorOutput {
        vector: Some(vector),
        ..Default::default()
    }
}

fn pb_vectors(vectors: VectorStructInternal) -> pb::VectorsOutput {
    use pb::vectors_output::VectorsOptions as V;
    let options = match vectors {
        VectorStructInternal::Single(d) => V::Vector(pb_vector(VectorInternal::Dense(d))),
        VectorStructInternal::MultiDense(m) => V::Vector(pb_vector(VectorInternal::MultiDense(m))),
        VectorStructInternal::Named(mut map) if map.len() == 1 && map.contains_key("") => {
            V::Vector(pb_vector(map.remove("").expect("checked")))
        }
        VectorStructInternal::Named(map) => V::Vectors(pb::NamedVectorsOutput {
            vectors: map.into_iter().map(|(k, v)| (k, pb_vector(v))).collect(),
        }),
    };
    pb::VectorsOutput {
        vectors_options: Some(options),
    }
}

pub fn pb_scored(point: ScoredPoint) -> pb::ScoredPoint {
    pb::ScoredPoint {
        id: Some(pb_point_id(point.id)),
        payload: pb_payload(point.payload),
        score: point.score,
        version: point.version,
        vectors: point.vector.map(pb_vectors),
        shard_key: None,
        order_value: None,
    }
}

pub fn pb_record(record: Record) -> pb::RetrievedPoint {
    pb::RetrievedPoint {
        id: Some(pb_point_id(record.id)),
        payload: pb_payload(record.payload),
        vectors: record.vector.map(pb_vectors),
        shard_key: None,
        order_value: None,
    }
}

pub fn pb_update_result(result: UpdateResult) -> pb::UpdateResult {
    pb::UpdateResult {
        operation_id: Some(result.operation_id),
        status: match result.status {
            UpdateStatus::Acknowledged => pb::UpdateStatus::Acknowledged,
            UpdateStatus::Completed => pb::UpdateStatus::Completed,
        } as i32,
    }
}

fn distance(d: i32) -> Result<qdrant_edge::Distance, ApiError> {
    use qdrant_edge::Distance as D;
    match pb::Distance::try_from(d) {
        Ok(pb::Distance::Cosine) => Ok(D::Cosine),
        Ok(pb::Distance::Euclid) => Ok(D::Euclid),
        Ok(pb::Distance::Dot) => Ok(D::Dot),
        Ok(pb::Distance::Manhattan) => Ok(D::Manhattan),
        _ => Err(invalid("Validation error: unknown distance")),
    }
}

fn pb_distance(d: qdrant_edge::Distance) -> pb::Distance {
    use qdrant_edge::Distance as D;
    match d {
        D::Cosine => pb::Distance::Cosine,
        D::Euclid => pb::Distance::Euclid,
        D::Dot => pb::Distance::Dot,
        D::Manhattan => pb::Distance::Manhattan,
    }
}

fn hnsw_diff(h: pb::HnswConfigDiff) -> HnswConfigDiff {
    #[allow(deprecated)]
    HnswConfigDiff {
        m: h.m.map(|v| v as usize),
        ef_construct: h.ef_construct.map(|v| v as usize),
        full_scan_threshold: h.full_scan_threshold.map(|v| v as usize),
        on_disk: h.on_disk,
        payload_m: h.payload_m.map(|v| v as usize),
    }
}

fn pb_hnsw_diff(h: &HnswConfigDiff) -> pb::HnswConfigDiff {
    #[allow(deprecated)]
    pb::HnswConfigDiff {
        m: h.m.map(|v| v as u64),
        ef_construct: h.ef_construct.map(|v| v as u64),
        full_scan_threshold: h.full_scan_threshold.map(|v| v as u64),
        on_disk: h.on_disk,
        payload_m: h.payload_m.map(|v| v as u64),
        ..Default::default()
    }
}

/// Quantization goes through its REST JSON form, which the engine's type parses.
#[allow(deprecated)]
fn quantization(q: pb::QuantizationConfig) -> Result<qdrant_edge::QuantizationConfig, ApiError> {
    use pb::quantization_config::Quantization as Q;
    let json = match q.quantization {
        Some(Q::Scalar(s)) => json!({ "scalar": {
            "type": "int8", "quantile": s.quantile, "always_ram": s.always_ram,
        }}),
        Some(Q::Product(p)) => {
            let ratio = pb::CompressionRatio::try_from(p.compression)
                .map_err(|_| invalid("Validation error: unknown compression ratio"))?;
            json!({ "product": {
                "compression": ratio.as_str_name().to_lowercase(), "always_ram": p.always_ram,
            }})
        }
        Some(Q::Binary(b)) => json!({ "binary": { "always_ram": b.always_ram } }),
        _ => return Err(ApiError::Unimplemented("This quantization".into())),
    };
    Ok(serde_json::from_value(json)?)
}

#[allow(deprecated)]
fn pb_quantization(q: &qdrant_edge::QuantizationConfig) -> Option<pb::QuantizationConfig> {
    use pb::quantization_config::Quantization as Q;
    let json = serde_json::to_value(q).ok()?;
    let quantization = if let Some(s) = json.get("scalar") {
        Q::Scalar(pb::ScalarQuantization {
            r#type: pb::QuantizationType::Int8 as i32,
            quantile: s["quantile"].as_f64().map(|v| v as f32),
            always_ram: s["always_ram"].as_bool(),
            ..Default::default()
        })
    } else if let Some(p) = json.get("product") {
        Q::Product(pb::ProductQuantization {
            compression: pb::CompressionRatio::from_str_name(
                &p["compression"].as_str().unwrap_or("x4").to_lowercase(),
            )
            .unwrap_or(pb::CompressionRatio::X4) as i32,
            always_ram: p["always_ram"].as_bool(),
            ..Default::default()
        })
    } else {
        Q::Binary(pb::BinaryQuantization {
            always_ram: json["binary"]["always_ram"].as_bool(),
            ..Default::default()
        })
    };
    Some(pb::QuantizationConfig {
        quantization: Some(quantization),
    })
}

fn vector_params(p: pb::VectorParams) -> Result<VectorParams, ApiError> {
    #[allow(deprecated)]
    Ok(VectorParams {
        size: p.size as usize,
        distance: distance(p.distance)?,
        hnsw_config: p.hnsw_config.map(hnsw_diff),
        quantization_config: p.quantization_config.map(quantization).transpose()?,
        on_disk: p.on_disk,
    })
}

fn pb_vector_params(p: &VectorParams) -> pb::VectorParams {
    #[allow(deprecated)]
    pb::VectorParams {
        size: p.size as u64,
        distance: pb_distance(p.distance) as i32,
        hnsw_config: p.hnsw_config.as_ref().map(pb_hnsw_diff),
        quantization_config: p.quantization_config.as_ref().and_then(pb_quantization),
        on_disk: p.on_disk,
        ..Default::default()
    }
}

pub fn collection_config(c: pb::CreateCollection) -> Result<CollectionConfig, ApiError> {
    use pb::vectors_config::Config;
    if c.sparse_vectors_config.is_some() {
        return Err(ApiError::Unimplemented("`sparse_vectors_config`".into()));
    }
    let vectors = match c.vectors_config.and_then(|v| v.config) {
        Some(Config::Params(p)) => VectorsConfig::Single(vector_params(p)?),
        Some(Config::ParamsMap(m)) => VectorsConfig::Named(
            m.map
                .into_iter()
                .map(|(name, p)| Ok((name, vector_params(p)?)))
                .collect::<Result<_, ApiError>>()?,
        ),
        None => return Err(invalid("Validation error: vectors_config is required")),
    };
    #[allow(deprecated)]
    Ok(CollectionConfig {
        vectors,
        hnsw_config: c.hnsw_config.map(hnsw_diff).unwrap_or_default(),
        quantization_config: c.quantization_config.map(quantization).transpose()?,
        on_disk_payload: c.on_disk_payload,
    })
}

pub fn pb_collection_info(info: CollectionInfo) -> pb::CollectionInfo {
    use pb::vectors_config::Config;
    let vectors_config = match &info.config.vectors {
        VectorsConfig::Single(p) => Config::Params(pb_vector_params(p)),
        VectorsConfig::Named(map) => Config::ParamsMap(pb::VectorParamsMap {
            map: map
                .iter()
                .map(|(k, p)| (k.clone(), pb_vector_params(p)))
                .collect(),
        }),
    };
    let hnsw = info
        .config
        .hnsw_config
        .apply(qdrant_edge::HnswIndexConfig::default());
    #[allow(deprecated)]
    pb::CollectionInfo {
        status: pb::CollectionStatus::Green as i32,
        optimizer_status: Some(pb::OptimizerStatus {
            ok: true,
            error: String::new(),
        }),
        segments_count: info.segments_count as u64,
        config: Some(pb::CollectionConfig {
            params: Some(pb::CollectionParams {
                shard_number: 1,
                on_disk_payload: info.config.on_disk_payload.unwrap_or(true),
                vectors_config: Some(pb::VectorsConfig {
                    config: Some(vectors_config),
                }),
                replication_factor: Some(1),
                write_consistency_factor: Some(1),
                ..Default::default()
            }),
            hnsw_config: Some(pb::HnswConfigDiff {
                m: Some(hnsw.m as u64),
                ef_construct: Some(hnsw.ef_construct as u64),
                full_scan_threshold: Some(hnsw.full_scan_threshold as u64),
                on_disk: hnsw.on_disk,
                payload_m: hnsw.payload_m.map(|v| v as u64),
                ..Default::default()
            }),
            optimizer_config: Some(Default::default()),
            wal_config: Some(Default::default()),
            quantization_config: info
                .config
                .quantization_config
                .as_ref()
                .and_then(pb_quantization),
            ..Default::default()
        }),
        payload_schema: info
            .payload_schema
            .into_iter()
            .map(|(key, index)| {
                let data_type = pb::PayloadSchemaType::from_str_name(&capitalize(
                    &serde_json::to_value(index.data_type).unwrap_or_default(),
                ))
                .unwrap_or(pb::PayloadSchemaType::UnknownType);
                let schema = pb::PayloadSchemaInfo {
                    data_type: data_type as i32,
                    params: None,
                    points: Some(index.points as u64),
                };
                (key, schema)
            })
            .collect(),
        points_count: Some(info.points_count as u64),
        indexed_vectors_count: Some(info.indexed_vectors_count as u64),
        ..Default::default()
    }
}

fn capitalize(value: &Value) -> String {
    let s = value.as_str().unwrap_or_default();
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
