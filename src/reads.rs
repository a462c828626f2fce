//! Routed reads: searches, recommendations, discoveries and queries (one,
//! batch or groups) on a route, served per its read mode.
//!
//! 1. The routing key (header, payload field in the filter, body, random)
//!    and the route's share decide: one side serves it (`primary`, or green
//!    for a `split`), the primary serves it and the secondary is shadowed,
//!    or both answer and the answers are fused. A client's
//!    `x-cutover-read-side` header forces a side where the route allows it.
//! 2. Each side's copy is shaped for its collection: text (Document)
//!    queries embedded with that side's embedder; under `fuse`, each side
//!    asked for the whole page from offset 0. A raw query vector that does
//!    not fit green's collection keeps green out of the read (counted).
//! 3. Sent: a split read green fails is served by blue (counted); a fused
//!    read one side fails is served by the other (counted); a shadow goes
//!    off the client's path (`shadow.rs`), where the secondary's copy is
//!    shaped: the client's read waits on no decoding it does not need.

use std::sync::Arc;

use bytes::Bytes;
use hyper::http::request::Parts;
use hyper::{HeaderMap, Response};

use crate::embedder::EmbedSpec;
use crate::proxy::{Proxy, Resolved, side_request};
use crate::read_request::{ReadKind, ReadRequest, Window};
use crate::routing::{ReadDecision, ReadMode, Route, Side};
use crate::shadow::{Copies, Uncompared};
use crate::transform::Transform;
use crate::upstream::{Protocol, ProxyBody, UpstreamError};
use crate::whole::{Answer, answer};

/// A request header naming the side (`blue` or `green`) a read must be
/// served by, honoured where the route sets `allow_force_side`.
pub const FORCE_SIDE_HEADER: &str = "x-cutover-read-side";

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The client's request cannot be served as asked.
    #[error("{0}")]
    Refused(String),
    /// The serving side's text query could not be embedded.
    #[error("the query text could not be embedded for {side}: {message}")]
    Embedding { side: &'static str, message: String },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// Why green was kept out of a read.
enum Skip {
    VectorSize,
    Embedding(String),
}

impl Skip {
    fn reason(&self) -> &'static str {
        match self {
            Skip::VectorSize => "vector_size",
            Skip::Embedding(_) => "embedding",
        }
    }
}

/// Serves a routed read; answers the response and the side that served it.
pub async fn serve(
    proxy: &Arc<Proxy>,
    route: &Arc<Route>,
    protocol: Protocol,
    label: &'static str,
    parts: Parts,
    body: Bytes,
) -> Result<(Response<ProxyBody>, Resolved), ReadError> {
    let primary = route.policy.primary;
    let forced = forced_side(&parts.headers, route.reads.allow_force_side)?;
    // Looked inside only where the route needs to, and decoded only where
    // the client's answer waits on it; otherwise sent as it came.
    let kind = needs_decoding(route).then(|| ReadKind::of(label)).flatten();
    let decode = || kind.and_then(|kind| ReadRequest::decode(protocol, kind, &body).ok());
    let mut request = route.reads.key.reads_request().then(decode).flatten();
    let key = route.reads.key.of(&parts.headers, &body, request.as_ref());
    let mut decision = route.read_decision(key.as_deref(), forced);
    crate::metrics::read_decision(
        &route.collection,
        mode_label(route.reads.mode),
        decision.label(forced.is_some()),
    );
    if request.is_none() && decodes_first(route, decision) {
        request = decode();
    }
    let readable = match decision {
        ReadDecision::Shadow => kind.is_some(),
        ReadDecision::Fuse => request.is_some(),
        ReadDecision::Serve { .. } => true,
    };
    if !readable {
        // Not a read cutover can read (undecodable): the primary serves it.
        decision = serve_primary(primary);
    }
    let texts = request
        .as_mut()
        .map(ReadRequest::documents)
        .unwrap_or_default();
    let shaping = Shaping {
        proxy,
        route,
        request: request.as_ref(),
        texts: &texts,
        body: &body,
    };
    let sides = Sides {
        proxy,
        route,
        protocol,
        parts: &parts,
    };

    match decision {
        ReadDecision::Serve { side, fallback } => {
            match shaping.body_for(side, side != primary, false).await {
                Ok(first) => sides.serve(side, first, fallback.then_some(&shaping)).await,
                // A split read the secondary cannot take: the primary serves it.
                Err(skip) if side != primary => sides.without_secondary(&shaping, skip).await,
                Err(skip) => Err(embedding_failed(side)(skip)),
            }
        }
        ReadDecision::Shadow => {
            let kind = kind.expect("a shadowed read has a kind");
            let first = shaping.own_body(primary).await?;
            // Made only if the shadow is admitted, for the mirror task:
            // green's copy is shaped there, off the client's path.
            let read = || ShadowRead {
                proxy: proxy.clone(),
                route: route.clone(),
                protocol,
                kind,
                parts: parts.clone(),
                body: body.clone(),
                request: request.clone(),
                primary_body: first.clone(),
            };
            sides
                .shadow(label, kind, first.clone(), body.len(), read)
                .await
        }
        ReadDecision::Fuse => {
            // Each side is asked for the whole page from offset 0.
            match shaping.body_for(primary.other(), true, true).await {
                Ok(other) => {
                    let first = shaping
                        .body_for(primary, false, true)
                        .await
                        .map_err(embedding_failed(primary))?;
                    let kind = kind.expect("a fused read has a kind");
                    let windows = request.clone().expect("a fused read was decoded").widen();
                    sides.fuse(kind, first, other, &windows).await
                }
                Err(skip) => sides.without_secondary(&shaping, skip).await,
            }
        }
    }
}

fn serve_primary(primary: Side) -> ReadDecision {
    ReadDecision::Serve {
        side: primary,
        fallback: false,
    }
}

fn mode_label(mode: ReadMode) -> &'static str {
    match mode {
        ReadMode::Primary => "primary",
        ReadMode::Split => "split",
        ReadMode::Shadow => "shadow",
        ReadMode::Fuse => "fuse",
    }
}

/// Whether cutover must look inside this route's reads.
fn needs_decoding(route: &Route) -> bool {
    route.reads.mode != ReadMode::Primary
        || matches!(route.transform, Transform::Embed(_))
        || route.reads.blue_embedder.is_some()
}

/// Whether a read so decided is decoded before its answer is asked for: a
/// side on the client's path embeds its text queries, green serves it
/// (its raw vectors are checked against green's sizes first), or both
/// sides are asked for a fusion. A shadow's copy is shaped off the path.
fn decodes_first(route: &Route, decision: ReadDecision) -> bool {
    let primary = route.policy.primary;
    match decision {
        ReadDecision::Serve { side, .. } => side != primary || embedder(route, side).is_some(),
        ReadDecision::Shadow => embedder(route, primary).is_some(),
        ReadDecision::Fuse => true,
    }
}

/// How `side`'s text (Document) queries are embedded; `None`: sent as they are.
fn embedder(route: &Route, side: Side) -> Option<&EmbedSpec> {
    match (side, &route.transform) {
        (Side::Green, Transform::Embed(spec)) => Some(spec),
        (Side::Green, _) => None,
        (Side::Blue, _) => route.reads.blue_embedder.as_ref(),
    }
}

fn forced_side(headers: &HeaderMap, allowed: bool) -> Result<Option<Side>, ReadError> {
    let Some(value) = headers.get(FORCE_SIDE_HEADER).filter(|_| allowed) else {
        return Ok(None);
    };
    match value.as_bytes() {
        b"blue" => Ok(Some(Side::Blue)),
        b"green" => Ok(Some(Side::Green)),
        other => Err(ReadError::Refused(format!(
            "{FORCE_SIDE_HEADER} must be `blue` or `green`, not `{}`",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// The secondary kept out of a read (counted): its copy could not be made.
fn skip_secondary(route: &Route, skip: &Skip) {
    let side = route.policy.primary.other().as_str();
    if let Skip::Embedding(err) = skip {
        tracing::warn!(route = %route.collection, side, %err, "the secondary's query text could not be embedded; it skips this read");
    }
    crate::metrics::read_skipped(&route.collection, side, skip.reason());
}

fn embedding_failed(side: Side) -> impl Fn(Skip) -> ReadError {
    move |skip| match skip {
        Skip::Embedding(message) => ReadError::Embedding {
            side: side.as_str(),
            message,
        },
        Skip::VectorSize => unreachable!("a side's own vector size is not checked"),
    }
}

/// What each side's copy of a read is made from.
struct Shaping<'a> {
    proxy: &'a Proxy,
    route: &'a Route,
    request: Option<&'a ReadRequest>,
    /// Its text queries.
    texts: &'a [String],
    body: &'a Bytes,
}

impl Shaping<'_> {
    /// `side`'s body: its text queries embedded by its embedder; with
    /// `check_size` on green, its raw vectors checked against green's sizes;
    /// with `widen`, asking for the whole page from offset 0.
    async fn body_for(&self, side: Side, check_size: bool, widen: bool) -> Result<Bytes, Skip> {
        let Some(request) = self.request else {
            return Ok(self.body.clone());
        };
        if check_size && side == Side::Green && !self.fits_green(request) {
            return Err(Skip::VectorSize);
        }
        let embedder = embedder(self.route, side).filter(|_| !self.texts.is_empty());
        if embedder.is_none() && !widen {
            return Ok(self.body.clone());
        }
        let mut shaped = request.clone();
        if let Some(spec) = embedder {
            let vectors = crate::embedder::embed(spec, self.texts)
                .await
                .map_err(Skip::Embedding)?;
            shaped.embed_documents(vectors);
        }
        if widen {
            shaped.widen();
        }
        Ok(shaped.encode())
    }

    /// `side`'s body as it serves the read itself: no size check, no widening.
    async fn own_body(&self, side: Side) -> Result<Bytes, ReadError> {
        self.body_for(side, false, false)
            .await
            .map_err(embedding_failed(side))
    }

    fn fits_green(&self, request: &ReadRequest) -> bool {
        let schemas = self.proxy.schemas.load();
        let green = &self.route.green;
        let Some(schema) = schemas.get(&(green.upstream.clone(), green.collection.clone())) else {
            return true;
        };
        request.raw_vectors().iter().all(|vector| {
            schema
                .0
                .get(&vector.name)
                .is_none_or(|size| *size as usize == vector.size)
        })
    }
}

/// Sending a read's copies to the route's sides.
struct Sides<'a> {
    proxy: &'a Proxy,
    route: &'a Route,
    protocol: Protocol,
    parts: &'a Parts,
}

impl Sides<'_> {
    fn request(
        &self,
        side: Side,
        body: Bytes,
    ) -> Result<(Resolved, hyper::Request<ProxyBody>), ReadError> {
        let resolved = self.proxy.resolve_side(self.route, side);
        let collection = resolved.names.physical.as_deref().expect("a routed side");
        let request =
            side_request(self.protocol, self.parts, collection, body).ok_or_else(|| {
                ReadError::Refused(
                    "cutover could not rewrite the collection name in this request".into(),
                )
            })?;
        Ok((resolved, request))
    }

    async fn answer(&self, side: Side, body: Bytes) -> Result<(Answer, Resolved), ReadError> {
        let (resolved, request) = self.request(side, body)?;
        let (answer, latency) = answer(&resolved.upstream, self.protocol, request).await?;
        crate::metrics::upstream_latency(self.protocol, Some(side), latency);
        Ok((answer, resolved))
    }

    /// One side serves it; with a `fallback`, blue serves it if that side
    /// fails (blue's copy shaped only then: its text embedded, say).
    async fn serve(
        &self,
        side: Side,
        body: Bytes,
        fallback: Option<&Shaping<'_>>,
    ) -> Result<(Response<ProxyBody>, Resolved), ReadError> {
        let Some(fallback) = fallback else {
            let (resolved, request) = self.request(side, body)?;
            let (response, latency) = resolved.upstream.send(self.protocol, request).await?;
            crate::metrics::upstream_latency(self.protocol, Some(side), latency);
            return Ok((response, resolved));
        };
        let route = &self.route.collection;
        match self.answer(side, body).await {
            Ok((answer, resolved)) if answer.succeeded(self.protocol) => {
                return Ok((answer.into_response(), resolved));
            }
            Ok((answer, _)) => {
                tracing::warn!(%route, failure = %answer.failure(self.protocol), "read failed on green; blue serves it")
            }
            Err(err) => tracing::warn!(%route, %err, "read failed on green; blue serves it"),
        }
        crate::metrics::read_fallback(self.protocol.as_str(), route);
        let body = fallback.own_body(Side::Blue).await?;
        Box::pin(self.serve(Side::Blue, body, None)).await
    }

    /// The secondary kept out of the read (counted): the primary serves it.
    async fn without_secondary(
        &self,
        shaping: &Shaping<'_>,
        skip: Skip,
    ) -> Result<(Response<ProxyBody>, Resolved), ReadError> {
        skip_secondary(self.route, &skip);
        let primary = self.route.policy.primary;
        self.serve(primary, shaping.own_body(primary).await?, None)
            .await
    }

    /// The primary serves it; if there is room, the read goes to the mirror
    /// task, which shapes the secondary's copy, sends it and compares.
    async fn shadow(
        &self,
        method: &'static str,
        kind: ReadKind,
        body: Bytes,
        client_bytes: usize,
        read: impl FnOnce() -> ShadowRead,
    ) -> Result<(Response<ProxyBody>, Resolved), ReadError> {
        let primary = self.route.policy.primary;
        let (resolved, request) = self.request(primary, body)?;
        let (answer, latency) = answer(&resolved.upstream, self.protocol, request).await?;
        crate::metrics::upstream_latency(self.protocol, Some(primary), latency);
        let shadows = &self.proxy.shadows;
        let route = &self.route.collection;
        if answer.succeeded(self.protocol)
            && let Some(permit) = shadows.admit(route, client_bytes)
        {
            let mirror = crate::shadow::Mirror {
                route: route.clone(),
                protocol: self.protocol,
                method,
                kind,
                primary,
                primary_answer: answer.body().clone(),
                primary_latency: latency,
            };
            shadows.spawn(permit, mirror, read().copies());
        }
        Ok((answer.into_response(), resolved))
    }

    /// Both sides answer, concurrently; the client gets their fusion, or
    /// the answer of the side that did not fail.
    async fn fuse(
        &self,
        kind: ReadKind,
        primary_body: Bytes,
        secondary_body: Bytes,
        windows: &[Window],
    ) -> Result<(Response<ProxyBody>, Resolved), ReadError> {
        let primary = self.route.policy.primary;
        let (first, second) = tokio::join!(
            self.answer(primary, primary_body),
            self.answer(primary.other(), secondary_body)
        );
        let protocol = self.protocol;
        let route = &self.route.collection;
        let rrf = &self.route.reads.rrf;
        let ok = |r: &Result<(Answer, Resolved), ReadError>| {
            r.as_ref().is_ok_and(|(a, _)| a.succeeded(protocol))
        };
        let degraded = |reason| crate::metrics::fuse_degraded(protocol.as_str(), route, reason);
        match (ok(&first), ok(&second)) {
            (true, true) => {
                let ((mine, resolved), (theirs, _)) = (first?, second?);
                let fused = crate::read_answer::fuse(
                    protocol,
                    kind,
                    mine.body(),
                    Some(theirs.body()),
                    windows,
                    rrf,
                    primary,
                );
                match fused {
                    Ok(body) => Ok((
                        mine.with_body(body).into_response(),
                        Resolved {
                            fused: true,
                            ..resolved
                        },
                    )),
                    Err(err) => {
                        tracing::warn!(%route, %err, "answers could not be fused; the primary's is served");
                        degraded("unfusable");
                        Ok(cut(mine, resolved, windows, rrf, protocol, kind))
                    }
                }
            }
            (false, true) => {
                degraded(primary.as_str());
                let (answer, resolved) = second?;
                Ok(cut(answer, resolved, windows, rrf, protocol, kind))
            }
            (true, false) => {
                degraded(primary.other().as_str());
                let (answer, resolved) = first?;
                Ok(cut(answer, resolved, windows, rrf, protocol, kind))
            }
            (false, false) => {
                let (answer, resolved) = first?;
                Ok((answer.into_response(), resolved))
            }
        }
    }
}

/// A shadowed read as the mirror task gets it, to shape its copies from.
struct ShadowRead {
    proxy: Arc<Proxy>,
    route: Arc<Route>,
    protocol: Protocol,
    kind: ReadKind,
    parts: Parts,
    /// As the client sent it, and decoded if its own path needed that.
    body: Bytes,
    request: Option<ReadRequest>,
    /// What the primary was sent: sent again for the noise baseline.
    primary_body: Bytes,
}

impl ShadowRead {
    /// The secondary's copy (its text queries embedded, its raw vectors
    /// checked against green's sizes) and, for a sampled share, the
    /// primary's second; or why the secondary gets none.
    async fn copies(self) -> Result<Copies, Uncompared> {
        let ShadowRead {
            proxy,
            route,
            protocol,
            kind,
            parts,
            body,
            request,
            primary_body,
        } = self;
        let mut request = match request {
            Some(request) => request,
            None => ReadRequest::decode(protocol, kind, &body).map_err(|e| ("undecodable", e))?,
        };
        let texts = request.documents();
        let shaping = Shaping {
            proxy: &proxy,
            route: &route,
            request: Some(&request),
            texts: &texts,
            body: &body,
        };
        let primary = route.policy.primary;
        let copy = match shaping.body_for(primary.other(), true, false).await {
            Ok(copy) => copy,
            Err(skip) => {
                skip_secondary(&route, &skip);
                return Err((
                    skip.reason(),
                    "the secondary's copy could not be made".into(),
                ));
            }
        };
        // Admitted by the client's request size; a copy its embedding grew is held to the same bound.
        let most = proxy.shadows.max_body_bytes();
        if copy.len() > most {
            let message = format!("the secondary's copy is {} bytes, over {most}", copy.len());
            return Err(("too_large", message));
        }
        let sides = Sides {
            proxy: &proxy,
            route: &route,
            protocol,
            parts: &parts,
        };
        let unrenamable = |e: ReadError| ("unrenamable", e.to_string());
        let (secondary, copy) = sides.request(primary.other(), copy).map_err(unrenamable)?;
        let baseline = crate::split::sampled(route.reads.baseline_basis_points)
            .then(|| sides.request(primary, primary_body))
            .transpose()
            .map_err(unrenamable)?
            .map(|(resolved, request)| (resolved.upstream, request));
        Ok(Copies {
            secondary: (secondary.upstream, copy),
            baseline,
            asked: request,
        })
    }
}

/// One side's answer to a widened request, cut back to the asked window:
/// its fusion with nothing (its order kept, its scores RRF's).
fn cut(
    answer: Answer,
    resolved: Resolved,
    windows: &[Window],
    rrf: &crate::ranking::Rrf,
    protocol: Protocol,
    kind: ReadKind,
) -> (Response<ProxyBody>, Resolved) {
    let side = resolved.side.expect("a routed side");
    match crate::read_answer::fuse(protocol, kind, answer.body(), None, windows, rrf, side) {
        Ok(body) => (answer.with_body(body).into_response(), resolved),
        Err(_) => (answer.into_response(), resolved),
    }
}
