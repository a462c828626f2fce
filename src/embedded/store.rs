//! The embedded engine: collections on disk, one `EdgeShard` each, and every
//! operation of the supported subset implemented once, for both protocols.
//!
//! Layout under the data directory:
//! `collections/<name>/{collection.json, oplog.bin, shard/}`, and `trash/` for
//! collections being deleted while requests still hold them.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use qdrant_edge::{
    ConditionalInsertOperation, Prefetch as ShardPrefetch, QueryRequest as ShardQuery,
};
use qdrant_edge::{
    CountRequest, CreateIndex, DEFAULT_VECTOR_NAME, DeletePayloadOp, EdgeConfig, EdgeShard,
    EdgeVectorParams, FieldIndexOperations, Filter, Fusion, HnswIndexConfig, JsonPath, NamedQuery,
    PayloadOps, PointId, PointIdsList, PointInsertOperations, PointOperations, QueryEnum,
    RecommendQuery, Record, ScoredPoint, ScoringQuery, SetPayloadOp, UpdateMode, UpdateOperation,
    UpdateVectorsOp, VectorInternal, VectorOperations, VectorStructInternal, WithPayloadInterface,
    WithVector,
};
use qdrant_edge::{ScrollRequest as ShardScroll, VectorStructPersisted};

use super::error::ApiError;
use super::model::*;
use super::oplog::OpLog;

/// A collection's engine segments are flushed, and its operation log
/// emptied, once the log holds this many writes or this many bytes,
/// whichever comes first. The bytes bound keeps large writes from piling up
/// hundreds of MiB to replay at the next open (a 768-dimension point is
/// about 8 KiB of log) and from leaving one long flush of everything loaded
/// to whichever write comes first after a bulk load; Qdrant's own WAL
/// segments are 32 MiB.
const CHECKPOINT_EVERY: usize = 4096;
const CHECKPOINT_BYTES: u64 = 64 << 20;

/// How often the operation logs are synced to disk: a write is answered once
/// it is logged and applied, as Qdrant answers once its WAL holds it and its
/// segments applied it, and Qdrant's flush worker syncs the WAL every
/// `flush_interval_sec` (5 by default). A write outlives a crash of the
/// process at once, and of the machine within this interval.
pub const LOG_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Store {
    root: PathBuf,
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
}

pub struct Collection {
    name: String,
    config: CollectionConfig,
    shard: EdgeShard,
    /// Serializes writes, the log and flushes: `EdgeShard::flush` must not
    /// run beside an update.
    log: Mutex<OpLog>,
    next_operation_id: AtomicU64,
}

impl Store {
    /// Opens (or creates) a store, replaying every collection's operation log.
    pub fn open(root: &Path) -> Result<Self, ApiError> {
        let collections_dir = root.join("collections");
        fs::create_dir_all(&collections_dir).map_err(io_error)?;
        let trash = root.join("trash");
        if trash.exists() {
            fs::remove_dir_all(&trash).map_err(io_error)?;
        }
        let mut collections = BTreeMap::new();
        for entry in fs::read_dir(&collections_dir).map_err(io_error)? {
            let dir = entry.map_err(io_error)?.path();
            let collection = Collection::load(&dir)?;
            collections.insert(collection.name.clone(), Arc::new(collection));
        }
        Ok(Store {
            root: root.to_owned(),
            collections: RwLock::new(collections),
        })
    }

    pub fn collection(&self, name: &str) -> Result<Arc<Collection>, ApiError> {
        self.collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::collection_not_found(name))
    }

    pub fn list(&self) -> Vec<String> {
        self.collections.read().keys().cloned().collect()
    }

    pub fn exists(&self, name: &str) -> bool {
        self.collections.read().contains_key(name)
    }

    pub fn create_collection(&self, name: &str, config: CollectionConfig) -> Result<(), ApiError> {
        validate_collection_name(name)?;
        validate_config(&config)?;
        let mut collections = self.collections.write();
        if collections.contains_key(name) {
            return Err(ApiError::AlreadyExists(format!(
                "Collection `{name}` already exists!"
            )));
        }
        let dir = self.root.join("collections").join(name);
        let collection = Collection::create(&dir, name, config)?;
        collections.insert(name.to_owned(), Arc::new(collection));
        tracing::info!(collection = name, "created collection");
        Ok(())
    }

    /// Deletes a collection; answers whether it existed. Requests already
    /// holding it finish on it; its files go once the last one lets go.
    pub fn delete_collection(&self, name: &str) -> Result<bool, ApiError> {
        let Some(collection) = self.collections.write().remove(name) else {
            return Ok(false);
        };
        let trash = self.root.join("trash");
        fs::create_dir_all(&trash).map_err(io_error)?;
        let doomed = trash.join(uuid::Uuid::new_v4().to_string());
        fs::rename(self.root.join("collections").join(name), &doomed).map_err(io_error)?;
        std::thread::spawn(move || {
            let mut collection = collection;
            loop {
                match Arc::try_unwrap(collection) {
                    Ok(last) => break drop(last),
                    Err(shared) => collection = shared,
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if let Err(err) = fs::remove_dir_all(&doomed) {
                tracing::warn!(path = %doomed.display(), %err, "could not remove a deleted collection");
            }
        });
        tracing::info!(collection = name, "deleted collection");
        Ok(true)
    }

    /// Puts every collection's logged writes on disk; run every
    /// [`LOG_SYNC_INTERVAL`].
    pub fn sync_logs(&self) {
        let collections: Vec<_> = self.collections.read().values().cloned().collect();
        for collection in collections {
            if let Err(err) = collection.sync_log() {
                tracing::error!(collection = %collection.name, %err, "operation log sync failed");
            }
        }
    }

    /// Flushes every collection and empties its log: a clean shutdown.
    pub fn checkpoint_all(&self) {
        for collection in self.collections.read().values() {
            if let Err(err) = collection.checkpoint(&mut collection.log.lock()) {
                tracing::error!(collection = %collection.name, %err, "checkpoint failed");
            }
        }
    }
}

impl Collection {
    fn create(dir: &Path, name: &str, config: CollectionConfig) -> Result<Self, ApiError> {
        fs::create_dir_all(dir.join("shard")).map_err(io_error)?;
        let meta = serde_json::json!({ "name": name, "config": config });
        write_json_atomically(&dir.join("collection.json"), &meta)?;
        let shard = EdgeShard::new(&dir.join("shard"), edge_config(&config))?;
        let (log, _) = OpLog::open(&dir.join("oplog.bin")).map_err(io_error)?;
        Ok(Collection {
            name: name.to_owned(),
            config,
            shard,
            log: Mutex::new(log),
            next_operation_id: AtomicU64::new(0),
        })
    }

    fn load(dir: &Path) -> Result<Self, ApiError> {
        #[derive(serde::Deserialize)]
        struct Meta {
            name: String,
            config: CollectionConfig,
        }
        let meta: Meta =
            serde_json::from_slice(&fs::read(dir.join("collection.json")).map_err(io_error)?)
                .map_err(|err| ApiError::Internal(format!("{}: {err}", dir.display())))?;
        let shard = EdgeShard::load(&dir.join("shard"), None)?;
        let (log, pending) = OpLog::open(&dir.join("oplog.bin")).map_err(io_error)?;
        let replayed = pending.len();
        for op in pending {
            // An operation the engine refused when it first came is refused again.
            if let Err(err) = shard.update(op) {
                tracing::debug!(collection = %meta.name, %err, "replayed operation refused");
            }
        }
        let collection = Collection {
            name: meta.name,
            config: meta.config,
            shard,
            log: Mutex::new(log),
            next_operation_id: AtomicU64::new(0),
        };
        collection.checkpoint(&mut collection.log.lock())?;
        tracing::info!(collection = %collection.name, replayed, "loaded collection");
        Ok(collection)
    }

    pub fn config(&self) -> &CollectionConfig {
        &self.config
    }

    fn checkpoint(&self, log: &mut OpLog) -> Result<(), ApiError> {
        let (started, records, bytes) = (std::time::Instant::now(), log.records(), log.bytes());
        self.flush_shard()?;
        log.truncate().map_err(io_error)?;
        tracing::debug!(collection = %self.name, records, bytes, elapsed = ?started.elapsed(), "checkpoint: segments flushed, operation log emptied");
        Ok(())
    }

    /// Syncs the log outside its lock, so that writes go on meanwhile.
    fn sync_log(&self) -> std::io::Result<()> {
        let unsynced = self.log.lock().take_unsynced();
        unsynced.map_or(Ok(()), |file| file.sync_data())
    }

    /// `EdgeShard::flush` panics on an I/O error; this turns that into an error,
    /// so a vanished data directory cannot abort the process from a destructor.
    fn flush_shard(&self) -> Result<(), ApiError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.shard.flush())).map_err(
            |_| ApiError::Internal(format!("collection `{}` could not be flushed", self.name)),
        )
    }

    /// Applies writes in order, all or none checked before the first is
    /// applied; each is logged before the engine sees it.
    pub fn update(&self, updates: Vec<Write>, wait: bool) -> Result<Vec<UpdateResult>, ApiError> {
        for update in &updates {
            self.validate(update)?;
        }
        let ops: Vec<UpdateOperation> = updates
            .into_iter()
            .map(|u| self.to_operation(u))
            .collect::<Result<_, _>>()?;
        let mut log = self.log.lock();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            log.append(&op).map_err(io_error)?;
            self.shard.update(op)?;
            results.push(UpdateResult {
                operation_id: self.next_operation_id.fetch_add(1, Ordering::Relaxed),
                status: if wait {
                    UpdateStatus::Completed
                } else {
                    UpdateStatus::Acknowledged
                },
            });
        }
        if log.records() >= CHECKPOINT_EVERY || log.bytes() >= CHECKPOINT_BYTES {
            self.checkpoint(&mut log)?;
        }
        Ok(results)
    }

    fn validate(&self, update: &Write) -> Result<(), ApiError> {
        match update {
            Write::Upsert { points, .. } => points
                .iter()
                .try_for_each(|p| self.check_vectors(&p.vector, true)),
            Write::UpdateVectors { points, .. } => points
                .iter()
                .try_for_each(|p| self.check_vectors(&p.vector, false)),
            Write::DeleteVectors { names, .. } => names
                .iter()
                .try_for_each(|name| self.vector_params(name).map(|_| ())),
            _ => Ok(()),
        }
    }

    /// Checks names and sizes; `complete` requires every vector of the collection.
    fn check_vectors(
        &self,
        vectors: &VectorStructPersisted,
        complete: bool,
    ) -> Result<(), ApiError> {
        let given: Vec<(&str, Option<usize>)> = match vectors {
            VectorStructPersisted::Single(v) => vec![(DEFAULT_VECTOR_NAME, Some(v.len()))],
            VectorStructPersisted::MultiDense(_) => {
                return Err(ApiError::Unimplemented("Multivectors".into()));
            }
            VectorStructPersisted::Named(map) => map
                .iter()
                .map(|(name, v)| {
                    let size = match v {
                        qdrant_edge::VectorPersisted::Dense(d) => Some(d.len()),
                        _ => None,
                    };
                    (name.as_str(), size)
                })
                .collect(),
        };
        for (name, size) in &given {
            let params = self.vector_params(name)?;
            let Some(size) = size else {
                return Err(ApiError::Unimplemented("Sparse and multivectors".into()));
            };
            if *size != params.size {
                return Err(ApiError::BadInput(format!(
                    "Vector dimension error: expected dim: {}, got {size}",
                    params.size
                )));
            }
        }
        if complete
            && let Some((missing, _)) = self
                .config
                .vectors
                .iter()
                .find(|(name, _)| !given.iter().any(|(g, _)| g == name))
        {
            return Err(ApiError::BadInput(format!(
                "Validation error in JSON body: vector `{missing}` is missing"
            )));
        }
        Ok(())
    }

    fn vector_params(&self, name: &str) -> Result<&VectorParams, ApiError> {
        self.config.vectors.get(name).ok_or_else(|| {
            ApiError::BadInput(if name.is_empty() {
                "Not existing vector name error: the collection has only named vectors; name one"
                    .to_owned()
            } else {
                format!("Not existing vector name error: {name}")
            })
        })
    }

    fn to_operation(&self, update: Write) -> Result<UpdateOperation, ApiError> {
        use UpdateOperation as Op;
        Ok(match update {
            Write::Upsert {
                points,
                update_filter,
                mode,
            } => {
                let points_op = PointInsertOperations::PointsList(points);
                if update_filter.is_none() && mode == UpdateMode::Upsert {
                    Op::PointOperation(PointOperations::UpsertPoints(points_op))
                } else {
                    Op::PointOperation(PointOperations::UpsertPointsConditional(
                        ConditionalInsertOperation {
                            points_op,
                            condition: update_filter.unwrap_or_default(),
                            update_mode: Some(mode),
                        },
                    ))
                }
            }
            Write::Delete(PointsSelector::Ids(ids)) => {
                Op::PointOperation(PointOperations::DeletePoints { ids })
            }
            Write::Delete(PointsSelector::Filter(filter)) => {
                Op::PointOperation(PointOperations::DeletePointsByFilter(filter))
            }
            Write::SetPayload {
                payload,
                selector,
                key,
            } => {
                let (points, filter) = split_selector(selector);
                let key = key.map(|k| parse_json_path(&k)).transpose()?;
                Op::PayloadOperation(PayloadOps::SetPayload(SetPayloadOp {
                    payload,
                    points,
                    filter,
                    key,
                }))
            }
            Write::OverwritePayload { payload, selector } => {
                let (points, filter) = split_selector(selector);
                Op::PayloadOperation(PayloadOps::OverwritePayload(SetPayloadOp {
                    payload,
                    points,
                    filter,
                    key: None,
                }))
            }
            Write::DeletePayload { keys, selector } => {
                let (points, filter) = split_selector(selector);
                let keys = keys
                    .iter()
                    .map(|k| parse_json_path(k))
                    .collect::<Result<_, _>>()?;
                Op::PayloadOperation(PayloadOps::DeletePayload(DeletePayloadOp {
                    keys,
                    points,
                    filter,
                }))
            }
            Write::ClearPayload(PointsSelector::Ids(points)) => {
                Op::PayloadOperation(PayloadOps::ClearPayload { points })
            }
            Write::ClearPayload(PointsSelector::Filter(filter)) => {
                Op::PayloadOperation(PayloadOps::ClearPayloadByFilter(filter))
            }
            Write::UpdateVectors {
                points,
                update_filter,
            } => Op::VectorOperation(VectorOperations::UpdateVectors(UpdateVectorsOp {
                points,
                update_filter,
            })),
            Write::DeleteVectors { selector, names } => match selector {
                PointsSelector::Ids(ids) => Op::VectorOperation(VectorOperations::DeleteVectors(
                    PointIdsList::from(ids),
                    names,
                )),
                PointsSelector::Filter(filter) => {
                    Op::VectorOperation(VectorOperations::DeleteVectorsByFilter(filter, names))
                }
            },
            Write::CreateIndex { field, schema } => {
                Op::FieldIndexOperation(FieldIndexOperations::CreateIndex(CreateIndex {
                    field_name: parse_json_path(&field)?,
                    field_schema: schema,
                }))
            }
            Write::DeleteIndex { field } => {
                Op::FieldIndexOperation(FieldIndexOperations::DeleteIndex(parse_json_path(&field)?))
            }
        })
    }

    pub fn retrieve(
        &self,
        ids: &[PointId],
        with_payload: WithPayloadInterface,
        with_vector: WithVector,
    ) -> Result<Vec<Record>, ApiError> {
        Ok(self
            .shard
            .retrieve(ids, Some(with_payload), Some(with_vector))?)
    }

    pub fn scroll(
        &self,
        request: ScrollRequest,
    ) -> Result<(Vec<Record>, Option<PointId>), ApiError> {
        Ok(self.shard.scroll(ShardScroll {
            offset: request.offset,
            limit: Some(request.limit),
            filter: request.filter,
            with_payload: Some(request.with_payload),
            with_vector: request.with_vector,
            order_by: None,
        })?)
    }

    pub fn count(&self, filter: Option<Filter>, exact: bool) -> Result<usize, ApiError> {
        Ok(self.shard.count(CountRequest { filter, exact })?)
    }

    pub fn info(&self) -> CollectionInfo {
        let info = self.shard.info();
        CollectionInfo {
            config: self.config.clone(),
            points_count: info.points_count,
            indexed_vectors_count: info.indexed_vectors_count,
            segments_count: info.segments_count,
            payload_schema: info
                .payload_schema
                .into_iter()
                .map(|(key, index)| (key.to_string(), index))
                .collect(),
        }
    }

    pub fn query(&self, request: QueryRequest) -> Result<Vec<ScoredPoint>, ApiError> {
        let mut examples = HashSet::new();
        let (offset, wanted) = (request.offset, request.offset + request.limit);
        let query = self.shard_query(request, &mut examples)?;
        // A fusion may tie at the cut; fetch every fused candidate so the cut
        // falls after ties are put in order.
        let candidates: usize = query.prefetches.iter().map(|p| p.limit).sum();
        let limit = wanted.max(candidates);
        let mut points = self.shard.query(ShardQuery {
            offset: 0,
            limit,
            ..query
        })?;
        order_ties_by_id(&mut points);
        points.truncate(wanted);
        Ok(points.split_off(offset.min(points.len())))
    }

    /// Lowers a request to the engine's query, resolving point ids to their
    /// vectors and excluding those example points from the answer, as Qdrant does.
    fn shard_query(
        &self,
        request: QueryRequest,
        examples: &mut HashSet<PointId>,
    ) -> Result<ShardQuery, ApiError> {
        let prefetches = request
            .prefetch
            .into_iter()
            .map(|p| self.shard_prefetch(p, examples))
            .collect::<Result<Vec<_>, _>>()?;
        let query = request
            .query
            .map(|q| self.scoring_query(q, request.using.as_deref(), examples))
            .transpose()?;
        let filter = exclude_examples(request.filter, examples);
        Ok(ShardQuery {
            prefetches,
            query,
            filter,
            score_threshold: request.score_threshold.map(Into::into),
            limit: request.limit + request.offset,
            offset: request.offset,
            params: request.params,
            with_vector: request.with_vector,
            with_payload: request.with_payload,
        })
    }

    fn shard_prefetch(
        &self,
        prefetch: Prefetch,
        examples: &mut HashSet<PointId>,
    ) -> Result<ShardPrefetch, ApiError> {
        let prefetches = prefetch
            .prefetch
            .into_iter()
            .map(|p| self.shard_prefetch(p, examples))
            .collect::<Result<Vec<_>, _>>()?;
        let query = prefetch
            .query
            .map(|q| self.scoring_query(q, prefetch.using.as_deref(), examples))
            .transpose()?;
        Ok(ShardPrefetch {
            prefetches,
            query,
            limit: prefetch.limit,
            params: prefetch.params,
            filter: exclude_examples(prefetch.filter, examples),
            score_threshold: prefetch.score_threshold.map(Into::into),
        })
    }

    fn scoring_query(
        &self,
        query: Query,
        using: Option<&str>,
        examples: &mut HashSet<PointId>,
    ) -> Result<ScoringQuery, ApiError> {
        let name = using.unwrap_or(DEFAULT_VECTOR_NAME);
        let params = self.vector_params(name)?;
        let named = |query| named_query(query, using);
        let named_reco = |query| named_query(query, using);
        let mut resolve = |inputs: Vec<VectorInput>| -> Result<Vec<Vec<f32>>, ApiError> {
            inputs
                .into_iter()
                .map(|input| self.resolve_vector(input, name, params.size, examples))
                .collect()
        };
        Ok(match query {
            Query::Nearest(input) => {
                let vector = resolve(vec![input])?.remove(0);
                ScoringQuery::Vector(QueryEnum::Nearest(named(VectorInternal::Dense(vector))))
            }
            Query::Recommend {
                positive,
                negative,
                strategy,
            } => {
                let positive = resolve(positive)?;
                let negative = resolve(negative)?;
                if positive.is_empty() {
                    return Err(ApiError::BadInput(
                        "At least one positive example is required".into(),
                    ));
                }
                let dense = |vs: Vec<Vec<f32>>| vs.into_iter().map(VectorInternal::Dense).collect();
                match strategy {
                    RecommendStrategy::AverageVector => {
                        let target = average_vector_target(&positive, &negative);
                        ScoringQuery::Vector(QueryEnum::Nearest(named(VectorInternal::Dense(
                            target,
                        ))))
                    }
                    RecommendStrategy::BestScore => {
                        ScoringQuery::Vector(QueryEnum::RecommendBestScore(named_reco(
                            RecommendQuery::new(dense(positive), dense(negative)),
                        )))
                    }
                    RecommendStrategy::SumScores => {
                        ScoringQuery::Vector(QueryEnum::RecommendSumScores(named_reco(
                            RecommendQuery::new(dense(positive), dense(negative)),
                        )))
                    }
                }
            }
            Query::Rrf { k, weights } => ScoringQuery::Fusion(Fusion::Rrf {
                k,
                weights: weights.map(|w| w.into_iter().map(Into::into).collect()),
            }),
        })
    }

    fn resolve_vector(
        &self,
        input: VectorInput,
        name: &str,
        size: usize,
        examples: &mut HashSet<PointId>,
    ) -> Result<Vec<f32>, ApiError> {
        let vector = match input {
            VectorInput::Dense(vector) => vector,
            VectorInput::Id(id) => {
                examples.insert(id);
                let record = self
                    .shard
                    .retrieve(
                        &[id],
                        Some(WithPayloadInterface::Bool(false)),
                        Some(WithVector::Selector(vec![name.to_owned()])),
                    )?
                    .into_iter()
                    .next()
                    .ok_or_else(|| ApiError::NotFound(format!("No point with id {id} found")))?;
                match record.vector {
                    Some(VectorStructInternal::Single(v)) => v,
                    Some(VectorStructInternal::Named(mut map)) => match map.remove(name) {
                        Some(VectorInternal::Dense(v)) => v,
                        _ => {
                            return Err(ApiError::BadInput(format!(
                                "Point {id} has no vector `{name}`"
                            )));
                        }
                    },
                    _ => {
                        return Err(ApiError::BadInput(format!(
                            "Point {id} has no vector `{name}`"
                        )));
                    }
                }
            }
        };
        if vector.len() != size {
            return Err(ApiError::BadInput(format!(
                "Vector dimension error: expected dim: {size}, got {}",
                vector.len()
            )));
        }
        Ok(vector)
    }
}

impl Drop for Collection {
    fn drop(&mut self) {
        // Flushed segments make the log redundant; if the flush fails, the
        // log stays and is replayed at the next open.
        match self.flush_shard() {
            Ok(()) => {
                if let Err(err) = self.log.get_mut().truncate() {
                    tracing::warn!(collection = %self.name, %err, "could not empty the operation log");
                }
            }
            Err(err) => tracing::error!(collection = %self.name, %err, "flush on close failed"),
        }
    }
}

/// Points with equal scores come in id order, so that answers (and fusion
/// of them) are deterministic; the engine leaves ties in no set order.
fn order_ties_by_id(points: &mut [ScoredPoint]) {
    for run in points.chunk_by_mut(|a, b| a.score == b.score) {
        run.sort_by_key(|p| p.id);
    }
}

fn named_query<T>(query: T, using: Option<&str>) -> NamedQuery<T> {
    NamedQuery {
        query,
        using: using.map(str::to_owned),
    }
}

/// Qdrant's `average_vector` strategy: `avg(pos) + (avg(pos) - avg(neg))`.
fn average_vector_target(positive: &[Vec<f32>], negative: &[Vec<f32>]) -> Vec<f32> {
    let average = |vs: &[Vec<f32>]| {
        let mut sum = vec![0.0f32; vs[0].len()];
        for v in vs {
            sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
        }
        sum.iter_mut().for_each(|s| *s /= vs.len() as f32);
        sum
    };
    let pos = average(positive);
    if negative.is_empty() {
        return pos;
    }
    let neg = average(negative);
    pos.iter().zip(&neg).map(|(p, n)| p + p - n).collect()
}

fn exclude_examples(filter: Option<Filter>, examples: &HashSet<PointId>) -> Option<Filter> {
    if examples.is_empty() {
        return filter;
    }
    let ids: Vec<&PointId> = examples.iter().collect();
    let exclusion: Filter =
        serde_json::from_value(serde_json::json!({ "must_not": [{ "has_id": ids }] }))
            .expect("a has_id filter is well formed");
    Some(match filter {
        Some(filter) => filter.merge_owned(exclusion),
        None => exclusion,
    })
}

fn split_selector(selector: PointsSelector) -> (Option<Vec<PointId>>, Option<Filter>) {
    match selector {
        PointsSelector::Ids(ids) => (Some(ids), None),
        PointsSelector::Filter(filter) => (None, Some(filter)),
    }
}

fn parse_json_path(key: &str) -> Result<JsonPath, ApiError> {
    key.parse()
        .map_err(|_| ApiError::BadInput(format!("Invalid payload key: {key}")))
}

fn validate_collection_name(name: &str) -> Result<(), ApiError> {
    let bad = name.is_empty()
        || name.len() > 255
        || name.starts_with('.')
        || name.chars().any(|c| {
            matches!(
                c,
                '/' | '\\' | '\0' | '*' | '?' | '<' | '>' | '|' | ':' | '"'
            )
        });
    if bad {
        return Err(ApiError::BadInput(format!(
            "Validation error in path parameters: collection name `{name}` is not allowed"
        )));
    }
    Ok(())
}

fn validate_config(config: &CollectionConfig) -> Result<(), ApiError> {
    for (name, params) in config.vectors.iter() {
        if params.size == 0 || params.size > 65536 {
            return Err(ApiError::BadInput(format!(
                "Validation error in JSON body: vectors{}.size: value {} invalid, must be from 1 to 65536",
                if name.is_empty() {
                    String::new()
                } else {
                    format!(".{name}")
                },
                params.size
            )));
        }
    }
    Ok(())
}

fn edge_config(config: &CollectionConfig) -> EdgeConfig {
    let hnsw = config.hnsw_config.apply(HnswIndexConfig::default());
    EdgeConfig {
        on_disk_payload: config.on_disk_payload.unwrap_or(true),
        vectors: config
            .vectors
            .iter()
            .map(|(name, params)| {
                let vector = EdgeVectorParams {
                    size: params.size,
                    distance: params.distance,
                    on_disk: params.on_disk,
                    multivector_config: None,
                    datatype: None,
                    quantization_config: params.quantization_config.clone(),
                    hnsw_config: params.hnsw_config.as_ref().map(|diff| diff.apply(hnsw)),
                };
                (name.to_owned(), vector)
            })
            .collect(),
        hnsw_config: hnsw,
        quantization_config: config.quantization_config.clone(),
        ..EdgeConfig::default()
    }
}

fn write_json_atomically(path: &Path, value: &serde_json::Value) -> Result<(), ApiError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(value)?).map_err(io_error)?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_error)?;
    fs::rename(&tmp, path).map_err(io_error)
}

fn io_error(err: std::io::Error) -> ApiError {
    ApiError::Internal(err.to_string())
}
