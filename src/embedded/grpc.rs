//! The embedded upstream's gRPC API, on the server traits qdrant-client ships.

use std::sync::Arc;
use std::time::Instant;

use qdrant_client::qdrant as pb;
use qdrant_client::qdrant::collections_server::Collections;
use qdrant_client::qdrant::points_server::Points;
use qdrant_client::qdrant::qdrant_server::Qdrant;
use qdrant_client::qdrant::snapshots_server::Snapshots;
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::grpc_convert as conv;
use super::model::{QueryRequest, UpdateResult, Write};
use super::rest::blocking;
use super::store::Store;

#[derive(Clone)]
pub struct EmbeddedGrpc {
    store: Arc<Store>,
}

impl EmbeddedGrpc {
    pub fn new(store: Arc<Store>) -> Self {
        EmbeddedGrpc { store }
    }

    async fn write(
        &self,
        collection: &str,
        updates: Vec<Write>,
        wait: Option<bool>,
    ) -> Result<Vec<UpdateResult>, Status> {
        let collection = self.store.collection(collection)?;
        let wait = wait.unwrap_or(false);
        Ok(blocking(move || collection.update(updates, wait)).await?)
    }

    async fn write_one(
        &self,
        collection: &str,
        update: Result<Write, ApiError>,
        wait: Option<bool>,
        started: Instant,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        let result = self.write(collection, vec![update?], wait).await?.remove(0);
        Ok(Response::new(pb::PointsOperationResponse {
            result: Some(conv::pb_update_result(result)),
            time: elapsed(started),
            usage: None,
        }))
    }

    async fn read(
        &self,
        collection: &str,
        requests: Vec<QueryRequest>,
    ) -> Result<Vec<Vec<pb::ScoredPoint>>, Status> {
        let collection = self.store.collection(collection)?;
        Ok(blocking(move || {
            requests
                .into_iter()
                .map(|r| {
                    Ok(collection
                        .query(r)?
                        .into_iter()
                        .map(conv::pb_scored)
                        .collect())
                })
                .collect()
        })
        .await?)
    }
}

fn elapsed(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

fn unsupported<T>(method: &str) -> Result<Response<T>, Status> {
    Err(ApiError::Unimplemented(method.to_owned()).into())
}

#[tonic::async_trait]
impl Qdrant for EmbeddedGrpc {
    async fn health_check(
        &self,
        _request: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckReply>, Status> {
        Ok(Response::new(pb::HealthCheckReply {
            title: "qdrant - vector search engine".into(),
            version: super::QDRANT_VERSION.into(),
            commit: None,
        }))
    }
}

#[tonic::async_trait]
impl Collections for EmbeddedGrpc {
    async fn get(
        &self,
        request: Request<pb::GetCollectionInfoRequest>,
    ) -> Result<Response<pb::GetCollectionInfoResponse>, Status> {
        let started = Instant::now();
        let collection = self
            .store
            .collection(&request.into_inner().collection_name)?;
        let info = blocking(move || Ok(collection.info())).await?;
        Ok(Response::new(pb::GetCollectionInfoResponse {
            result: Some(conv::pb_collection_info(info)),
            time: elapsed(started),
        }))
    }

    async fn list(
        &self,
        _request: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let started = Instant::now();
        let collections = self
            .store
            .list()
            .into_iter()
            .map(|name| pb::CollectionDescription { name })
            .collect();
        Ok(Response::new(pb::ListCollectionsResponse {
            collections,
            time: elapsed(started),
        }))
    }

    async fn create(
        &self,
        request: Request<pb::CreateCollection>,
    ) -> Result<Response<pb::CollectionOperationResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let name = request.collection_name.clone();
        let config = conv::collection_config(request)?;
        let store = self.store.clone();
        blocking(move || store.create_collection(&name, config)).await?;
        Ok(Response::new(pb::CollectionOperationResponse {
            result: true,
            time: elapsed(started),
        }))
    }

    async fn update(
        &self,
        _request: Request<pb::UpdateCollection>,
    ) -> Result<Response<pb::CollectionOperationResponse>, Status> {
        unsupported("/qdrant.Collections/Write")
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteCollection>,
    ) -> Result<Response<pb::CollectionOperationResponse>, Status> {
        let started = Instant::now();
        let name = request.into_inner().collection_name;
        let store = self.store.clone();
        let result = blocking(move || store.delete_collection(&name)).await?;
        Ok(Response::new(pb::CollectionOperationResponse {
            result,
            time: elapsed(started),
        }))
    }

    async fn update_aliases(
        &self,
        _request: Request<pb::ChangeAliases>,
    ) -> Result<Response<pb::CollectionOperationResponse>, Status> {
        unsupported("/qdrant.Collections/UpdateAliases")
    }

    async fn list_collection_aliases(
        &self,
        _request: Request<pb::ListCollectionAliasesRequest>,
    ) -> Result<Response<pb::ListAliasesResponse>, Status> {
        unsupported("/qdrant.Collections/ListCollectionAliases")
    }

    async fn list_aliases(
        &self,
        _request: Request<pb::ListAliasesRequest>,
    ) -> Result<Response<pb::ListAliasesResponse>, Status> {
        unsupported("/qdrant.Collections/ListAliases")
    }

    async fn collection_cluster_info(
        &self,
        _request: Request<pb::CollectionClusterInfoRequest>,
    ) -> Result<Response<pb::CollectionClusterInfoResponse>, Status> {
        unsupported("/qdrant.Collections/CollectionClusterInfo")
    }

    async fn collection_exists(
        &self,
        request: Request<pb::CollectionExistsRequest>,
    ) -> Result<Response<pb::CollectionExistsResponse>, Status> {
        let started = Instant::now();
        let exists = self.store.exists(&request.into_inner().collection_name);
        Ok(Response::new(pb::CollectionExistsResponse {
            result: Some(pb::CollectionExists { exists }),
            time: elapsed(started),
        }))
    }

    async fn update_collection_cluster_setup(
        &self,
        _request: Request<pb::UpdateCollectionClusterSetupRequest>,
    ) -> Result<Response<pb::UpdateCollectionClusterSetupResponse>, Status> {
        unsupported("/qdrant.Collections/UpdateCollectionClusterSetup")
    }

    async fn create_shard_key(
        &self,
        _request: Request<pb::CreateShardKeyRequest>,
    ) -> Result<Response<pb::CreateShardKeyResponse>, Status> {
        unsupported("/qdrant.Collections/CreateShardKey")
    }

    async fn delete_shard_key(
        &self,
        _request: Request<pb::DeleteShardKeyRequest>,
    ) -> Result<Response<pb::DeleteShardKeyResponse>, Status> {
        unsupported("/qdrant.Collections/DeleteShardKey")
    }

    async fn list_shard_keys(
        &self,
        _request: Request<pb::ListShardKeysRequest>,
    ) -> Result<Response<pb::ListShardKeysResponse>, Status> {
        unsupported("/qdrant.Collections/ListShardKeys")
    }
}

#[tonic::async_trait]
impl Points for EmbeddedGrpc {
    async fn upsert(
        &self,
        request: Request<pb::UpsertPoints>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let update = conv::upsert(r.points, r.update_filter, r.update_mode);
        self.write_one(&r.collection_name, update, r.wait, started)
            .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeletePoints>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let update = conv::selector(r.points).map(Write::Delete);
        self.write_one(&r.collection_name, update, r.wait, started)
            .await
    }

    async fn get(
        &self,
        request: Request<pb::GetPoints>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let ids = r
            .ids
            .into_iter()
            .map(|id| conv::point_id(Some(id)))
            .collect::<Result<Vec<_>, _>>()?;
        let with_payload = conv::with_payload(r.with_payload, true);
        let with_vector = conv::with_vectors(r.with_vectors);
        let collection = self.store.collection(&r.collection_name)?;
        let records =
            blocking(move || collection.retrieve(&ids, with_payload, with_vector)).await?;
        Ok(Response::new(pb::GetResponse {
            result: records.into_iter().map(conv::pb_record).collect(),
            time: elapsed(started),
            usage: None,
        }))
    }

    async fn update_vectors(
        &self,
        request: Request<pb::UpdatePointVectors>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let update = conv::update_vectors(r.points, r.update_filter);
        self.write_one(&r.collection_name, update, r.wait, started)
            .await
    }

    async fn delete_vectors(
        &self,
        request: Request<pb::DeletePointVectors>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let update = conv::selector(r.points_selector).map(|selector| Write::DeleteVectors {
            selector,
            names: conv::vector_names(r.vectors),
        });
        self.write_one(&r.collection_name, update, r.wait, started)
            .await
    }

    async fn set_payload(
        &self,
        request: Request<pb::SetPayloadPoints>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let update = conv::selector(r.points_selector).map(|selector| Write::SetPayload {
            payload: conv::payload(r.payload),
            selector,
            key: r.key,
        });
        self.write_one(&r.collection_name, update, r.wait, started)
            .await
    }

    async fn overwrite_payload(
        &self,
        request: Request<pb::SetPayloadPoints>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let update = conv::selector(r.points_selector).map(|selector| Write::OverwritePayload {
            payload: conv::payload(r.payload),
            selector,
        });
        self.write_one(&r.collection_name, update, r.wait, started)
            .await
    }

    async fn delete_payload(
        &self,
        request: Request<pb::DeletePayloadPoints>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let update = conv::selector(r.points_selector).map(|selector| Write::DeletePayload {
            keys: r.keys,
            selector,
        });
        self.write_one(&r.collection_name, update, r.wait, started)
            .await
    }

    async fn clear_payload(
        &self,
        request: Request<pb::ClearPayloadPoints>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let update = conv::selector(r.points).map(Write::ClearPayload);
        self.write_one(&r.collection_name, update, r.wait, started)
            .await
    }

    async fn create_field_index(
        &self,
        request: Request<pb::CreateFieldIndexCollection>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let update = conv::field_schema(r.field_type, r.field_index_params).map(|schema| {
            Write::CreateIndex {
                field: r.field_name,
                schema,
            }
        });
        self.write_one(&r.collection_name, update, r.wait, started)
            .await
    }

    async fn delete_field_index(
        &self,
        request: Request<pb::DeleteFieldIndexCollection>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let update = Ok(Write::DeleteIndex {
            field: r.field_name,
        });
        self.write_one(&r.collection_name, update, r.wait, started)
            .await
    }

    async fn create_vector_name(
        &self,
        _request: Request<pb::CreateVectorNameRequest>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        unsupported("/qdrant.Points/CreateVectorName")
    }

    async fn delete_vector_name(
        &self,
        _request: Request<pb::DeleteVectorNameRequest>,
    ) -> Result<Response<pb::PointsOperationResponse>, Status> {
        unsupported("/qdrant.Points/DeleteVectorName")
    }

    async fn search(
        &self,
        request: Request<pb::SearchPoints>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let name = r.collection_name.clone();
        let result = self.read(&name, vec![conv::search(r)?]).await?.remove(0);
        Ok(Response::new(pb::SearchResponse {
            result,
            time: elapsed(started),
            usage: None,
        }))
    }

    async fn search_batch(
        &self,
        request: Request<pb::SearchBatchPoints>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let requests = r
            .search_points
            .into_iter()
            .map(conv::search)
            .collect::<Result<_, _>>()?;
        let result = self.read(&r.collection_name, requests).await?;
        Ok(Response::new(pb::SearchBatchResponse {
            result: result
                .into_iter()
                .map(|result| pb::BatchResult { result })
                .collect(),
            time: elapsed(started),
            usage: None,
        }))
    }

    async fn search_groups(
        &self,
        _request: Request<pb::SearchPointGroups>,
    ) -> Result<Response<pb::SearchGroupsResponse>, Status> {
        unsupported("/qdrant.Points/SearchGroups")
    }

    async fn scroll(
        &self,
        request: Request<pb::ScrollPoints>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        if r.order_by.is_some() {
            return unsupported("Scroll with `order_by`");
        }
        let scroll = super::model::ScrollRequest {
            filter: conv::filter(r.filter)?,
            offset: r.offset.map(|id| conv::point_id(Some(id))).transpose()?,
            limit: r
                .limit
                .map(|l| l as usize)
                .unwrap_or(super::model::DEFAULT_SCROLL_LIMIT),
            with_payload: conv::with_payload(r.with_payload, true),
            with_vector: conv::with_vectors(r.with_vectors),
        };
        let collection = self.store.collection(&r.collection_name)?;
        let (records, next) = blocking(move || collection.scroll(scroll)).await?;
        Ok(Response::new(pb::ScrollResponse {
            next_page_offset: next.map(conv::pb_point_id),
            result: records.into_iter().map(conv::pb_record).collect(),
            time: elapsed(started),
            usage: None,
        }))
    }

    async fn recommend(
        &self,
        request: Request<pb::RecommendPoints>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let name = r.collection_name.clone();
        let result = self.read(&name, vec![conv::recommend(r)?]).await?.remove(0);
        Ok(Response::new(pb::RecommendResponse {
            result,
            time: elapsed(started),
            usage: None,
        }))
    }

    async fn recommend_batch(
        &self,
        _request: Request<pb::RecommendBatchPoints>,
    ) -> Result<Response<pb::RecommendBatchResponse>, Status> {
        unsupported("/qdrant.Points/RecommendBatch")
    }

    async fn recommend_groups(
        &self,
        _request: Request<pb::RecommendPointGroups>,
    ) -> Result<Response<pb::RecommendGroupsResponse>, Status> {
        unsupported("/qdrant.Points/RecommendGroups")
    }

    async fn discover(
        &self,
        _request: Request<pb::DiscoverPoints>,
    ) -> Result<Response<pb::DiscoverResponse>, Status> {
        unsupported("/qdrant.Points/Discover")
    }

    async fn discover_batch(
        &self,
        _request: Request<pb::DiscoverBatchPoints>,
    ) -> Result<Response<pb::DiscoverBatchResponse>, Status> {
        unsupported("/qdrant.Points/DiscoverBatch")
    }

    async fn count(
        &self,
        request: Request<pb::CountPoints>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let filter = conv::filter(r.filter)?;
        let exact = r.exact.unwrap_or(true);
        let collection = self.store.collection(&r.collection_name)?;
        let count = blocking(move || collection.count(filter, exact)).await?;
        Ok(Response::new(pb::CountResponse {
            result: Some(pb::CountResult {
                count: count as u64,
            }),
            time: elapsed(started),
            usage: None,
        }))
    }

    async fn update_batch(
        &self,
        request: Request<pb::UpdateBatchPoints>,
    ) -> Result<Response<pb::UpdateBatchResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let updates = r
            .operations
            .into_iter()
            .map(conv::batch_operation)
            .collect::<Result<_, _>>()?;
        let results = self.write(&r.collection_name, updates, r.wait).await?;
        Ok(Response::new(pb::UpdateBatchResponse {
            result: results.into_iter().map(conv::pb_update_result).collect(),
            time: elapsed(started),
            usage: None,
        }))
    }

    async fn query(
        &self,
        request: Request<pb::QueryPoints>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let name = r.collection_name.clone();
        let result = self
            .read(&name, vec![conv::query_points(r)?])
            .await?
            .remove(0);
        Ok(Response::new(pb::QueryResponse {
            result,
            time: elapsed(started),
            usage: None,
        }))
    }

    async fn query_batch(
        &self,
        request: Request<pb::QueryBatchPoints>,
    ) -> Result<Response<pb::QueryBatchResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let requests = r
            .query_points
            .into_iter()
            .map(conv::query_points)
            .collect::<Result<_, _>>()?;
        let result = self.read(&r.collection_name, requests).await?;
        Ok(Response::new(pb::QueryBatchResponse {
            result: result
                .into_iter()
                .map(|result| pb::BatchResult { result })
                .collect(),
            time: elapsed(started),
            usage: None,
        }))
    }

    async fn query_groups(
        &self,
        _request: Request<pb::QueryPointGroups>,
    ) -> Result<Response<pb::QueryGroupsResponse>, Status> {
        unsupported("/qdrant.Points/QueryGroups")
    }

    async fn facet(
        &self,
        _request: Request<pb::FacetCounts>,
    ) -> Result<Response<pb::FacetResponse>, Status> {
        unsupported("/qdrant.Points/Facet")
    }

    async fn search_matrix_pairs(
        &self,
        _request: Request<pb::SearchMatrixPoints>,
    ) -> Result<Response<pb::SearchMatrixPairsResponse>, Status> {
        unsupported("/qdrant.Points/SearchMatrixPairs")
    }

    async fn search_matrix_offsets(
        &self,
        _request: Request<pb::SearchMatrixPoints>,
    ) -> Result<Response<pb::SearchMatrixOffsetsResponse>, Status> {
        unsupported("/qdrant.Points/SearchMatrixOffsets")
    }
}

/// Snapshots are outside the subset: every method says so by name.
#[tonic::async_trait]
impl Snapshots for EmbeddedGrpc {
    async fn create(
        &self,
        _request: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        unsupported("/qdrant.Snapshots/Create")
    }

    async fn list(
        &self,
        _request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        unsupported("/qdrant.Snapshots/List")
    }

    async fn delete(
        &self,
        _request: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        unsupported("/qdrant.Snapshots/Delete")
    }

    async fn create_full(
        &self,
        _request: Request<pb::CreateFullSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        unsupported("/qdrant.Snapshots/CreateFull")
    }

    async fn list_full(
        &self,
        _request: Request<pb::ListFullSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        unsupported("/qdrant.Snapshots/ListFull")
    }

    async fn delete_full(
        &self,
        _request: Request<pb::DeleteFullSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        unsupported("/qdrant.Snapshots/DeleteFull")
    }
}
