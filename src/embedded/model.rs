//! The embedded upstream's request model: one shape that both protocols parse
//! into, so the engine has a single implementation of every operation.
//!
//! Leaf types (filters, payload and vector selectors, point structs) are the
//! engine's own, which deserialize from Qdrant's REST JSON as they are.

use std::collections::BTreeMap;

use qdrant_edge::{
    Distance, Filter, HnswIndexConfig, Payload, PayloadFieldSchema, PayloadIndexInfo, PointId,
    PointStructPersisted, PointVectorsPersisted, QuantizationConfig, SearchParams, UpdateMode,
    WithPayloadInterface, WithVector,
};
use serde::{Deserialize, Serialize};

/// A collection's settings, as given at creation and reported by collection info.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectionConfig {
    pub vectors: VectorsConfig,
    #[serde(default)]
    pub hnsw_config: HnswConfigDiff,
    #[serde(default)]
    pub quantization_config: Option<QuantizationConfig>,
    #[serde(default)]
    pub on_disk_payload: Option<bool>,
}

/// One unnamed vector, or a map of named vectors.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VectorsConfig {
    Single(VectorParams),
    Named(BTreeMap<String, VectorParams>),
}

impl VectorsConfig {
    /// Every vector as (name, params); the unnamed vector is named "".
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&str, &VectorParams)> + '_> {
        match self {
            VectorsConfig::Single(params) => Box::new(std::iter::once(("", params))),
            VectorsConfig::Named(map) => Box::new(map.iter().map(|(k, v)| (k.as_str(), v))),
        }
    }

    pub fn get(&self, name: &str) -> Option<&VectorParams> {
        self.iter().find(|(n, _)| *n == name).map(|(_, p)| p)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VectorParams {
    pub size: usize,
    pub distance: Distance,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hnsw_config: Option<HnswConfigDiff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_config: Option<QuantizationConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disk: Option<bool>,
}

/// HNSW settings as Qdrant's API takes them: every field optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HnswConfigDiff {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_construct: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_scan_threshold: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_m: Option<usize>,
}

impl HnswConfigDiff {
    pub fn apply(&self, base: HnswIndexConfig) -> HnswIndexConfig {
        HnswIndexConfig {
            m: self.m.unwrap_or(base.m),
            ef_construct: self.ef_construct.unwrap_or(base.ef_construct),
            full_scan_threshold: self.full_scan_threshold.unwrap_or(base.full_scan_threshold),
            on_disk: self.on_disk.or(base.on_disk),
            payload_m: self.payload_m.or(base.payload_m),
            ..base
        }
    }
}

/// Which points an operation touches.
#[derive(Debug, Clone)]
pub enum PointsSelector {
    Ids(Vec<PointId>),
    Filter(Filter),
}

/// One write, as both protocols name them.
#[derive(Debug, Clone)]
pub enum Write {
    Upsert {
        points: Vec<PointStructPersisted>,
        update_filter: Option<Filter>,
        mode: UpdateMode,
    },
    Delete(PointsSelector),
    SetPayload {
        payload: Payload,
        selector: PointsSelector,
        key: Option<String>,
    },
    OverwritePayload {
        payload: Payload,
        selector: PointsSelector,
    },
    DeletePayload {
        keys: Vec<String>,
        selector: PointsSelector,
    },
    ClearPayload(PointsSelector),
    UpdateVectors {
        points: Vec<PointVectorsPersisted>,
        update_filter: Option<Filter>,
    },
    DeleteVectors {
        selector: PointsSelector,
        names: Vec<String>,
    },
    CreateIndex {
        field: String,
        schema: Option<PayloadFieldSchema>,
    },
    DeleteIndex {
        field: String,
    },
}

/// A query vector, given as values or as the id of a stored point.
#[derive(Debug, Clone)]
pub enum VectorInput {
    Dense(Vec<f32>),
    Id(PointId),
}

#[derive(Debug, Clone)]
pub enum Query {
    Nearest(VectorInput),
    Recommend {
        positive: Vec<VectorInput>,
        negative: Vec<VectorInput>,
        strategy: RecommendStrategy,
    },
    Rrf {
        k: usize,
        weights: Option<Vec<f32>>,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecommendStrategy {
    #[default]
    AverageVector,
    BestScore,
    SumScores,
}

/// Qdrant's default `k` for its own RRF fusion.
pub const QDRANT_RRF_K: usize = 2;

#[derive(Debug, Clone)]
pub struct Prefetch {
    pub prefetch: Vec<Prefetch>,
    pub query: Option<Query>,
    pub using: Option<String>,
    pub filter: Option<Filter>,
    pub params: Option<SearchParams>,
    pub score_threshold: Option<f32>,
    pub limit: usize,
}

/// Search, recommend and query all become this.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    pub prefetch: Vec<Prefetch>,
    pub query: Option<Query>,
    pub using: Option<String>,
    pub filter: Option<Filter>,
    pub params: Option<SearchParams>,
    pub score_threshold: Option<f32>,
    pub limit: usize,
    pub offset: usize,
    pub with_payload: WithPayloadInterface,
    pub with_vector: WithVector,
}

#[derive(Debug, Clone)]
pub struct ScrollRequest {
    pub filter: Option<Filter>,
    pub offset: Option<PointId>,
    pub limit: usize,
    pub with_payload: WithPayloadInterface,
    pub with_vector: WithVector,
}

/// What a write answers: Qdrant's operation id and whether it was applied.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct UpdateResult {
    pub operation_id: u64,
    pub status: UpdateStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStatus {
    Acknowledged,
    Completed,
}

/// Collection info as the engine knows it.
#[derive(Debug, Clone)]
pub struct CollectionInfo {
    pub config: CollectionConfig,
    pub points_count: usize,
    pub indexed_vectors_count: usize,
    pub segments_count: usize,
    pub payload_schema: BTreeMap<String, PayloadIndexInfo>,
}

pub const DEFAULT_SEARCH_LIMIT: usize = 10;
pub const DEFAULT_SCROLL_LIMIT: usize = 10;
