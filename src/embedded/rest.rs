//! The embedded upstream's REST API: Qdrant's paths, bodies and envelope.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::auth::ApiKey;
use super::error::ApiError;
use super::model::Write;
use super::rest_json as body;
use super::store::Store;

pub type RestResponse = Response<Full<Bytes>>;

/// Answers one request; never fails: errors become Qdrant's error envelope.
pub async fn handle(
    store: Arc<Store>,
    api_key: ApiKey,
    request: Request<hyper::body::Incoming>,
) -> RestResponse {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let wait = query_flag(request.uri().query(), "wait");
    let headers = request.headers().clone();
    let span = tracing::debug_span!("embedded_rest", %method, %path);
    let _enter = span.enter();
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => return error(&ApiError::BadInput(err.to_string()), started),
    };
    // Path segments are percent-decoded, as Qdrant does (`docs%5Fv2` is `docs_v2`).
    let decoded: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let open = matches!(segments.as_slice(), ["" | "healthz" | "livez" | "readyz"]);
    if !open && let Err(err) = api_key.check(&headers) {
        return error(&err, started);
    }
    match route(&store, &method, &segments, &body, wait).await {
        Ok(Reply::Enveloped(result)) => envelope(StatusCode::OK, json!(result), started),
        Ok(Reply::Raw(value)) => json_response(StatusCode::OK, &value),
        Ok(Reply::Text(text)) => Response::builder()
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(text)))
            .expect("static response parts"),
        Err(err) => error(&err, started),
    }
}

enum Reply {
    Enveloped(Value),
    Raw(Value),
    Text(&'static str),
}

async fn route(
    store: &Arc<Store>,
    method: &Method,
    segments: &[&str],
    body: &Bytes,
    wait: bool,
) -> Result<Reply, ApiError> {
    use Method as M;
    let json = || parse_body(body);
    let store = store.clone();
    match (method, segments) {
        (&M::GET, [""]) => Ok(Reply::Raw(json!({
            "title": "qdrant - vector search engine",
            "version": super::QDRANT_VERSION,
        }))),
        (&M::GET, ["healthz" | "livez" | "readyz"]) => Ok(Reply::Text("healthz check passed")),
        (&M::GET, ["collections"]) => {
            let names: Vec<Value> = store
                .list()
                .into_iter()
                .map(|n| json!({ "name": n }))
                .collect();
            ok(json!({ "collections": names }))
        }
        (&M::GET, ["collections", name]) => {
            let collection = store.collection(name)?;
            ok(body::collection_info(
                blocking(move || Ok(collection.info())).await?,
            ))
        }
        (&M::PUT, ["collections", name]) => {
            let config = body::collection_config(json()?)?;
            let name = name.to_string();
            blocking(move || store.create_collection(&name, config)).await?;
            ok(json!(true))
        }
        (&M::DELETE, ["collections", name]) => {
            let name = name.to_string();
            ok(json!(
                blocking(move || store.delete_collection(&name)).await?
            ))
        }
        (&M::GET, ["collections", name, "exists"]) => ok(json!({ "exists": store.exists(name) })),
        (&M::PUT, ["collections", name, "index"]) => {
            write(store, name, vec![body::create_index(json()?)?], wait).await
        }
        (&M::DELETE, ["collections", name, "index", field]) => {
            let update = Write::DeleteIndex {
                field: field.to_string(),
            };
            write(store, name, vec![update], wait).await
        }
        (&M::PUT, ["collections", name, "points"]) => {
            write(store, name, vec![body::upsert(json()?)?], wait).await
        }
        (&M::POST, ["collections", name, "points", "delete"]) => {
            write(store, name, vec![body::delete(json()?)?], wait).await
        }
        (&M::POST, ["collections", name, "points", "payload"]) => {
            write(store, name, vec![body::set_payload(json()?)?], wait).await
        }
        (&M::PUT, ["collections", name, "points", "payload"]) => {
            write(store, name, vec![body::overwrite_payload(json()?)?], wait).await
        }
        (&M::POST, ["collections", name, "points", "payload", "delete"]) => {
            write(store, name, vec![body::delete_payload(json()?)?], wait).await
        }
        (&M::POST, ["collections", name, "points", "payload", "clear"]) => {
            write(store, name, vec![body::clear_payload(json()?)?], wait).await
        }
        (&M::PUT, ["collections", name, "points", "vectors"]) => {
            write(store, name, vec![body::update_vectors(json()?)?], wait).await
        }
        (&M::POST, ["collections", name, "points", "vectors", "delete"]) => {
            write(store, name, vec![body::delete_vectors(json()?)?], wait).await
        }
        (&M::POST, ["collections", name, "points", "batch"]) => {
            let Some(Value::Array(ops)) = json()?.get_mut("operations").map(Value::take) else {
                return Err(ApiError::BadRequest(
                    "Validation error in JSON body: `operations` is required".into(),
                ));
            };
            let updates = ops
                .into_iter()
                .map(body::batch_operation)
                .collect::<Result<_, _>>()?;
            let collection = store.collection(name)?;
            let results = blocking(move || collection.update(updates, wait)).await?;
            ok(json!(results))
        }
        (&M::POST, ["collections", name, "points"]) => {
            let (ids, with_payload, with_vector) = body::get_points(json()?)?;
            let collection = store.collection(name)?;
            let records =
                blocking(move || collection.retrieve(&ids, with_payload, with_vector)).await?;
            ok(Value::Array(
                records.into_iter().map(body::record).collect(),
            ))
        }
        (&M::GET, ["collections", name, "points", id]) => {
            let id: qdrant_edge::PointId = serde_json::from_value(
                id.parse::<u64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| json!(id)),
            )
            .map_err(|_| ApiError::BadInput(format!("Unable to parse point id `{id}`")))?;
            let collection = store.collection(name)?;
            let record = blocking(move || {
                collection.retrieve(
                    &[id],
                    qdrant_edge::WithPayloadInterface::Bool(true),
                    qdrant_edge::WithVector::Bool(true),
                )
            })
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::NotFound(format!("No point with id {id} found")))?;
            ok(body::record(record))
        }
        (&M::POST, ["collections", name, "points", "scroll"]) => {
            let request = body::scroll(json()?)?;
            let collection = store.collection(name)?;
            let (records, next) = blocking(move || collection.scroll(request)).await?;
            ok(json!({
                "points": records.into_iter().map(body::record).collect::<Vec<_>>(),
                "next_page_offset": next,
            }))
        }
        (&M::POST, ["collections", name, "points", "count"]) => {
            let (filter, exact) = body::count(json()?)?;
            let collection = store.collection(name)?;
            let count = blocking(move || collection.count(filter, exact)).await?;
            ok(json!({ "count": count }))
        }
        (&M::POST, ["collections", name, "points", "search"]) => {
            let request = body::search(json()?)?;
            read(store, name, vec![request])
                .await
                .map(|mut r| Reply::Enveloped(r.remove(0)))
        }
        (&M::POST, ["collections", name, "points", "recommend"]) => {
            let request = body::recommend(json()?)?;
            read(store, name, vec![request])
                .await
                .map(|mut r| Reply::Enveloped(r.remove(0)))
        }
        (&M::POST, ["collections", name, "points", "query"]) => {
            let request = body::query(json()?)?;
            let points = read(store, name, vec![request]).await?.remove(0);
            ok(json!({ "points": points }))
        }
        (
            &M::POST,
            [
                "collections",
                name,
                "points",
                kind @ ("search" | "query"),
                "batch",
            ],
        ) => {
            let key = "searches";
            let Some(Value::Array(list)) = json()?.get_mut(key).map(Value::take) else {
                return Err(ApiError::BadInput(format!(
                    "Validation error in JSON body: `{key}` is required"
                )));
            };
            let parse = if *kind == "search" {
                body::search
            } else {
                body::query
            };
            let requests = list.into_iter().map(parse).collect::<Result<_, _>>()?;
            let results = read(store, name, requests).await?;
            if *kind == "search" {
                ok(Value::Array(results))
            } else {
                ok(Value::Array(
                    results
                        .into_iter()
                        .map(|p| json!({ "points": p }))
                        .collect(),
                ))
            }
        }
        _ => Err(ApiError::Unimplemented(format!(
            "`{method} /{}`",
            segments.join("/")
        ))),
    }
}

fn ok(value: Value) -> Result<Reply, ApiError> {
    Ok(Reply::Enveloped(value))
}

async fn write(
    store: Arc<Store>,
    name: &str,
    updates: Vec<Write>,
    wait: bool,
) -> Result<Reply, ApiError> {
    let collection = store.collection(name)?;
    let mut results = blocking(move || collection.update(updates, wait)).await?;
    ok(json!(results.remove(0)))
}

/// Runs queries; each answer is a JSON list of scored points.
async fn read(
    store: Arc<Store>,
    name: &str,
    requests: Vec<super::model::QueryRequest>,
) -> Result<Vec<Value>, ApiError> {
    let collection = store.collection(name)?;
    blocking(move || {
        requests
            .into_iter()
            .map(|request| {
                let points = collection.query(request)?;
                Ok(Value::Array(
                    points.into_iter().map(body::scored_point).collect(),
                ))
            })
            .collect()
    })
    .await
}

/// The engine is synchronous: its calls run on tokio's blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|err| ApiError::Internal(format!("engine task failed: {err}")))?
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    Ok(serde_json::from_slice(body)?)
}

fn query_flag(query: Option<&str>, name: &str) -> bool {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .any(|(k, v)| k == name && v == "true")
}

fn envelope(status: StatusCode, result: Value, started: Instant) -> RestResponse {
    let body = json!({
        "result": result,
        "status": "ok",
        "time": started.elapsed().as_secs_f64(),
    });
    json_response(status, &body)
}

fn error(err: &ApiError, started: Instant) -> RestResponse {
    let status = StatusCode::from_u16(err.http_status()).expect("valid status");
    let body = json!({
        "status": { "error": err.to_string() },
        "time": started.elapsed().as_secs_f64(),
    });
    json_response(status, &body)
}

fn json_response(status: StatusCode, value: &Value) -> RestResponse {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(value).expect("JSON values serialize"),
        )))
        .expect("static response parts")
}
