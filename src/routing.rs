//! The routing table: an immutable snapshot of every route with a version,
//! swapped whole (arc-swap) on an admin change or a reload. A request loads
//! it once and sees that one version to its end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::split::RoutingKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    #[default]
    Blue,
    Green,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Blue => "blue",
            Side::Green => "green",
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Blue => Side::Green,
            Side::Green => Side::Blue,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WritePolicy {
    #[default]
    BlueOnly,
    Dual,
    GreenOnly,
}

/// How a route serves searches, queries, recommendations and discoveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadMode {
    /// The primary serves them all.
    #[default]
    Primary,
    /// Green serves a hash-bucketed share of them (while blue is primary).
    Split,
    /// The primary serves them all; a bucketed share is mirrored to the
    /// secondary off the client's path and the answers compared.
    Shadow,
    /// For a bucketed share, both sides answer and their rankings are fused (RRF).
    Fuse,
}

/// A route's read settings that come from the config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reads {
    pub mode: ReadMode,
    pub key: RoutingKey,
    pub fallback: bool,
    /// Key values always in the share, whatever its size.
    pub green_keys: std::collections::BTreeSet<String>,
    pub allow_force_side: bool,
    pub rrf: crate::ranking::Rrf,
    /// Shadow: the share of mirrored reads whose primary is asked twice.
    pub baseline_basis_points: u16,
    #[serde(skip)]
    pub blue_embedder: Option<crate::embedder::EmbedSpec>,
}

/// How one read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadDecision {
    /// One side answers; with `fallback`, blue steps in if green fails.
    Serve { side: Side, fallback: bool },
    /// The primary answers; the secondary gets a copy, compared off-path.
    Shadow,
    /// Both sides answer; the client gets their fusion.
    Fuse,
}

impl ReadDecision {
    /// A bounded label for metrics.
    pub fn label(self, forced: bool) -> &'static str {
        match (self, forced) {
            (ReadDecision::Shadow, _) => "shadow",
            (ReadDecision::Fuse, _) => "fuse",
            (ReadDecision::Serve { side, .. }, false) => side.as_str(),
            (
                ReadDecision::Serve {
                    side: Side::Blue, ..
                },
                true,
            ) => "forced_blue",
            (
                ReadDecision::Serve {
                    side: Side::Green, ..
                },
                true,
            ) => "forced_green",
        }
    }
}

/// What happens when the secondary side of a dual write fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondaryFailure {
    /// Log the write durably and apply it later, in order.
    #[default]
    Replay,
    /// The client gets an error naming the side.
    Fail,
}

/// An upstream and a collection on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub upstream: String,
    pub collection: String,
}

/// The policies an operator changes at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The side whose answers reads get.
    pub primary: Side,
    pub writes: WritePolicy,
    /// Under `reads.mode = "split"`, the share of reads green serves.
    #[serde(default)]
    pub green_basis_points: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub collection: String,
    pub blue: Target,
    pub green: Target,
    #[serde(flatten)]
    pub policy: Policy,
    pub on_secondary_failure: SecondaryFailure,
    /// `wait` on the secondary of a dual write; `None`: as the client asked.
    pub secondary_wait: Option<bool>,
    /// How long a dual write waits for its secondary.
    #[serde(serialize_with = "millis", rename = "secondary_timeout_ms")]
    pub secondary_timeout: std::time::Duration,
    pub reads: Reads,
    pub transform: crate::transform::Transform,
}

/// What a request does, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Search, query, recommend, discover (and their batches and groups):
    /// the reads a split, shadow or fusion applies to.
    Query,
    /// Other reads (scroll, get, count, facet, info): always the primary.
    Read,
    Write,
    /// Create, update or delete of the collection itself.
    CollectionAdmin,
}

impl Route {
    pub fn target(&self, side: Side) -> &Target {
        match side {
            Side::Blue => &self.blue,
            Side::Green => &self.green,
        }
    }

    /// How a read with this routing key is served; `forced` is a side the
    /// client asked for, honoured when the route allows it.
    pub fn read_decision(&self, key: Option<&[u8]>, forced: Option<Side>) -> ReadDecision {
        let serve = |side| ReadDecision::Serve {
            side,
            fallback: false,
        };
        if let Some(side) = forced.filter(|_| self.reads.allow_force_side) {
            return serve(side);
        }
        let in_share = key.is_some_and(|k| {
            std::str::from_utf8(k).is_ok_and(|k| self.reads.green_keys.contains(k))
                || crate::split::to_green(k, self.policy.green_basis_points)
        });
        match self.reads.mode {
            ReadMode::Split if in_share && self.policy.primary == Side::Blue => {
                ReadDecision::Serve {
                    side: Side::Green,
                    fallback: self.reads.fallback,
                }
            }
            ReadMode::Shadow if in_share => ReadDecision::Shadow,
            ReadMode::Fuse if in_share => ReadDecision::Fuse,
            _ => serve(self.policy.primary),
        }
    }

    /// The other side of a dual write, when this operation is one.
    pub fn secondary_for(&self, operation: Operation) -> Option<Side> {
        (operation == Operation::Write && self.policy.writes == WritePolicy::Dual)
            .then(|| self.policy.primary.other())
    }

    /// The side one request goes to (for a dual write, its primary).
    pub fn side_for(&self, operation: Operation) -> Side {
        match operation {
            Operation::Query | Operation::Read | Operation::CollectionAdmin => self.policy.primary,
            Operation::Write => match self.policy.writes {
                WritePolicy::BlueOnly => Side::Blue,
                WritePolicy::GreenOnly => Side::Green,
                WritePolicy::Dual => self.policy.primary,
            },
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    pub version: u64,
    pub routes: BTreeMap<String, Arc<Route>>,
}

impl RoutingTable {
    pub fn get(&self, collection: &str) -> Option<&Arc<Route>> {
        self.routes.get(collection)
    }

    fn from_config(config: &Config, version: u64) -> RoutingTable {
        let target = |t: &crate::config::TargetConfig| Target {
            upstream: t.upstream.clone(),
            collection: t.collection.clone(),
        };
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let r = r.get_ref();
                let reads = r.reads.as_ref().map(|reads| reads.get_ref());
                let route = Route {
                    collection: r.collection.clone(),
                    blue: target(r.blue.get_ref()),
                    green: target(r.green.get_ref()),
                    policy: Policy {
                        primary: r.primary,
                        writes: r.writes.as_ref().map(|w| *w.get_ref()).unwrap_or_default(),
                        green_basis_points: reads
                            .and_then(|reads| crate::split::basis_points(reads.green_percent).ok())
                            .unwrap_or(0),
                    },
                    on_secondary_failure: r.on_secondary_failure.unwrap_or_default(),
                    secondary_wait: r.secondary_wait,
                    secondary_timeout: std::time::Duration::from_millis(r.secondary_timeout_ms),
                    transform: r
                        .transform
                        .as_ref()
                        .and_then(|t| t.get_ref().to_transform().ok())
                        .unwrap_or_default(),
                    reads: Reads::from_config(reads),
                };
                (r.collection.clone(), Arc::new(route))
            })
            .collect();
        RoutingTable { version, routes }
    }
}

impl Reads {
    fn from_config(reads: Option<&crate::config::ReadsConfig>) -> Reads {
        let defaults = crate::config::ReadsConfig::default();
        let reads = reads.unwrap_or(&defaults);
        Reads {
            mode: reads.mode,
            key: reads.key.parse().unwrap_or(RoutingKey::Random),
            fallback: reads.fallback,
            green_keys: reads.green_keys.iter().cloned().collect(),
            allow_force_side: reads.allow_force_side,
            rrf: crate::ranking::Rrf {
                k: reads.rrf_k,
                blue_weight: reads.blue_weight,
                green_weight: reads.green_weight,
            },
            baseline_basis_points: crate::split::basis_points(reads.baseline_percent).unwrap_or(0),
            blue_embedder: reads.blue_embedder.as_ref().map(|e| e.to_spec()),
        }
    }
}

/// What an operator may change on one route.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChange {
    pub primary: Option<Side>,
    pub writes: Option<WritePolicy>,
    /// The share of reads green serves under a split, in percent.
    pub green_percent: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("no route for collection `{0}`")]
    UnknownRoute(String),
    #[error("{0}")]
    Refused(String),
    #[error("cannot write the state file {path}: {source}")]
    State {
        path: String,
        source: std::io::Error,
    },
}

/// The live table and its persistence. Changes are serialized; readers never wait.
pub struct Router {
    table: ArcSwap<RoutingTable>,
    state_file: PathBuf,
    changes: Mutex<()>,
}

/// What survives a restart: the version and each route's policy.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    version: u64,
    policies: BTreeMap<String, Policy>,
}

impl Router {
    /// Builds the table from the config, with the policies the state file kept.
    pub fn new(config: &Config) -> Result<Router, ChangeError> {
        let state = read_state(&config.state_file)?;
        let mut table = RoutingTable::from_config(config, state.as_ref().map_or(1, |s| s.version));
        if let Some(state) = state {
            apply_policies(&mut table, &state.policies);
        }
        record_shares(&table);
        Ok(Router {
            table: ArcSwap::from_pointee(table),
            state_file: config.state_file.clone(),
            changes: Mutex::new(()),
        })
    }

    /// The current snapshot; load once per request.
    pub fn load(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Changes one route's policy; answers the new snapshot.
    pub fn change(
        &self,
        collection: &str,
        change: PolicyChange,
    ) -> Result<Arc<RoutingTable>, ChangeError> {
        self.update(|table| {
            let route = table
                .routes
                .get_mut(collection)
                .ok_or_else(|| ChangeError::UnknownRoute(collection.to_owned()))?;
            let mut new = (**route).clone();
            if let Some(percent) = change.green_percent {
                new.policy.green_basis_points =
                    crate::split::basis_points(percent).map_err(ChangeError::Refused)?;
            }
            new.policy.primary = change.primary.unwrap_or(new.policy.primary);
            new.policy.writes = change.writes.unwrap_or(new.policy.writes);
            *route = Arc::new(new);
            Ok(format!("route `{collection}` changed: {change:?}"))
        })
    }

    /// Every route back to blue, reads and writes, in one swap.
    pub fn rollback(&self) -> Result<Arc<RoutingTable>, ChangeError> {
        self.update(|table| {
            for route in table.routes.values_mut() {
                let mut new = (**route).clone();
                new.policy = Policy {
                    primary: Side::Blue,
                    writes: WritePolicy::BlueOnly,
                    green_basis_points: 0,
                };
                *route = Arc::new(new);
            }
            Ok("rolled back: every route to blue".into())
        })
    }

    /// Takes a re-read config's routes, keeping the live policy of routes that stay.
    pub fn reload(&self, config: &Config) -> Result<Arc<RoutingTable>, ChangeError> {
        self.update(|table| {
            let policies = table
                .routes
                .iter()
                .map(|(name, route)| (name.clone(), route.policy))
                .collect();
            let mut fresh = RoutingTable::from_config(config, table.version);
            apply_policies(&mut fresh, &policies);
            table.routes = fresh.routes;
            Ok(format!("reloaded: {} routes", table.routes.len()))
        })
    }

    /// Applies a change to a copy, persists it, then swaps it in and logs it.
    fn update(
        &self,
        change: impl FnOnce(&mut RoutingTable) -> Result<String, ChangeError>,
    ) -> Result<Arc<RoutingTable>, ChangeError> {
        let _serialized = self.changes.lock();
        let mut table = (*self.table.load_full()).clone();
        let what = change(&mut table)?;
        table.version += 1;
        write_state(&self.state_file, &table)?;
        let table = Arc::new(table);
        self.table.store(table.clone());
        record_shares(&table);
        tracing::info!(version = table.version, "{what}");
        Ok(table)
    }
}

/// The gauges that show the table: its version and each route's green share.
fn record_shares(table: &RoutingTable) {
    crate::metrics::routing_version(table.version);
    for route in table.routes.values() {
        crate::metrics::green_share(&route.collection, route.policy.green_basis_points);
    }
}

fn millis<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Puts kept policies (from the state file, or live ones across a reload)
/// on the routes that still exist.
fn apply_policies(table: &mut RoutingTable, policies: &BTreeMap<String, Policy>) {
    for (name, policy) in policies {
        if let Some(route) = table.routes.get_mut(name) {
            let mut new = (**route).clone();
            new.policy.primary = policy.primary;
            new.policy.green_basis_points = policy.green_basis_points;
            new.policy.writes = policy.writes;
            *route = Arc::new(new);
        }
    }
}

fn read_state(path: &Path) -> Result<Option<State>, ChangeError> {
    let state_error = |source| ChangeError::State {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| state_error(std::io::Error::other(e))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_error(e)),
    }
}

/// Writes the state by atomic rename: a crash leaves the old file or the new one.
fn write_state(path: &Path, table: &RoutingTable) -> Result<(), ChangeError> {
    let state = State {
        version: table.version,
        policies: table
            .routes
            .iter()
            .map(|(name, route)| (name.clone(), route.policy))
            .collect(),
    };
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &serde_json::to_vec_pretty(&state)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| ChangeError::State {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, route_extra: &str) -> Config {
        let text = format!(
            r#"
state_file = "{}"
default_upstream = "blue"
[listen]
rest = "127.0.0.1:0"
grpc = "127.0.0.1:0"
admin = "127.0.0.1:0"
allow_unauthenticated_admin = true
[upstreams.blue]
embedded = "./b"
[upstreams.green]
embedded = "./g"
[[routes]]
collection = "docs"
blue = {{ upstream = "blue", collection = "docs" }}
green = {{ upstream = "green", collection = "docs_v2" }}
{route_extra}
"#,
            dir.join("state.json").display()
        );
        Config::parse(&text, "test.toml").unwrap()
    }

    #[test]
    fn a_restart_keeps_the_state_files_policy_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let router = Router::new(&config(dir.path(), "")).unwrap();
        assert_eq!(router.load().version, 1);
        let change = PolicyChange {
            primary: Some(Side::Green),
            writes: Some(WritePolicy::GreenOnly),
            green_percent: Some(5.0),
        };
        router.change("docs", change).unwrap();
        let again = Router::new(&config(dir.path(), "")).unwrap();
        let table = again.load();
        assert_eq!(table.version, 2);
        assert_eq!(
            table.get("docs").unwrap().policy,
            Policy {
                primary: Side::Green,
                writes: WritePolicy::GreenOnly,
                green_basis_points: 500,
            }
        );
    }
}
