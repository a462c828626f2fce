//! The processes under test, each in its own process as in production:
//! an embedded Qdrant upstream and cutover in front of it. Optionally
//! pinned to one CPU; killed when dropped, so a run always stops its servers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;

pub struct Server {
    child: Child,
    /// Addresses the server printed on its first stdout line, by label.
    pub addresses: Vec<(String, String)>,
}

impl Server {
    /// Starts `bin args`, pinned to `cpus` if given, and reads its address line.
    pub fn start(bin: &Path, args: &[&str], cpus: Option<&Cpus>) -> anyhow::Result<Server> {
        let mut child = command(bin.as_os_str(), cpus)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .context("reading the server's address line")?;
        if line.is_empty() {
            bail!("{} exited before listening", bin.display());
        }
        // "label: KIND addr KIND addr ...": pairs after the colon.
        let words: Vec<&str> = line
            .split_once(':')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let addresses = words
            .chunks(2)
            .filter(|pair| pair.len() == 2)
            .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
            .collect();
        Ok(Server { child, addresses })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn address(&self, label: &str) -> anyhow::Result<String> {
        let (_, address) = self
            .addresses
            .iter()
            .find(|(l, _)| l == label)
            .with_context(|| format!("no {label} address in {:?}", self.addresses))?;
        Ok(if address.starts_with("http") {
            address.clone()
        } else {
            format!("http://{address}")
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Stops a server as its operator would: SIGTERM, so that it stops what
/// it started (nginx's master its workers), then SIGKILL if it has not
/// exited within five seconds.
pub fn stop(child: &mut Child) {
    // SAFETY: kill only sends a signal to the process we started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `pid` and its child processes (nginx's workers).
fn family(pid: u32) -> Vec<String> {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid.to_string())
        .chain(children.split_whitespace().map(str::to_owned))
        .collect()
}

/// CPU time (user and system) `pid` and its child processes have used so
/// far, from /proc; None where it cannot be read.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let ticks = |pid: &String| -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command name (in parentheses, maybe with spaces) come
        // fields 3 on; utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    };
    let family = family(pid);
    let own = ticks(&family[0])?;
    let theirs: u64 = family[1..].iter().filter_map(ticks).sum();
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((own + theirs) as f64 / per_second.max(1) as f64)
}

/// The most memory `pid` and its child processes have held resident so
/// far (each one's peak, `VmHWM`), in MiB; None where it cannot be read.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let peak_kib = |pid: &String| -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let family = family(pid);
    let own = peak_kib(&family[0])?;
    let theirs: u64 = family[1..].iter().filter_map(peak_kib).sum();
    Some((own + theirs) as f64 / 1024.0)
}

/// A set of CPUs, written as taskset takes it: `0`, `2-3`, `0,4-5`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpus(Vec<usize>);

impl Cpus {
    /// Whether this is one CPU, where no wake-up crosses to another.
    pub fn is_one(&self) -> bool {
        self.0.len() == 1
    }
}

impl std::str::FromStr for Cpus {
    type Err = String;

    fn from_str(list: &str) -> Result<Cpus, String> {
        let bad = || format!("`{list}` is not a CPU list: write `0`, `2-3` or `0,4-5`");
        let mut cpus = Vec::new();
        for part in list.split(',') {
            let (first, last) = part.split_once('-').unwrap_or((part, part));
            let first: usize = first.trim().parse().map_err(|_| bad())?;
            let last: usize = last.trim().parse().map_err(|_| bad())?;
            if first > last || last >= libc::CPU_SETSIZE as usize {
                return Err(bad());
            }
            cpus.extend(first..=last);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(Cpus(cpus))
    }
}

impl std::fmt::Display for Cpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.0.iter().map(usize::to_string).collect();
        write!(f, "{}", list.join(","))
    }
}

/// How a run placed its processes on CPUs, and so which of its figures
/// compare: tails only where the client's path (load generator, proxies)
/// shares one CPU, and no wake-up on it crosses to another.
pub fn pinning(client: Option<&Cpus>, blue: Option<&Cpus>, green: Option<&Cpus>) -> String {
    let on = |cpus: &Cpus| match cpus.is_one() {
        true => format!("CPU {cpus}"),
        false => format!("CPUs {cpus}"),
    };
    let sides: Vec<String> = [("blue", blue), ("green", green)]
        .into_iter()
        .filter_map(|(side, cpus)| Some((side, cpus.filter(|&c| Some(c) != client)?)))
        .map(|(side, cpus)| format!("{side}'s upstream on {}", on(cpus)))
        .collect();
    let placed = match (client, sides.is_empty()) {
        (None, true) => "processes not pinned".to_owned(),
        (None, false) => format!(
            "{}, the load generator and proxies not pinned",
            sides.join(" and ")
        ),
        (Some(cpus), true) => format!("every process pinned to {}", on(cpus)),
        (Some(cpus), false) => format!(
            "every process pinned to {} but {}",
            on(cpus),
            sides.join(" and ")
        ),
    };
    let reading = match client {
        Some(cpus) if cpus.is_one() => "tails comparable",
        _ => "compare medians",
    };
    format!("{placed}: {reading}")
}

/// A command for `program`, run pinned to `cpus` (through taskset) if
/// given, and sent SIGTERM should the load test die before stopping it.
pub fn command(program: &std::ffi::OsStr, cpus: Option<&Cpus>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = match cpus {
        Some(cpus) => {
            let mut pinned = Command::new("taskset");
            pinned.args(["-c", &cpus.to_string()]).arg(program);
            pinned
        }
        None => Command::new(program),
    };
    // The kernel sends it when the thread that spawned the child ends:
    // servers are started from the main thread, which lasts the run.
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// Pins the calling thread, and the threads it starts from then on, to
/// `cpus`, so the load generator's wake-ups stay on the servers' CPUs.
pub fn pin_self(cpus: &Cpus) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET (given CPUs
    // under CPU_SETSIZE, as `Cpus` holds) and sched_setaffinity only touch
    // the set and this thread's affinity.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in &cpus.0 {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if pinned != 0 {
        bail!(
            "could not pin the load generator to CPUs {cpus}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A Qdrant endpoint's two URLs.
#[derive(Clone)]
pub struct Endpoint {
    pub grpc: String,
    pub rest: String,
}

/// A route for one collection on blue and green, with its policy as TOML
/// lines (e.g. `writes = "dual"`).
#[derive(Clone, Copy)]
pub struct RouteSpec<'a> {
    pub green: &'a Endpoint,
    pub collection: &'a str,
    pub policy: &'a str,
}

/// cutover's config: `blue` the default upstream; with a route, `green` too
/// and the route's collection under its policy.
pub fn cutover_config(
    dir: &Path,
    name: &str,
    blue: &Endpoint,
    route: Option<RouteSpec>,
) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    let mut text = format!(
        r#"state_file = "{state}"
default_upstream = "blue"

[listen]
rest = "127.0.0.1:0"
grpc = "127.0.0.1:0"
admin = "127.0.0.1:0"
allow_unauthenticated_admin = true

[replay]
dir = "{replay}"

[upstreams.blue]
rest = "{}"
grpc = "{}"
"#,
        blue.rest,
        blue.grpc,
        state = dir.join(format!("{name}-state.json")).display(),
        replay = dir.join(format!("{name}-replay")).display(),
    );
    if let Some(RouteSpec {
        green,
        collection,
        policy,
    }) = route
    {
        text.push_str(&format!(
            r#"
[upstreams.green]
rest = "{}"
grpc = "{}"

[[routes]]
collection = "{collection}"
blue = {{ upstream = "blue", collection = "{collection}" }}
green = {{ upstream = "green", collection = "{collection}" }}
{policy}
"#,
            green.rest, green.grpc
        ));
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

/// How long a cutover's admin API has to answer: a cutover that stalled
/// must not keep the load test from ending and writing what it measured.
const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A cutover's shadow report for `route`, from its admin API: `None` when
/// the route mirrors nothing (no route, or not in shadow mode).
pub async fn shadow_report(admin: &str, route: &str) -> anyhow::Result<Option<Value>> {
    let response = reqwest::Client::builder()
        .timeout(ADMIN_TIMEOUT)
        .build()?
        .get(format!("{admin}/routes/{route}/shadow"))
        .send()
        .await?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let body: Value = response.error_for_status()?.json().await?;
    let report = &body["report"];
    let seen = report["mirrored"].as_u64().unwrap_or(0) + total(&report["dropped"]);
    Ok((seen > 0).then_some(body))
}

/// A dual-writing cutover's own count of `route`'s writes, from its
/// `/metrics`: each side's outcomes by protocol (`ok`, `timeout`, `queued`
/// behind the replay log, ...) and what its replay log took and applied;
/// `None` when it dual-wrote nothing.
pub async fn write_report(admin: &str, route: &str) -> anyhow::Result<Option<Value>> {
    let text = reqwest::Client::builder()
        .timeout(ADMIN_TIMEOUT)
        .build()?
        .get(format!("{admin}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(write_counts(&text, route))
}

/// `write_report`'s figures from a Prometheus text exposition.
fn write_counts(metrics: &str, route: &str) -> Option<Value> {
    let mut sides = serde_json::Map::new();
    let mut replay = serde_json::Map::new();
    for (name, labels, value) in metrics.lines().filter_map(sample) {
        if labels.get("route") != Some(&route) {
            continue;
        }
        let count = Value::from(value as u64);
        match (name, labels.get("protocol"), labels.get("side")) {
            ("cutover_dual_writes_total", Some(protocol), Some(side)) => {
                let outcome = labels.get("outcome").copied().unwrap_or("unknown");
                sides
                    .entry(*protocol)
                    .or_insert_with(|| serde_json::json!({}))[*side][outcome] = count;
            }
            ("cutover_replay_appended_total", ..) if labels.get("outcome") == Some(&"ok") => {
                replay.insert("appended".into(), count);
            }
            ("cutover_replay_applied_total", ..) => {
                replay.insert("applied".into(), count);
            }
            _ => {}
        }
    }
    (!sides.is_empty()).then(|| serde_json::json!({ "sides": sides, "replay": replay }))
}

/// One sample line of a Prometheus text exposition: its name, its labels
/// and its value. Label values with commas or escaped quotes, which
/// cutover's own labels here never hold, are not parsed.
fn sample(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, labels.strip_suffix('}')?),
        None => (series, ""),
    };
    let labels = labels
        .split(',')
        .filter(|label| !label.is_empty())
        .map(|label| {
            let (key, value) = label.split_once('=')?;
            Some((key, value.strip_prefix('"')?.strip_suffix('"')?))
        })
        .collect::<Option<_>>()?;
    Some((name, labels, value.parse().ok()?))
}

/// The sum of a JSON object's counts (`{"full": 3, "too_large": 1}`: 4).
pub fn total(counts: &Value) -> u64 {
    counts
        .as_object()
        .map_or(0, |counts| counts.values().filter_map(Value::as_u64).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Running: it exists and is not a zombie waiting to be reaped.
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| Some(stat.rsplit_once(')')?.1.trim_start().starts_with('Z')))
            .is_some_and(|zombie| !zombie)
    }

    /// The CPUs the calling thread may run on.
    fn allowed_cpus() -> Vec<usize> {
        // SAFETY: sched_getaffinity fills the set it is given.
        let set = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set),
                0
            );
            set
        };
        (0..libc::CPU_SETSIZE as usize)
            .filter(|cpu| unsafe { libc::CPU_ISSET(*cpu, &set) })
            .collect()
    }

    /// An admin API that accepts the connection and never answers (a
    /// stalled cutover) is an error, not a load test that never ends.
    #[tokio::test]
    async fn a_shadow_report_that_never_comes_is_an_error() {
        let (admin, _held) = crate::workload::tests::stalled_target().await;
        let err = shadow_report(&admin, "loadtest").await.unwrap_err();
        assert!(
            err.downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_timeout),
            "{err:#}"
        );
    }

    #[test]
    fn a_dual_writes_counts_are_read_from_its_metrics() {
        let metrics = r#"# TYPE cutover_dual_writes_total counter
cutover_dual_writes_total{protocol="grpc",route="loadtest",side="blue",outcome="ok"} 7200
cutover_dual_writes_total{protocol="grpc",route="loadtest",side="green",outcome="ok"} 6061
cutover_dual_writes_total{protocol="grpc",route="loadtest",side="green",outcome="timeout"} 139
cutover_dual_writes_total{protocol="grpc",route="loadtest",side="green",outcome="queued"} 1000
cutover_dual_writes_total{protocol="grpc",route="other",side="green",outcome="ok"} 5
cutover_replay_appended_total{route="loadtest",outcome="ok"} 1139
cutover_replay_appended_total{route="loadtest",outcome="error"} 1
cutover_replay_applied_total{route="loadtest"} 1139
cutover_replay_backlog_records 0
"#;
        assert_eq!(
            write_counts(metrics, "loadtest"),
            Some(serde_json::json!({
                "sides": { "grpc": {
                    "blue": { "ok": 7200 },
                    "green": { "ok": 6061, "timeout": 139, "queued": 1000 },
                } },
                "replay": { "appended": 1139, "applied": 1139 },
            }))
        );
        // A cutover that dual-wrote nothing on the route has no report.
        assert_eq!(write_counts(metrics, "docs"), None);
        assert_eq!(write_counts("", "loadtest"), None);
    }

    /// The load generator's runtime threads start after the pin: they
    /// must be on the pinned CPU too, not only the thread that pinned.
    #[test]
    fn threads_started_after_pinning_stay_on_the_cpu() {
        let started_after = std::thread::spawn(|| {
            pin_self(&"0".parse().unwrap()).unwrap();
            std::thread::spawn(allowed_cpus).join().unwrap()
        });
        assert_eq!(started_after.join().unwrap(), vec![0]);
    }

    /// CPU lists read as taskset reads them, and written back so.
    #[test]
    fn cpu_lists_parse_as_taskset_takes_them() {
        let cpus = |list: &str| list.parse::<Cpus>();
        assert_eq!(cpus("0"), Ok(Cpus(vec![0])));
        assert_eq!(cpus("2-3"), Ok(Cpus(vec![2, 3])));
        assert_eq!(cpus("4-5,0,1-2"), Ok(Cpus(vec![0, 1, 2, 4, 5])));
        assert_eq!(cpus("4-5,0,1-2").unwrap().to_string(), "0,1,2,4,5");
        assert!(cpus("0").unwrap().is_one());
        assert!(!cpus("0-1").unwrap().is_one());
        for bad in ["", "a", "3-1", "1-", "0,,1", "99999"] {
            let err = cpus(bad).unwrap_err();
            assert!(err.contains("is not a CPU list"), "{bad}: {err}");
        }
    }

    /// The report says where each process ran, and which figures that
    /// lets a reader compare.
    #[test]
    fn the_pinning_is_described_as_placed() {
        let cpus = |list: &str| list.parse::<Cpus>().unwrap();
        let (zero, one) = (cpus("0"), cpus("1"));
        assert_eq!(
            pinning(None, None, None),
            "processes not pinned: compare medians"
        );
        assert_eq!(
            pinning(Some(&zero), None, None),
            "every process pinned to CPU 0: tails comparable"
        );
        assert_eq!(
            pinning(Some(&zero), Some(&zero), Some(&one)),
            "every process pinned to CPU 0 but green's upstream on CPU 1: tails comparable"
        );
        assert_eq!(
            pinning(None, Some(&zero), Some(&one)),
            "blue's upstream on CPU 0 and green's upstream on CPU 1, \
             the load generator and proxies not pinned: compare medians"
        );
        assert_eq!(
            pinning(Some(&cpus("0-1")), Some(&cpus("2-3")), Some(&cpus("4-5"))),
            "every process pinned to CPUs 0,1 but blue's upstream on CPUs 2,3 \
             and green's upstream on CPUs 4,5: compare medians"
        );
    }

    /// A server started on a CPU list runs on those CPUs only.
    #[test]
    fn a_server_runs_on_the_cpus_it_is_given() {
        let cpus: Cpus = "0".parse().unwrap();
        let output = command("sh".as_ref(), Some(&cpus))
            .args(["-c", "grep Cpus_allowed_list /proc/self/status"])
            .output()
            .unwrap();
        let status = String::from_utf8(output.stdout).unwrap();
        assert_eq!(status.split_whitespace().last(), Some("0"), "{status}");
    }

    /// A server with a worker of its own, as nginx has: stopping the
    /// server must not leave the worker running.
    #[test]
    fn stopping_a_server_stops_the_workers_it_started() {
        let script = "sleep 60 & worker=$!; trap 'kill $worker; exit 0' TERM; echo $worker; wait";
        let mut child = command("sh".as_ref(), None)
            .args(["-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let worker: i32 = line.trim().parse().unwrap();
        assert!(alive(worker));
        stop(&mut child);
        // The worker ends on its own signal; give it a moment.
        let gone = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            !alive(worker)
        });
        assert!(gone, "worker {worker} outlived its server");
    }
}
