//! What both protocol handlers share: the routing table, the upstreams, the
//! resolution of a request to one side, and the marks and name rewriting
//! on the way back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue};

use crate::embedder::EmbedSpec;

use crate::replay_log::RouteQueue;
use crate::replayer::Replay;
use crate::routing::{Operation, Route, Router, RoutingTable, SecondaryFailure, Side};
use crate::transform::{Refusal, Schema, Schemas, Shaping};
use crate::upstream::{Protocol, Upstream};

/// A target whose vector sizes could not be read is read again, for a
/// write that needs them, at most this often.
const SCHEMA_RETRY: Duration = Duration::from_secs(5);

/// Response header: the routing version the request was decided by.
pub const VERSION_HEADER: &str = "x-cutover-routing-version";
/// Response header: the side that answered a routed request.
pub const SIDE_HEADER: &str = "x-cutover-side";

pub struct Proxy {
    pub router: Router,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    pub default: Arc<Upstream>,
    pub replay: Arc<Replay>,
    /// Each route target's vector sizes, read at start and on reload, and
    /// for a target not known yet, on the first write that needs it.
    pub schemas: ArcSwap<Schemas>,
    /// When each target missing from `schemas` was last read for a write.
    pub schema_reads: std::sync::Mutex<BTreeMap<(String, String), Instant>>,
    pub shadows: Arc<crate::shadow::Shadows>,
}

/// A routed write, shaped for its sides.
pub struct ShapedWrite {
    pub primary: Bytes,
    /// The secondary's copy (`None`: it gets none) and the embedding it still needs.
    pub secondary: Option<(Bytes, Option<EmbedSpec>)>,
}

/// Why a write was not shaped.
#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    /// It does not fit a side's collection: refused, nothing sent.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Green is primary and its embedding failed: nothing sent.
    #[error("green's embedding failed, nothing was written: {0}")]
    Embedding(String),
}

/// Where one request goes.
pub struct Resolved {
    pub upstream: Arc<Upstream>,
    /// The side, when routed.
    pub side: Option<Side>,
    pub names: Names,
    /// The other side of a dual write.
    pub secondary: Option<OtherSide>,
    /// A read both sides answered, fused.
    pub fused: bool,
}

/// The other side of a request: where it goes and what its collection is called.
pub struct OtherSide {
    pub side: Side,
    pub upstream: Arc<Upstream>,
    pub collection: String,
    /// `wait` to set on the secondary's copy; `None` leaves the client's.
    pub wait: Option<bool>,
    /// How long a dual write waits for this side.
    pub timeout: Duration,
    /// A dual write's secondary under `replay`: its route's log.
    pub replay: Option<Arc<RouteQueue>>,
}

/// A routed request's logical collection and its name on the chosen side.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub route: Option<String>,
    pub physical: Option<String>,
}

impl Proxy {
    /// Reads the vector sizes of every route's targets.
    pub async fn refresh_schemas(&self) {
        let table = self.router.load();
        let targets: std::collections::BTreeSet<(String, String)> = table
            .routes
            .values()
            .flat_map(|r| [&r.blue, &r.green])
            .map(|t| (t.upstream.clone(), t.collection.clone()))
            .collect();
        let reads = targets
            .into_iter()
            .map(|(upstream, collection)| async move {
                let schema = Schema::fetch(&self.upstreams[&upstream], &collection).await;
                schema.map(|schema| ((upstream, collection), schema))
            });
        let schemas: Schemas = futures_util::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect();
        tracing::info!(targets = schemas.len(), "collection vector sizes read");
        self.schemas.store(Arc::new(schemas));
    }

    /// The vector sizes, those of `route`'s targets among them: a target
    /// not known yet (its collection made after cutover started, say) is
    /// read now, unless it was tried within `SCHEMA_RETRY`.
    async fn schemas_for(&self, route: &Route) -> Arc<Schemas> {
        let known = self.schemas.load_full();
        let due: Vec<(String, String)> = [&route.blue, &route.green]
            .into_iter()
            .map(|t| (t.upstream.clone(), t.collection.clone()))
            .filter(|target| !known.contains_key(target))
            .filter(|target| {
                let mut tried = self.schema_reads.lock().expect("not poisoned");
                let now = Instant::now();
                let due = tried
                    .get(target)
                    .is_none_or(|at| now.duration_since(*at) >= SCHEMA_RETRY);
                if due {
                    tried.insert(target.clone(), now);
                }
                due
            })
            .collect();
        if due.is_empty() {
            return known;
        }
        for (upstream, collection) in due {
            let Some(schema) = Schema::fetch(&self.upstreams[&upstream], &collection).await else {
                continue;
            };
            tracing::info!(upstream, collection, "collection vector sizes read");
            self.schemas.rcu(|current| {
                let mut next = Schemas::clone(current);
                next.insert((upstream.clone(), collection.clone()), schema.clone());
                next
            });
        }
        self.schemas.load_full()
    }

    /// Shapes a routed write (`label` is its method) for its sides: each
    /// side's vectors checked and transformed for its collection. `Ok(None)`:
    /// nothing to shape, the body goes as it came.
    pub async fn shape_write(
        &self,
        table: &RoutingTable,
        resolved: &mut Resolved,
        protocol: Protocol,
        label: &str,
        body: &[u8],
    ) -> Result<Option<ShapedWrite>, ShapeError> {
        if !crate::transform::carries_vectors(label) {
            return Ok(None);
        }
        let Some(route) = resolved.names.route.as_deref().and_then(|r| table.get(r)) else {
            return Ok(None);
        };
        if resolved.secondary.is_none() && route.transform == crate::transform::Transform::Same {
            // One side, sent as it came: that side checks the vectors itself
            // and the client gets its own answer, as without cutover.
            return Ok(None);
        }
        let schemas = self.schemas_for(route).await;
        let schema =
            |t: &crate::routing::Target| schemas.get(&(t.upstream.clone(), t.collection.clone()));
        let shaping = Shaping {
            transform: &route.transform,
            blue: schema(&route.blue),
            green: schema(&route.green),
        };
        if !shaping.applies() {
            return Ok(None);
        }
        let shaped = match protocol {
            Protocol::Grpc => shaping.grpc(label, body)?,
            Protocol::Rest => shaping.rest(label, body)?,
        };
        let Some(shaped) = shaped else {
            return Ok(None);
        };
        let primary_side = resolved.side.expect("a routed write has a side");
        let primary = match (shaped.side(primary_side), &shaped.pending) {
            (Some(body), Some(spec)) if primary_side == Side::Green => {
                crate::transform::embed(spec, protocol, body)
                    .await
                    .map_err(ShapeError::Embedding)?
            }
            (Some(body), _) => body.clone(),
            (None, _) => {
                return Err(Refusal(format!(
                    "route `{}`: vector updates cannot be made while green is primary under transform `embed`: green's vectors come from the text",
                    route.collection
                ))
                .into());
            }
        };
        let secondary = resolved.secondary.as_ref().and_then(|other| {
            let pending = (other.side == Side::Green)
                .then(|| shaped.pending.clone())
                .flatten();
            shaped.side(other.side).map(|body| (body.clone(), pending))
        });
        if secondary.is_none() {
            resolved.secondary = None;
        }
        Ok(Some(ShapedWrite { primary, secondary }))
    }

    /// Asks every upstream's health check, concurrently: (name, up).
    pub async fn upstream_health(&self) -> Vec<(String, bool)> {
        let checks = self.upstreams.iter().map(|(name, upstream)| async move {
            let up = upstream.healthy().await;
            crate::metrics::upstream_up(name, up);
            (name.clone(), up)
        });
        futures_util::future::join_all(checks).await
    }

    /// Picks the upstream and the collection name for `collection` under
    /// `table`. A routed query gets its primary here; `reads` decides further.
    pub fn resolve(
        &self,
        table: &RoutingTable,
        collection: Option<&str>,
        operation: Operation,
    ) -> Resolved {
        let Some(route) = collection.and_then(|c| table.get(c)) else {
            return Resolved {
                upstream: self.default.clone(),
                side: None,
                names: Names::default(),
                secondary: None,
                fused: false,
            };
        };
        let side = route.side_for(operation);
        if operation == Operation::CollectionAdmin {
            tracing::info!(
                route = %route.collection,
                side = side.as_str(),
                collection = %route.target(side).collection,
                "collection change on a routed name goes to the primary only"
            );
        }
        let secondary = route.secondary_for(operation).map(|side| {
            let target = route.target(side);
            OtherSide {
                side,
                upstream: self.upstreams[&target.upstream].clone(),
                collection: target.collection.clone(),
                wait: route.secondary_wait,
                timeout: route.secondary_timeout,
                replay: (route.on_secondary_failure == SecondaryFailure::Replay)
                    .then(|| self.replay.queue(&route.collection)),
            }
        });
        Resolved {
            secondary,
            ..self.resolve_side(route, side)
        }
    }

    /// A routed request served by one side of its route.
    pub fn resolve_side(&self, route: &Route, side: Side) -> Resolved {
        let target = route.target(side);
        Resolved {
            upstream: self.upstreams[&target.upstream].clone(),
            side: Some(side),
            names: Names {
                route: Some(route.collection.clone()),
                physical: Some(target.collection.clone()),
            },
            secondary: None,
            fused: false,
        }
    }
}

/// A request for one side: its body (gRPC) or path (REST) naming that
/// side's collection. `None` when a gRPC body's name cannot be rewritten.
pub fn side_request(
    protocol: Protocol,
    parts: &hyper::http::request::Parts,
    collection: &str,
    body: Bytes,
) -> Option<hyper::Request<crate::upstream::ProxyBody>> {
    let (uri, body) = match protocol {
        Protocol::Grpc => (parts.uri.clone(), crate::grpc::rename(&body, collection)?),
        Protocol::Rest => (crate::rest::renamed_uri(&parts.uri, collection), body),
    };
    let mut request = hyper::Request::new(crate::upstream::full(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = parts.headers.clone();
    request.headers_mut().remove(hyper::header::CONTENT_LENGTH);
    Some(request)
}

/// The span of one proxied request; route, side and upstream are recorded
/// once the request is resolved.
pub fn request_span(protocol: &'static str, method: &'static str) -> tracing::Span {
    tracing::info_span!(
        "request",
        protocol,
        method,
        route = tracing::field::Empty,
        side = tracing::field::Empty,
        upstream = tracing::field::Empty,
    )
}

impl Resolved {
    /// Records where the request went on the current request span.
    pub fn record_in_span(&self) {
        let span = tracing::Span::current();
        span.record("route", self.route_label());
        span.record("side", crate::metrics::side_label(self.side));
        span.record("upstream", self.upstream.name.as_str());
    }

    /// Marks a routed response with the version and side that served it.
    pub fn mark(&self, headers: &mut HeaderMap, version: u64) {
        if let Some(side) = self.side {
            let side = if self.fused { "fused" } else { side.as_str() };
            headers.insert(VERSION_HEADER, HeaderValue::from(version));
            headers.insert(SIDE_HEADER, HeaderValue::from_static(side));
        }
    }

    /// The route label for metrics and logs: empty for passthrough.
    pub fn route_label(&self) -> &str {
        self.names.route.as_deref().unwrap_or("")
    }
}

impl Names {
    /// Rewrites the physical collection name back to the logical one in a
    /// message (Qdrant quotes names in backticks).
    pub fn rewrite_message(&self, message: &str) -> Option<String> {
        let (route, physical) = (self.route.as_deref()?, self.physical.as_deref()?);
        if route == physical {
            return None;
        }
        let quoted = format!("`{physical}`");
        message
            .contains(&quoted)
            .then(|| message.replace(&quoted, &format!("`{route}`")))
    }
}
