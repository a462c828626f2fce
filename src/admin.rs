//! The admin API, on its own listener (loopback by default): routes read and
//! changed, rollback, reload; the replay log's status, pause, resume and
//! drain; `/metrics`, `/healthz`, `/readyz`.
//!
//! Route endpoints need `authorization: Bearer <token>` unless the config
//! allowed an unauthenticated loopback admin. Probes and metrics do not.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};

use crate::config::Config;
use crate::proxy::Proxy;
use crate::routing::{ChangeError, PolicyChange, RoutingTable};
use crate::upstream::{ProxyBody, full, read_whole};

pub struct Admin {
    pub proxy: Arc<Proxy>,
    pub token: Option<String>,
    pub metrics: PrometheusHandle,
    /// The file `reload` re-reads; `None` when the config came from elsewhere.
    pub config_path: Option<PathBuf>,
}

impl Admin {
    /// Re-reads the config file and swaps in its routes: the one reload path,
    /// for `POST /reload` and SIGHUP alike.
    pub fn reload(&self) -> Result<Arc<RoutingTable>, String> {
        let path = self
            .config_path
            .as_ref()
            .ok_or("cutover was not started from a config file")?;
        let config = Config::load(path).map_err(|e| e.to_string())?;
        for route in &config.routes {
            let route = route.get_ref();
            for target in [route.blue.get_ref(), route.green.get_ref()] {
                if !self.proxy.upstreams.contains_key(&target.upstream) {
                    return Err(format!(
                        "route `{}` names upstream `{}`, which this process did not start with; upstreams change with a restart",
                        route.collection, target.upstream
                    ));
                }
            }
        }
        let table = self
            .proxy
            .router
            .reload(&config)
            .map_err(|e| e.to_string())?;
        // Re-read the targets' vector sizes (the reload itself does not wait).
        let proxy = self.proxy.clone();
        tokio::runtime::Handle::current().spawn(async move { proxy.refresh_schemas().await });
        Ok(table)
    }
}

pub async fn handle(admin: Arc<Admin>, request: Request<Incoming>) -> Response<ProxyBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok"),
        (&Method::GET, ["readyz"]) => readyz(&admin).await,
        (&Method::GET, ["metrics"]) => Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(full(admin.metrics.render()))
            .expect("static response parts"),
        _ => {
            if let Err(refusal) = authorize(&admin, &request) {
                crate::metrics::admin_unauthorized();
                return error(StatusCode::UNAUTHORIZED, refusal);
            }
            if let Some(response) = replay_api(&admin, &method, &segments, request.uri()).await {
                return response;
            }
            let body = match read_whole(request.into_body(), 64 * 1024).await {
                Ok(body) => body,
                Err(err) => return error(StatusCode::BAD_REQUEST, &err),
            };
            // Changes write the state file (fsync): off the async workers.
            let segments: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
            tokio::task::spawn_blocking(move || {
                let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
                routes_api(&admin, &method, &segments, body)
            })
            .await
            .unwrap_or_else(|err| error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()))
        }
    }
}

fn routes_api(
    admin: &Admin,
    method: &Method,
    segments: &[&str],
    body: Bytes,
) -> Response<ProxyBody> {
    let router = &admin.proxy.router;
    match (method, segments) {
        (&Method::GET, ["routes"]) => json_response(StatusCode::OK, &table_json(&router.load())),
        (&Method::GET, ["routes", name]) => {
            let table = router.load();
            match table.get(name) {
                Some(route) => json_response(
                    StatusCode::OK,
                    &json!({
                        "version": table.version,
                        "route": route,
                        "replay": replay_status(&admin.proxy.replay.log.queue(name)),
                        "shadow": admin.proxy.shadows.route_report(name).0,
                    }),
                ),
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("no route for collection `{name}`"),
                ),
            }
        }
        (&Method::GET, ["routes", name, "shadow"]) => {
            if router.load().get(name).is_none() {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("no route for collection `{name}`"),
                );
            }
            let shadows = &admin.proxy.shadows;
            let (report, mismatches) = shadows.route_report(name);
            json_response(
                StatusCode::OK,
                &json!({
                    "route": name,
                    "in_flight": shadows.in_flight(),
                    "max_in_flight": shadows.max_in_flight(),
                    "report": report,
                    "mismatches": mismatches,
                }),
            )
        }
        (&Method::PATCH | &Method::PUT, ["routes", name]) => {
            let change: PolicyChange = match serde_json::from_slice(&body) {
                Ok(change) => change,
                Err(err) => {
                    crate::metrics::route_change("change", "refused");
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "bad route change: {err}; send {{\"primary\": \"blue\"|\"green\", \"writes\": \"blue_only\"|\"dual\"|\"green_only\", \"green_percent\": 0..100}}"
                        ),
                    );
                }
            };
            let waiting = admin.proxy.replay.log.find(name).map_or(0, |q| q.records());
            let flips = router
                .load()
                .get(name)
                .zip(change.primary)
                .is_some_and(|(route, primary)| route.policy.primary != primary);
            if flips && waiting > 0 {
                crate::metrics::route_change("change", "refused");
                return error(
                    StatusCode::CONFLICT,
                    &format!(
                        "route `{name}`: {waiting} writes wait in the replay log for the secondary; it would serve reads without them. Fix: POST /routes/{name}/replay/drain first"
                    ),
                );
            }
            changed(
                "change",
                router.change(name, change).map_err(refusal),
                Some(name),
            )
        }
        (&Method::POST, ["rollback"]) => {
            changed("rollback", router.rollback().map_err(refusal), None)
        }
        (&Method::POST, ["reload"]) => changed(
            "reload",
            admin.reload().map_err(|e| (StatusCode::BAD_REQUEST, e)),
            None,
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no admin endpoint `{method} /{}`", segments.join("/")),
        ),
    }
}

/// The replay log's endpoints: status of every route's log, and pause,
/// resume and drain of one. `None` for any other path.
async fn replay_api(
    admin: &Arc<Admin>,
    method: &Method,
    segments: &[&str],
    uri: &hyper::Uri,
) -> Option<Response<ProxyBody>> {
    let replay = &admin.proxy.replay;
    let response = match (method, segments) {
        (&Method::GET, ["replay"]) => {
            let routes: Vec<Value> = replay
                .log
                .queues()
                .iter()
                .map(|q| replay_status(q))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({ "routes": routes, "disk_bytes": replay.log.disk_space() }),
            )
        }
        (&Method::POST, ["routes", name, "replay", action]) => {
            if admin.proxy.router.load().get(name).is_none()
                && replay.log.find(name).is_none_or(|q| q.records() == 0)
            {
                return Some(error(
                    StatusCode::NOT_FOUND,
                    &format!("no route for collection `{name}`"),
                ));
            }
            let queue = replay.queue(name);
            match *action {
                "pause" => queue.set_paused(true),
                "resume" => queue.set_paused(false),
                "drain" => {
                    let timeout = uri
                        .query()
                        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("timeout_s=")))
                        .and_then(|t| t.parse::<f64>().ok())
                        .filter(|t| t.is_finite() && *t >= 0.0)
                        .unwrap_or(30.0);
                    if !replay
                        .drain(name, std::time::Duration::from_secs_f64(timeout))
                        .await
                    {
                        return Some(json_response(
                            StatusCode::GATEWAY_TIMEOUT,
                            &json!({
                                "status": { "error": format!("route `{name}`: the replay log did not empty within {timeout} s") },
                                "replay": replay_status(&queue),
                            }),
                        ));
                    }
                }
                other => {
                    return Some(error(
                        StatusCode::NOT_FOUND,
                        &format!("no replay action `{other}`; use pause, resume or drain"),
                    ));
                }
            }
            tracing::info!(route = %name, action, "replay log");
            json_response(StatusCode::OK, &json!({ "replay": replay_status(&queue) }))
        }
        _ => return None,
    };
    Some(response)
}

fn replay_status(queue: &crate::replay_log::RouteQueue) -> Value {
    json!({
        "route": queue.route,
        "records": queue.records(),
        "bytes": queue.bytes(),
        "oldest_age_seconds": queue.oldest_age().as_secs_f64(),
        "paused": queue.paused(),
        "last_error": *queue.last_error.lock(),
    })
}

fn refusal(err: ChangeError) -> (StatusCode, String) {
    let status = match err {
        ChangeError::UnknownRoute(_) => StatusCode::NOT_FOUND,
        ChangeError::Refused(_) => StatusCode::BAD_REQUEST,
        ChangeError::State { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, err.to_string())
}

fn changed(
    action: &'static str,
    result: Result<Arc<RoutingTable>, (StatusCode, String)>,
    route: Option<&str>,
) -> Response<ProxyBody> {
    match result {
        Ok(table) => {
            crate::metrics::route_change(action, "applied");
            match route.and_then(|name| table.get(name)) {
                Some(route) => json_response(
                    StatusCode::OK,
                    &json!({ "version": table.version, "route": route }),
                ),
                None => json_response(StatusCode::OK, &table_json(&table)),
            }
        }
        Err((status, message)) => {
            crate::metrics::route_change(action, "refused");
            error(status, &message)
        }
    }
}

fn table_json(table: &RoutingTable) -> Value {
    json!({ "version": table.version, "routes": table.routes.values().collect::<Vec<_>>() })
}

async fn readyz(admin: &Admin) -> Response<ProxyBody> {
    let results = admin.proxy.upstream_health().await;
    let ready = results.iter().all(|(_, up)| *up);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let upstreams: serde_json::Map<String, Value> = results
        .into_iter()
        .map(|(name, up)| (name, json!(up)))
        .collect();
    json_response(status, &json!({ "ready": ready, "upstreams": upstreams }))
}

/// Checks the bearer token; the error says what was wrong with it.
fn authorize(admin: &Admin, request: &Request<Incoming>) -> Result<(), &'static str> {
    let Some(token) = &admin.token else {
        return Ok(());
    };
    let given = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err("wrong admin token"),
        None => Err("the admin API needs `authorization: Bearer <token>`"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(full(body))
        .expect("static response parts")
}

fn json_response(status: StatusCode, value: &Value) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(
            serde_json::to_vec(value).expect("JSON values serialize"),
        ))
        .expect("static response parts")
}

fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json_response(status, &json!({ "status": { "error": message } }))
}
