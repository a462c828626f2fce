//! Qdrant's REST JSON bodies, parsed into the engine's model, and the
//! engine's answers rendered as Qdrant renders them.

use qdrant_edge::{
    Filter, Payload, PayloadFieldSchema, PointId, PointStructPersisted, PointVectorsPersisted,
    Record, ScoredPoint, SearchParams, UpdateMode, VectorInternal, VectorStructInternal,
    WithPayloadInterface, WithVector,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::model::*;

#[derive(Deserialize)]
#[serde(untagged)]
pub enum PointsSelectorJson {
    Ids { points: Vec<PointId> },
    Filter { filter: Filter },
}

impl From<PointsSelectorJson> for PointsSelector {
    fn from(json: PointsSelectorJson) -> Self {
        match json {
            PointsSelectorJson::Ids { points } => PointsSelector::Ids(points),
            PointsSelectorJson::Filter { filter } => PointsSelector::Filter(filter),
        }
    }
}

/// A body that selects points by `points` or by `filter`, as several writes do.
#[derive(Deserialize)]
struct Selected {
    points: Option<Vec<PointId>>,
    filter: Option<Filter>,
}

impl Selected {
    fn selector(self) -> Result<PointsSelector, ApiError> {
        match (self.points, self.filter) {
            (Some(ids), None) => Ok(PointsSelector::Ids(ids)),
            (None, Some(filter)) => Ok(PointsSelector::Filter(filter)),
            _ => Err(ApiError::BadRequest(
                "Validation error in JSON body: either `points` or `filter` is required".into(),
            )),
        }
    }
}

#[derive(Deserialize)]
struct UpsertJson {
    points: Option<Vec<PointStructPersisted>>,
    batch: Option<BatchJson>,
    update_filter: Option<Filter>,
    #[serde(default)]
    update_mode: Option<UpdateMode>,
}

#[derive(Deserialize)]
struct BatchJson {
    ids: Vec<PointId>,
    vectors: Value,
    payloads: Option<Vec<Option<Payload>>>,
}

pub fn upsert(body: Value) -> Result<Write, ApiError> {
    let json: UpsertJson = serde_json::from_value(body)?;
    let points = match (json.points, json.batch) {
        (Some(points), None) => points,
        (None, Some(batch)) => batch_points(batch)?,
        _ => {
            return Err(ApiError::BadRequest(
                "Validation error in JSON body: either `points` or `batch` is required".into(),
            ));
        }
    };
    Ok(Write::Upsert {
        points,
        update_filter: json.update_filter,
        mode: json.update_mode.unwrap_or_default(),
    })
}

/// Qdrant's column form: ids, vectors (a list, or a list per name), payloads.
fn batch_points(batch: BatchJson) -> Result<Vec<PointStructPersisted>, ApiError> {
    let n = batch.ids.len();
    let vectors: Vec<Value> = match batch.vectors {
        Value::Array(list) => list,
        Value::Object(named) => {
            let mut per_point = vec![serde_json::Map::new(); n];
            for (name, list) in named {
                let list: Vec<Value> = serde_json::from_value(list)?;
                if list.len() != n {
                    return Err(batch_length_error());
                }
                for (point, vector) in per_point.iter_mut().zip(list) {
                    point.insert(name.clone(), vector);
                }
            }
            per_point.into_iter().map(Value::Object).collect()
        }
        _ => {
            return Err(ApiError::BadRequest(
                "Format error in JSON body: batch.vectors".into(),
            ));
        }
    };
    let payloads = batch.payloads.unwrap_or_else(|| vec![None; n]);
    if vectors.len() != n || payloads.len() != n {
        return Err(batch_length_error());
    }
    batch
        .ids
        .into_iter()
        .zip(vectors)
        .zip(payloads)
        .map(|((id, vector), payload)| {
            Ok(PointStructPersisted {
                id,
                vector: serde_json::from_value(vector)?,
                payload,
            })
        })
        .collect()
}

fn batch_length_error() -> ApiError {
    ApiError::BadRequest("Validation error in JSON body: batch lists differ in length".into())
}

pub fn delete(body: Value) -> Result<Write, ApiError> {
    Ok(Write::Delete(
        serde_json::from_value::<PointsSelectorJson>(body)?.into(),
    ))
}

#[derive(Deserialize)]
struct SetPayloadJson {
    payload: Payload,
    key: Option<String>,
    #[serde(flatten)]
    selected: Selected,
}

pub fn set_payload(body: Value) -> Result<Write, ApiError> {
    let json: SetPayloadJson = serde_json::from_value(body)?;
    Ok(Write::SetPayload {
        payload: json.payload,
        selector: json.selected.selector()?,
        key: json.key,
    })
}

pub fn overwrite_payload(body: Value) -> Result<Write, ApiError> {
    let json: SetPayloadJson = serde_json::from_value(body)?;
    Ok(Write::OverwritePayload {
        payload: json.payload,
        selector: json.selected.selector()?,
    })
}

#[derive(Deserialize)]
struct DeletePayloadJson {
    keys: Vec<String>,
    #[serde(flatten)]
    selected: Selected,
}

pub fn delete_payload(body: Value) -> Result<Write, ApiError> {
    let json: DeletePayloadJson = serde_json::from_value(body)?;
    Ok(Write::DeletePayload {
        keys: json.keys,
        selector: json.selected.selector()?,
    })
}

pub fn clear_payload(body: Value) -> Result<Write, ApiError> {
    Ok(Write::ClearPayload(
        serde_json::from_value::<PointsSelectorJson>(body)?.into(),
    ))
}

#[derive(Deserialize)]
struct UpdateVectorsJson {
    points: Vec<PointVectorsPersisted>,
    update_filter: Option<Filter>,
}

pub fn update_vectors(body: Value) -> Result<Write, ApiError> {
    let json: UpdateVectorsJson = serde_json::from_value(body)?;
    Ok(Write::UpdateVectors {
        points: json.points,
        update_filter: json.update_filter,
    })
}

#[derive(Deserialize)]
struct DeleteVectorsJson {
    vector: Vec<String>,
    #[serde(flatten)]
    selected: Selected,
}

pub fn delete_vectors(body: Value) -> Result<Write, ApiError> {
    let json: DeleteVectorsJson = serde_json::from_value(body)?;
    Ok(Write::DeleteVectors {
        selector: json.selected.selector()?,
        names: json.vector,
    })
}

#[derive(Deserialize)]
struct CreateIndexJson {
    field_name: String,
    field_schema: Option<PayloadFieldSchema>,
}

pub fn create_index(body: Value) -> Result<Write, ApiError> {
    let json: CreateIndexJson = serde_json::from_value(body)?;
    Ok(Write::CreateIndex {
        field: json.field_name,
        schema: json.field_schema,
    })
}

/// One operation of `POST /collections/{name}/points/batch`.
pub fn batch_operation(op: Value) -> Result<Write, ApiError> {
    let Value::Object(map) = op else {
        return Err(ApiError::BadRequest(
            "Format error in JSON body: operation".into(),
        ));
    };
    let mut entries = map.into_iter();
    let (Some((kind, body)), None) = (entries.next(), entries.next()) else {
        return Err(ApiError::BadRequest(
            "Format error in JSON body: an operation names exactly one kind".into(),
        ));
    };
    match kind.as_str() {
        "upsert" => upsert(body),
        "delete" => delete(body),
        "set_payload" => set_payload(body),
        "overwrite_payload" => overwrite_payload(body),
        "delete_payload" => delete_payload(body),
        "clear_payload" => clear_payload(body),
        "update_vectors" => update_vectors(body),
        "delete_vectors" => delete_vectors(body),
        other => Err(ApiError::BadInput(format!(
            "Format error in JSON body: unknown operation `{other}`"
        ))),
    }
}

/// A collection's settings from `PUT /collections/{name}`.
pub fn collection_config(body: Value) -> Result<CollectionConfig, ApiError> {
    for unsupported in ["sparse_vectors", "sharding_method", "init_from"] {
        if body.get(unsupported).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::Unimplemented(format!("`{unsupported}`")));
        }
    }
    Ok(serde_json::from_value(body)?)
}

#[derive(Deserialize)]
struct GetPointsJson {
    ids: Vec<PointId>,
    with_payload: Option<WithPayloadInterface>,
    #[serde(alias = "with_vectors")]
    with_vector: Option<WithVector>,
}

pub fn get_points(
    body: Value,
) -> Result<(Vec<PointId>, WithPayloadInterface, WithVector), ApiError> {
    let json: GetPointsJson = serde_json::from_value(body)?;
    Ok((
        json.ids,
        json.with_payload
            .unwrap_or(WithPayloadInterface::Bool(true)),
        json.with_vector.unwrap_or(WithVector::Bool(false)),
    ))
}

#[derive(Deserialize)]
struct ScrollJson {
    filter: Option<Filter>,
    offset: Option<PointId>,
    limit: Option<usize>,
    with_payload: Option<WithPayloadInterface>,
    #[serde(alias = "with_vectors")]
    with_vector: Option<WithVector>,
    order_by: Option<Value>,
}

pub fn scroll(body: Value) -> Result<ScrollRequest, ApiError> {
    let json: ScrollJson = serde_json::from_value(body)?;
    if json.order_by.is_some() {
        return Err(ApiError::Unimplemented("Scroll with `order_by`".into()));
    }
    Ok(ScrollRequest {
        filter: json.filter,
        offset: json.offset,
        limit: json.limit.unwrap_or(DEFAULT_SCROLL_LIMIT),
        with_payload: json
            .with_payload
            .unwrap_or(WithPayloadInterface::Bool(true)),
        with_vector: json.with_vector.unwrap_or(WithVector::Bool(false)),
    })
}

#[derive(Deserialize)]
struct CountJson {
    filter: Option<Filter>,
    exact: Option<bool>,
}

pub fn count(body: Value) -> Result<(Option<Filter>, bool), ApiError> {
    let json: CountJson = serde_json::from_value(body)?;
    Ok((json.filter, json.exact.unwrap_or(true)))
}

/// Fields every read request shares.
#[derive(Deserialize)]
struct ReadCommon {
    filter: Option<Filter>,
    params: Option<SearchParams>,
    limit: Option<usize>,
    offset: Option<usize>,
    with_payload: Option<WithPayloadInterface>,
    #[serde(alias = "with_vectors")]
    with_vector: Option<WithVector>,
    score_threshold: Option<f32>,
    lookup_from: Option<Value>,
}

impl ReadCommon {
    fn into_request(
        self,
        query: Option<Query>,
        using: Option<String>,
        prefetch: Vec<Prefetch>,
    ) -> Result<QueryRequest, ApiError> {
        if self.lookup_from.is_some() {
            return Err(ApiError::Unimplemented("`lookup_from`".into()));
        }
        Ok(QueryRequest {
            prefetch,
            query,
            using,
            filter: self.filter,
            params: self.params,
            score_threshold: self.score_threshold,
            limit: self.limit.unwrap_or(DEFAULT_SEARCH_LIMIT),
            offset: self.offset.unwrap_or(0),
            with_payload: self
                .with_payload
                .unwrap_or(WithPayloadInterface::Bool(false)),
            with_vector: self.with_vector.unwrap_or(WithVector::Bool(false)),
        })
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NamedVectorJson {
    Plain(Vec<f32>),
    Named { name: String, vector: Vec<f32> },
}

#[derive(Deserialize)]
struct SearchJson {
    vector: NamedVectorJson,
    #[serde(flatten)]
    common: ReadCommon,
}

pub fn search(body: Value) -> Result<QueryRequest, ApiError> {
    let json: SearchJson = serde_json::from_value(body)?;
    let (using, vector) = match json.vector {
        NamedVectorJson::Plain(vector) => (None, vector),
        NamedVectorJson::Named { name, vector } => (Some(name), vector),
    };
    json.common.into_request(
        Some(Query::Nearest(VectorInput::Dense(vector))),
        using,
        Vec::new(),
    )
}

#[derive(Deserialize)]
struct RecommendJson {
    #[serde(default)]
    positive: Vec<Value>,
    #[serde(default)]
    negative: Vec<Value>,
    #[serde(default)]
    strategy: Option<RecommendStrategy>,
    using: Option<String>,
    #[serde(flatten)]
    common: ReadCommon,
}

pub fn recommend(body: Value) -> Result<QueryRequest, ApiError> {
    let json: RecommendJson = serde_json::from_value(body)?;
    let query = Query::Recommend {
        positive: vector_inputs(json.positive)?,
        negative: vector_inputs(json.negative)?,
        strategy: json.strategy.unwrap_or_default(),
    };
    json.common
        .into_request(Some(query), json.using, Vec::new())
}

#[derive(Deserialize)]
struct QueryJson {
    #[serde(default)]
    prefetch: Option<Value>,
    query: Option<Value>,
    using: Option<String>,
    #[serde(flatten)]
    common: ReadCommon,
}

pub fn query(body: Value) -> Result<QueryRequest, ApiError> {
    let json: QueryJson = serde_json::from_value(body)?;
    let prefetch = prefetches(json.prefetch)?;
    let query = json.query.map(query_interface).transpose()?;
    json.common.into_request(query, json.using, prefetch)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefetchJson {
    prefetch: Option<Value>,
    query: Option<Value>,
    using: Option<String>,
    filter: Option<Filter>,
    params: Option<SearchParams>,
    score_threshold: Option<f32>,
    limit: Option<usize>,
    lookup_from: Option<Value>,
}

fn prefetches(value: Option<Value>) -> Result<Vec<Prefetch>, ApiError> {
    let list = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(single) => vec![single],
    };
    list.into_iter()
        .map(|value| {
            let json: PrefetchJson = serde_json::from_value(value)?;
            if json.lookup_from.is_some() {
                return Err(ApiError::Unimplemented("`lookup_from`".into()));
            }
            Ok(Prefetch {
                prefetch: prefetches(json.prefetch)?,
                query: json.query.map(query_interface).transpose()?,
                using: json.using,
                filter: json.filter,
                params: json.params,
                score_threshold: json.score_threshold,
                limit: json.limit.unwrap_or(DEFAULT_SEARCH_LIMIT),
            })
        })
        .collect()
}

/// `query`: a bare vector input, or `{nearest}`, `{recommend}`, `{fusion}`, `{rrf}`.
fn query_interface(value: Value) -> Result<Query, ApiError> {
    let Value::Object(map) = &value else {
        return Ok(Query::Nearest(vector_input(value)?));
    };
    let kind = map.keys().next().cloned().unwrap_or_default();
    let body = map.get(&kind).cloned().unwrap_or(Value::Null);
    match (kind.as_str(), map.len()) {
        ("nearest", 1) => Ok(Query::Nearest(vector_input(body)?)),
        ("recommend", 1) => {
            #[derive(Deserialize)]
            struct RecommendInputJson {
                #[serde(default)]
                positive: Vec<Value>,
                #[serde(default)]
                negative: Vec<Value>,
                strategy: Option<RecommendStrategy>,
            }
            let input: RecommendInputJson = serde_json::from_value(body)?;
            Ok(Query::Recommend {
                positive: vector_inputs(input.positive)?,
                negative: vector_inputs(input.negative)?,
                strategy: input.strategy.unwrap_or_default(),
            })
        }
        ("fusion", 1) if body == "rrf" => Ok(Query::Rrf {
            k: QDRANT_RRF_K,
            weights: None,
        }),
        ("rrf", 1) => {
            #[derive(Deserialize)]
            struct RrfJson {
                k: Option<usize>,
                weights: Option<Vec<f32>>,
            }
            let rrf: RrfJson = serde_json::from_value(body)?;
            Ok(Query::Rrf {
                k: rrf.k.unwrap_or(QDRANT_RRF_K),
                weights: rrf.weights,
            })
        }
        _ => Err(ApiError::Unimplemented(format!("Query `{kind}`"))),
    }
}

fn vector_inputs(values: Vec<Value>) -> Result<Vec<VectorInput>, ApiError> {
    values.into_iter().map(vector_input).collect()
}

fn vector_input(value: Value) -> Result<VectorInput, ApiError> {
    match value {
        Value::Number(_) | Value::String(_) => Ok(VectorInput::Id(serde_json::from_value(value)?)),
        Value::Array(ref items) if items.iter().all(Value::is_number) => {
            Ok(VectorInput::Dense(serde_json::from_value(value)?))
        }
        _ => Err(ApiError::Unimplemented(
            "A query input other than a dense vector or a point id".into(),
        )),
    }
}

pub fn record(record: Record) -> Value {
    json!({
        "id": record.id,
        "payload": record.payload,
        "vector": record.vector.map(vector_struct),
    })
}

pub fn scored_point(point: ScoredPoint) -> Value {
    json!({
        "id": point.id,
        "version": point.version,
        "score": point.score,
        "payload": point.payload,
        "vector": point.vector.map(vector_struct),
    })
}

/// The unnamed vector renders as a bare list, named ones as a map.
fn vector_struct(vectors: VectorStructInternal) -> Value {
    match vectors {
        VectorStructInternal::Single(v) => json!(v),
        VectorStructInternal::MultiDense(m) => vector(VectorInternal::MultiDense(m)),
        VectorStructInternal::Named(mut map) => {
            if map.len() == 1 && map.contains_key("") {
                return vector(map.remove("").expect("checked"));
            }
            Value::Object(map.into_iter().map(|(k, v)| (k, vector(v))).collect())
        }
    }
}

fn vector(v: VectorInternal) -> Value {
    match v {
        VectorInternal::Dense(d) => json!(d),
        VectorInternal::Sparse(s) => json!({ "indices": s.indices, "values": s.values }),
        VectorInternal::MultiDense(m) => json!(m.multi_vectors().collect::<Vec<_>>()),
    }
}

pub fn collection_info(info: CollectionInfo) -> Value {
    let hnsw = info
        .config
        .hnsw_config
        .apply(qdrant_edge::HnswIndexConfig::default());
    json!({
        "status": "green",
        "optimizer_status": "ok",
        "indexed_vectors_count": info.indexed_vectors_count,
        "points_count": info.points_count,
        "segments_count": info.segments_count,
        "config": {
            "params": {
                "vectors": info.config.vectors,
                "shard_number": 1,
                "replication_factor": 1,
                "write_consistency_factor": 1,
                "on_disk_payload": info.config.on_disk_payload.unwrap_or(true),
            },
            "hnsw_config": hnsw,
            "quantization_config": info.config.quantization_config,
        },
        "payload_schema": info.payload_schema,
    })
}
