//! cutover's TOML config: parsed, then checked whole, so that a wrong config
//! is refused at start with the line and the fix, never half-applied.
//! `config/cutover.example.toml` shows every option.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::embedder::{EmbedApi, EmbedSpec};
use crate::replay_log::Fsync;
use crate::routing::{ReadMode, SecondaryFailure, Side, WritePolicy};
use crate::transform::Transform;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Listen,
    /// Where admin changes to routes are kept across restarts.
    #[serde(default = "default_state_file")]
    pub state_file: PathBuf,
    pub default_upstream: Spanned<String>,
    pub upstreams: BTreeMap<String, Spanned<UpstreamConfig>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteConfig>>,
    #[serde(default)]
    pub replay: ReplayConfig,
    #[serde(default)]
    pub shadow: ShadowConfig,
}

/// Where and how durably secondary writes wait to be replayed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// Default: `replay/` beside the state file.
    pub dir: Option<PathBuf>,
    #[serde(default)]
    pub fsync: Fsync,
    /// Under `fsync = "interval"`, how often the log is written to disk.
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
}

fn default_fsync_interval_ms() -> u64 {
    100
}

fn default_state_file() -> PathBuf {
    PathBuf::from("./data/cutover-state.json")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub rest: SocketAddr,
    pub grpc: SocketAddr,
    pub admin: Spanned<SocketAddr>,
    /// Environment variable holding the admin bearer token.
    pub admin_token_env: Option<String>,
    /// File holding the admin bearer token.
    pub admin_token_file: Option<PathBuf>,
    /// Serve the admin API without a token: only on a loopback address.
    pub allow_unauthenticated_admin: Option<Spanned<bool>>,
    /// On stop, how long calls in flight get to finish before the
    /// connections still open are closed under them.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

fn default_shutdown_grace_ms() -> u64 {
    30_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// An embedded upstream: the real Qdrant engine in-process, data in this directory.
    pub embedded: Option<PathBuf>,
    pub rest: Option<String>,
    pub grpc: Option<String>,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<PathBuf>,
    /// What to do with the client's own `api-key` / `authorization`.
    pub client_api_key: Option<ClientApiKey>,
    /// TLS to this upstream: on with `https://` URLs. Set it to say so
    /// explicitly; it must agree with the URLs.
    pub tls: Option<bool>,
    /// A PEM file of CA certificates to trust beside the system's.
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle_per_host: usize,
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_pool_max_idle() -> usize {
    64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientApiKey {
    /// Forward the client's key as it came.
    Pass,
    /// Drop the client's key and send the upstream's configured one.
    Replace,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub collection: String,
    pub blue: Spanned<TargetConfig>,
    pub green: Spanned<TargetConfig>,
    pub writes: Option<Spanned<WritePolicy>>,
    #[serde(default)]
    pub primary: Side,
    pub on_secondary_failure: Option<SecondaryFailure>,
    /// `wait` on the secondary of a dual write; unset, as the client asked.
    pub secondary_wait: Option<bool>,
    /// How long a dual write waits for its secondary; past it, the write is
    /// replayed later (or, under `fail`, is an error).
    #[serde(default = "default_secondary_timeout_ms")]
    pub secondary_timeout_ms: u64,
    /// How searches, queries and recommendations are served.
    pub reads: Option<Spanned<ReadsConfig>>,
    /// How green's copy of a write is made.
    pub transform: Option<Spanned<TransformConfig>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransformKind {
    Same,
    Named,
    Embed,
}

/// `transform = { kind = "same" | "named" | "embed", ... }`; the rest is for `embed`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    pub kind: TransformKind,
    /// The payload field whose text is embedded.
    pub text_field: Option<String>,
    /// The embedding endpoint, e.g. `http://tei:8080/embed`.
    pub url: Option<String>,
    #[serde(default = "default_embed_api")]
    pub api: EmbedApi,
    pub model: Option<String>,
    /// Green's vector name; unset for its unnamed vector.
    pub vector: Option<String>,
    #[serde(default = "default_embed_batch")]
    pub batch_size: usize,
    #[serde(default = "default_embed_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_embed_retries")]
    pub retries: u32,
}

fn default_embed_api() -> EmbedApi {
    EmbedApi::Openai
}
fn default_embed_batch() -> usize {
    32
}
fn default_embed_timeout_ms() -> u64 {
    10_000
}
fn default_embed_retries() -> u32 {
    2
}

impl TransformConfig {
    pub fn to_transform(&self) -> Result<Transform, String> {
        Ok(match self.kind {
            TransformKind::Same => Transform::Same,
            TransformKind::Named => Transform::Named,
            TransformKind::Embed => {
                let (Some(url), Some(text_field)) = (&self.url, &self.text_field) else {
                    return Err("transform `embed` needs `url` (the embedding endpoint) and `text_field` (the payload field to embed)".into());
                };
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "transform url `{url}` is not an http:// or https:// URL"
                    ));
                }
                if self.batch_size == 0 {
                    return Err("transform batch_size is 0; give it at least 1".into());
                }
                Transform::Embed(EmbedSpec {
                    url: url.clone(),
                    api: self.api,
                    model: self.model.clone(),
                    text_field: text_field.clone(),
                    vector: self.vector.clone(),
                    batch_size: self.batch_size,
                    timeout_ms: self.timeout_ms,
                    retries: self.retries,
                })
            }
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadsConfig {
    #[serde(default)]
    pub mode: ReadMode,
    /// The share of reads green serves, in percent.
    #[serde(default)]
    pub green_percent: f64,
    /// `header:NAME`, `body` or `random`.
    #[serde(default = "default_routing_key")]
    pub key: String,
    /// A read green fails is served by blue (counted).
    #[serde(default = "yes")]
    pub fallback: bool,
    /// Routing-key values always sent to green (split, shadow, fuse), at any share.
    #[serde(default)]
    pub green_keys: Vec<String>,
    /// Honour a client's `x-cutover-read-side: blue|green` header.
    #[serde(default)]
    pub allow_force_side: bool,
    /// Fuse: RRF's k (ranks counted from 1).
    #[serde(default = "default_rrf_k")]
    pub rrf_k: f64,
    /// Fuse: the weight of blue's ranking.
    #[serde(default = "one")]
    pub blue_weight: f64,
    /// Fuse: the weight of green's ranking.
    #[serde(default = "one")]
    pub green_weight: f64,
    /// Shadow: the percentage of shadowed reads whose primary is asked twice,
    /// to measure the primary's own (ANN) disagreement with itself.
    #[serde(default = "default_baseline_percent")]
    pub baseline_percent: f64,
    /// How blue's text (Document) queries are embedded; unset, blue gets them
    /// as sent. Green's are embedded with the route's `embed` transform.
    pub blue_embedder: Option<QueryEmbedderConfig>,
}

/// An embedding service for queries: `{ url, api, model }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryEmbedderConfig {
    pub url: String,
    #[serde(default = "default_embed_api")]
    pub api: EmbedApi,
    pub model: Option<String>,
    #[serde(default = "default_embed_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_embed_retries")]
    pub retries: u32,
}

impl QueryEmbedderConfig {
    pub fn to_spec(&self) -> EmbedSpec {
        EmbedSpec {
            url: self.url.clone(),
            api: self.api,
            model: self.model.clone(),
            text_field: String::new(),
            vector: None,
            batch_size: default_embed_batch(),
            timeout_ms: self.timeout_ms,
            retries: self.retries,
        }
    }
}

/// Shadow reads, for every route: how many may be in flight, how large a
/// request may be mirrored, and where mismatches are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Mirrored reads in flight at once; past it a shadow is dropped (counted).
    #[serde(default = "default_shadow_in_flight")]
    pub max_in_flight: usize,
    /// A request larger than this is not mirrored (counted).
    #[serde(default = "default_shadow_body")]
    pub max_body_bytes: usize,
    /// A side's answer larger than this is not compared (counted).
    #[serde(default = "default_shadow_answer")]
    pub max_answer_bytes: usize,
    /// The most recent mismatches the admin API serves.
    #[serde(default = "default_shadow_sample")]
    pub sample_size: usize,
    /// A JSONL file every mismatch is appended to, while under `mismatch_log_max_bytes`.
    pub mismatch_log: Option<PathBuf>,
    #[serde(default = "default_mismatch_log_max")]
    pub mismatch_log_max_bytes: u64,
    /// The mirror thread's CPU priority, 0 (the process's own) to 19 (the
    /// lowest: mirrored reads run only on CPU nothing else wants).
    #[serde(default = "default_shadow_nice", deserialize_with = "nice_level")]
    pub nice: i32,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

fn default_shadow_in_flight() -> usize {
    64
}
fn default_shadow_body() -> usize {
    1024 * 1024
}
fn default_shadow_answer() -> usize {
    16 * 1024 * 1024
}
fn default_shadow_sample() -> usize {
    100
}
fn default_shadow_nice() -> i32 {
    19
}

/// A `nice` a process may take without privilege: 0 to 19.
fn nice_level<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    let nice = i32::deserialize(deserializer)?;
    if (0..=19).contains(&nice) {
        Ok(nice)
    } else {
        Err(serde::de::Error::custom(format!(
            "nice {nice} is out of range; fix: 0 (the process's own priority) to 19 (the lowest)"
        )))
    }
}
fn default_mismatch_log_max() -> u64 {
    256 * 1024 * 1024
}
fn default_rrf_k() -> f64 {
    60.0
}
fn one() -> f64 {
    1.0
}
fn default_baseline_percent() -> f64 {
    5.0
}

impl Default for ReadsConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

fn default_secondary_timeout_ms() -> u64 {
    1_000
}

fn default_routing_key() -> String {
    "random".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub upstream: String,
    pub collection: String,
}

/// A config the proxy refuses, with where and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
}

/// An upstream, resolved: where it is and how to authenticate to it.
#[derive(Debug, Clone)]
pub enum UpstreamSpec {
    Embedded(PathBuf),
    Remote(RemoteSpec),
}

#[derive(Debug, Clone)]
pub struct RemoteSpec {
    pub rest: String,
    pub grpc: String,
    pub ca_file: Option<PathBuf>,
    pub api_key: Option<String>,
    pub client_api_key: ClientApiKey,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let invalid = |offset: usize, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, offset),
            message,
        };
        let config: Config = toml::from_str(text).map_err(|err| {
            let offset = err.span().map(|s| s.start).unwrap_or(0);
            invalid(offset, err.message().to_owned())
        })?;
        config
            .check()
            .map_err(|(offset, message)| invalid(offset, message))?;
        Ok(config)
    }

    /// Checks what parsing cannot: names resolve, routes make sense, admin is protected.
    fn check(&self) -> Result<(), (usize, String)> {
        let known = || {
            self.upstreams
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.upstreams.contains_key(self.default_upstream.get_ref()) {
            return Err((
                self.default_upstream.span().start,
                format!(
                    "default_upstream `{}` is not an upstream; fix: name one of [{}]",
                    self.default_upstream.get_ref(),
                    known()
                ),
            ));
        }
        for (name, upstream) in &self.upstreams {
            let at = upstream.span().start;
            let u = upstream.get_ref();
            match (&u.embedded, &u.rest, &u.grpc) {
                (Some(_), None, None) => {}
                (None, Some(rest), Some(grpc)) => {
                    for url in [rest, grpc] {
                        if !(url.starts_with("http://") || url.starts_with("https://")) {
                            return Err((
                                at,
                                format!(
                                    "upstream `{name}`: `{url}` is not a URL; fix: write it as http://host:port or https://host:port"
                                ),
                            ));
                        }
                    }
                    let https = (rest.starts_with("https://"), grpc.starts_with("https://"));
                    if https.0 != https.1 {
                        return Err((
                            at,
                            format!(
                                "upstream `{name}`: one URL is https:// and the other is not; fix: give both the same scheme"
                            ),
                        ));
                    }
                    if u.tls.is_some_and(|tls| tls != https.0) {
                        return Err((
                            at,
                            format!(
                                "upstream `{name}`: `tls` says {} but the URLs are {}; fix: make them agree",
                                u.tls.unwrap_or_default(),
                                if https.0 { "https://" } else { "http://" }
                            ),
                        ));
                    }
                    if u.ca_file.is_some() && !https.0 {
                        return Err((
                            at,
                            format!(
                                "upstream `{name}`: ca_file is set but the URLs are http://; fix: use https:// URLs or drop ca_file"
                            ),
                        ));
                    }
                    if u.api_key_env.is_some() && u.api_key_file.is_some() {
                        return Err((
                            at,
                            format!(
                                "upstream `{name}`: both api_key_env and api_key_file are set; fix: keep one"
                            ),
                        ));
                    }
                }
                _ => {
                    return Err((
                        at,
                        format!(
                            "upstream `{name}` needs either `embedded = \"DIR\"` or both `rest` and `grpc` URLs; fix: give one of the two forms"
                        ),
                    ));
                }
            }
        }
        let mut seen = BTreeMap::new();
        for route in &self.routes {
            let at = route.span().start;
            let r = route.get_ref();
            if let Some(previous) = seen.insert(r.collection.clone(), at) {
                let _ = previous;
                return Err((
                    at,
                    format!(
                        "route `{}` is declared twice; fix: keep one [[routes]] entry per collection",
                        r.collection
                    ),
                ));
            }
            for (side, target) in [("blue", &r.blue), ("green", &r.green)] {
                let t = target.get_ref();
                if !self.upstreams.contains_key(&t.upstream) {
                    return Err((
                        target.span().start,
                        format!(
                            "route `{}`: {side} names unknown upstream `{}`; fix: name one of [{}]",
                            r.collection,
                            t.upstream,
                            known()
                        ),
                    ));
                }
                if t.collection.is_empty() {
                    return Err((
                        target.span().start,
                        format!(
                            "route `{}`: {side} collection is empty; fix: name the collection on that upstream",
                            r.collection
                        ),
                    ));
                }
            }
            let (blue, green) = (r.blue.get_ref(), r.green.get_ref());
            if blue.upstream == green.upstream && blue.collection == green.collection {
                return Err((
                    at,
                    format!(
                        "route `{}`: blue and green are the same collection `{}` on `{}`; fix: point green at the new collection",
                        r.collection, blue.collection, blue.upstream
                    ),
                ));
            }
            if let Some(transform) = &r.transform {
                transform.get_ref().to_transform().map_err(|e| {
                    (
                        transform.span().start,
                        format!("route `{}`: {e}", r.collection),
                    )
                })?;
            }
            if r.secondary_timeout_ms == 0 {
                return Err((
                    at,
                    format!(
                        "route `{}`: secondary_timeout_ms is 0; fix: give the secondary some time, e.g. 1000",
                        r.collection
                    ),
                ));
            }
        }
        for route in &self.routes {
            let Some(reads) = &route.get_ref().reads else {
                continue;
            };
            let (at, r) = (reads.span().start, reads.get_ref());
            let name = &route.get_ref().collection;
            if !(r.rrf_k > 0.0 && r.blue_weight >= 0.0 && r.green_weight >= 0.0) {
                return Err((
                    at,
                    format!(
                        "route `{name}`: rrf_k must be above 0 and the weights 0 or more; fix: e.g. rrf_k = 60, blue_weight = 1.0, green_weight = 1.0"
                    ),
                ));
            }
            crate::split::basis_points(r.baseline_percent)
                .map_err(|e| (at, format!("route `{name}`: baseline_percent: {e}")))?;
            if let Some(embedder) = &r.blue_embedder
                && !(embedder.url.starts_with("http://") || embedder.url.starts_with("https://"))
            {
                return Err((
                    at,
                    format!(
                        "route `{name}`: blue_embedder url `{}` is not an http:// or https:// URL",
                        embedder.url
                    ),
                ));
            }
            crate::split::basis_points(r.green_percent).map_err(|e| {
                (
                    at,
                    format!("route `{name}`: {e}; fix: set green_percent between 0 and 100"),
                )
            })?;
            r.key
                .parse::<crate::split::RoutingKey>()
                .map_err(|e| (at, format!("route `{name}`: {e}")))?;
        }
        let admin = self.listen.admin.get_ref();
        let has_token =
            self.listen.admin_token_env.is_some() || self.listen.admin_token_file.is_some();
        let unauthenticated = self.listen.allow_unauthenticated_admin.as_ref();
        if !has_token && !unauthenticated.is_some_and(|allow| *allow.get_ref()) {
            return Err((self.listen.admin.span().start, "the admin API needs a bearer token; fix: set listen.admin_token_env or listen.admin_token_file, or, on a loopback admin address only, allow_unauthenticated_admin = true".into()));
        }
        if !has_token && !admin.ip().is_loopback() {
            return Err((
                unauthenticated.map_or(0, |a| a.span().start),
                format!(
                    "allow_unauthenticated_admin is only allowed on a loopback admin address, not {admin}; fix: bind admin to 127.0.0.1 or set a token"
                ),
            ));
        }
        Ok(())
    }

    /// Where the replay log lives: as configured, or `replay/` beside the state file.
    pub fn replay_dir(&self) -> PathBuf {
        self.replay.dir.clone().unwrap_or_else(|| {
            self.state_file
                .parent()
                .unwrap_or(Path::new("."))
                .join("replay")
        })
    }

    /// The admin token, read from where the config says. `None` means none is required.
    pub fn admin_token(&self) -> Result<Option<String>, String> {
        if let Some(var) = &self.listen.admin_token_env {
            return std::env::var(var)
                .map(|t| Some(t.trim().to_owned()))
                .map_err(|_| format!("listen.admin_token_env names `{var}`, which is not set"));
        }
        if let Some(path) = &self.listen.admin_token_file {
            return std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_owned()))
                .map_err(|e| format!("listen.admin_token_file {}: {e}", path.display()));
        }
        Ok(None)
    }

    /// Every upstream resolved, keys read from their env vars or files.
    pub fn upstream_specs(&self) -> Result<BTreeMap<String, UpstreamSpec>, String> {
        self.upstreams
            .iter()
            .map(|(name, u)| {
                let u = u.get_ref();
                let spec = match &u.embedded {
                    Some(dir) => UpstreamSpec::Embedded(dir.clone()),
                    None => {
                        let api_key = match (&u.api_key_env, &u.api_key_file) {
                            (Some(var), _) => Some(std::env::var(var).map_err(|_| {
                                format!(
                                    "upstream `{name}`: api_key_env names `{var}`, which is not set"
                                )
                            })?),
                            (_, Some(path)) => Some(
                                std::fs::read_to_string(path)
                                    .map_err(|e| {
                                        format!(
                                            "upstream `{name}`: api_key_file {}: {e}",
                                            path.display()
                                        )
                                    })?
                                    .trim()
                                    .to_owned(),
                            ),
                            _ => None,
                        };
                        let client_api_key = u.client_api_key.unwrap_or(if api_key.is_some() {
                            ClientApiKey::Replace
                        } else {
                            ClientApiKey::Pass
                        });
                        UpstreamSpec::Remote(RemoteSpec {
                            rest: u.rest.clone().expect("checked"),
                            grpc: u.grpc.clone().expect("checked"),
                            ca_file: u.ca_file.clone(),
                            api_key,
                            client_api_key,
                            connect_timeout: Duration::from_millis(u.connect_timeout_ms),
                            request_timeout: Duration::from_millis(u.request_timeout_ms),
                            pool_max_idle_per_host: u.pool_max_idle_per_host,
                        })
                    }
                };
                Ok((name.clone(), spec))
            })
            .collect()
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
default_upstream = "blue"

[listen]
rest = "127.0.0.1:6333"
grpc = "127.0.0.1:6334"
admin = "127.0.0.1:9900"
admin_token_env = "TOKEN"

[upstreams.blue]
rest = "http://blue:6333"
grpc = "http://blue:6334"

[upstreams.green]
embedded = "./green"

[[routes]]
collection = "docs"
blue = { upstream = "blue", collection = "docs" }
green = { upstream = "green", collection = "docs_v2" }
"#;

    fn refused(text: &str) -> (usize, String) {
        match Config::parse(text, "c.toml") {
            Err(ConfigError::Invalid { line, message, .. }) => (line, message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_good_config_parses() {
        let config = Config::parse(GOOD, "c.toml").unwrap();
        assert_eq!(config.routes.len(), 1);
        assert_eq!(config.default_upstream.get_ref(), "blue");
    }

    #[test]
    fn an_unknown_upstream_names_the_line_and_the_fix() {
        let (line, message) = refused(&GOOD.replace(
            r#"green = { upstream = "green""#,
            r#"green = { upstream = "gren""#,
        ));
        assert_eq!(line, 20);
        assert!(
            message.contains("unknown upstream `gren`")
                && message.contains("fix: name one of [blue, green]"),
            "{message}"
        );
        let (line, message) = refused(&GOOD.replace(
            r#"default_upstream = "blue""#,
            r#"default_upstream = "red""#,
        ));
        assert_eq!(line, 2);
        assert!(message.contains("default_upstream `red`"), "{message}");
    }

    #[test]
    fn a_route_naming_itself_is_refused() {
        let text = GOOD.replace(
            r#"{ upstream = "green", collection = "docs_v2" }"#,
            r#"{ upstream = "blue", collection = "docs" }"#,
        );
        let (line, message) = refused(&text);
        assert_eq!(line, 17, "the [[routes]] entry");
        assert!(
            message.contains("blue and green are the same collection"),
            "{message}"
        );
    }

    #[test]
    fn bad_values_name_their_line() {
        let (line, message) = refused(&GOOD.replace(
            r#"collection = "docs"
blue"#,
            r#"collection = "docs"
writes = "sometimes"
blue"#,
        ));
        assert_eq!(line, 19);
        assert!(message.contains("sometimes"), "{message}");
        let (line, message) =
            refused(&GOOD.replace("[[routes]]", "[[routes]]\nprimary = \"purple\""));
        assert_eq!(line, 18);
        assert!(message.contains("purple"), "{message}");
        let (_, message) = refused(&GOOD.replace(
            "admin_token_env = \"TOKEN\"",
            "admin_token_env = \"TOKEN\"\nsurprise = 1",
        ));
        assert!(message.contains("surprise"), "{message}");
        let text = format!("{GOOD}\n[shadow]\nnice = -5\n");
        let (line, message) = refused(&text);
        assert_eq!(
            line,
            text.lines().position(|l| l == "nice = -5").unwrap() + 1
        );
        assert!(
            message.contains("0 (the process's own priority) to 19"),
            "{message}"
        );
    }

    #[test]
    fn the_admin_api_is_never_open_off_loopback() {
        let no_token = GOOD.replace("admin_token_env = \"TOKEN\"", "");
        let (_, message) = refused(&no_token);
        assert!(message.contains("needs a bearer token"), "{message}");
        let loopback = no_token.replace("[listen]", "[listen]\nallow_unauthenticated_admin = true");
        Config::parse(&loopback, "c.toml").expect("allowed on loopback");
        let exposed = loopback.replace("admin = \"127.0.0.1:9900\"", "admin = \"0.0.0.0:9900\"");
        let (line, message) = refused(&exposed);
        assert_eq!(line, 5);
        assert!(message.contains("only allowed on a loopback"), "{message}");
    }

    #[test]
    fn upstreams_need_one_form_and_one_scheme() {
        let (_, message) = refused(&GOOD.replace("embedded = \"./green\"", ""));
        assert!(message.contains("needs either"), "{message}");
        let (_, message) = refused(&GOOD.replace("http://blue:6333", "https://blue:6333"));
        assert!(message.contains("give both the same scheme"), "{message}");
        let explicit = GOOD.replace(
            "grpc = \"http://blue:6334\"",
            "grpc = \"http://blue:6334\"\ntls = true",
        );
        let (_, message) = refused(&explicit);
        assert!(
            message.contains("`tls` says true but the URLs are http://"),
            "{message}"
        );
        Config::parse(&GOOD.replace("http://blue", "https://blue"), "c.toml")
            .expect("https upstreams");
        let dual = GOOD
            .replace("writes", "x")
            .replace("[[routes]]", "[[routes]]\nwrites = \"dual\"");
        Config::parse(&dual, "c.toml").expect("dual writes, replayed by default");
        let (_, message) =
            refused(&dual.replace("[[routes]]", "[[routes]]\nsecondary_timeout_ms = 0"));
        assert!(message.contains("secondary_timeout_ms is 0"), "{message}");
        let fail = GOOD.replace(
            "[[routes]]",
            "[[routes]]\nwrites = \"dual\"\non_secondary_failure = \"fail\"",
        );
        Config::parse(&fail, "c.toml").expect("dual writes with the fail policy");
    }

    /// The files under config/ are what users copy: each must load as it is.
    #[test]
    fn every_shipped_config_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut loaded = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("config/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                Config::load(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                loaded.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        loaded.sort();
        assert_eq!(
            loaded,
            ["compose.toml", "cutover.example.toml", "quickstart.toml"]
        );
    }
}
