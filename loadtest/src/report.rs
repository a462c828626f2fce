//! Figures per target, protocol and operation, and their presentation: a
//! Markdown table with ratios to direct, JSON with every figure.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::verdicts;
use crate::workload::{Measured, Op, Protocol};

pub const QUANTILES: [(&str, f64); 4] =
    [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

/// Everything measured for one target on one protocol, over all rounds.
pub struct TargetResult {
    pub target: String,
    pub protocol: Protocol,
    pub latency_us: BTreeMap<Op, Histogram<u64>>,
    /// Answered requests a second in each round, in order.
    pub round_throughput: BTreeMap<Op, Vec<f64>>,
    /// The median latency of each round, in order, in milliseconds.
    pub round_p50_ms: BTreeMap<Op, Vec<f64>>,
    pub errors: BTreeMap<Op, u64>,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// CPU seconds the proxy in between used while measured (None: direct).
    pub proxy_cpu_s: Option<f64>,
    /// The proxy's peak resident memory so far, in MiB (None: direct).
    pub proxy_peak_rss_mib: Option<f64>,
}

impl TargetResult {
    pub fn new(target: &str, protocol: Protocol) -> Self {
        TargetResult {
            target: target.to_owned(),
            protocol,
            latency_us: BTreeMap::new(),
            round_throughput: BTreeMap::new(),
            round_p50_ms: BTreeMap::new(),
            errors: BTreeMap::new(),
            first_error: None,
            elapsed: Duration::ZERO,
            proxy_cpu_s: None,
            proxy_peak_rss_mib: None,
        }
    }

    pub fn add_proxy_cpu(&mut self, seconds: f64) {
        *self.proxy_cpu_s.get_or_insert(0.0) += seconds;
    }

    /// The proxy's CPU time per request, in microseconds, all operations.
    fn proxy_cpu_us_per_request(&self) -> Option<f64> {
        let requests: u64 =
            self.latency_us.values().map(|h| h.len()).sum::<u64>() + self.total_errors();
        self.proxy_cpu_s
            .filter(|_| requests > 0)
            .map(|s| s * 1e6 / requests as f64)
    }

    pub fn add(&mut self, measured: Measured) {
        let seconds = measured.elapsed.as_secs_f64().max(f64::EPSILON);
        for (op, h) in measured.latency_us {
            self.round_throughput
                .entry(op)
                .or_default()
                .push(h.len() as f64 / seconds);
            // NaN for a round with no answers, so rounds stay aligned.
            let p50 = match h.is_empty() {
                true => f64::NAN,
                false => h.value_at_quantile(0.5) as f64 / 1000.0,
            };
            self.round_p50_ms.entry(op).or_default().push(p50);
            self.latency_us
                .entry(op)
                .or_insert_with(|| {
                    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
                })
                .add(h)
                .expect("same bounds");
        }
        for (op, e) in measured.errors {
            *self.errors.entry(op).or_default() += e;
        }
        if self.first_error.is_none() {
            self.first_error = measured.first_error;
        }
        self.elapsed += measured.elapsed;
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn throughput(&self, op: Op) -> f64 {
        self.latency_us.get(&op).map_or(0, |h| h.len()) as f64
            / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Throughput against `base`'s round by round: the median ratio and
    /// the lowest and highest, as one run's spread.
    fn round_ratios(&self, base: &TargetResult, op: Op) -> Option<Spread> {
        let (ours, theirs) = (
            self.round_throughput.get(&op)?,
            base.round_throughput.get(&op)?,
        );
        let ratios = ours
            .iter()
            .zip(theirs)
            .filter(|(_, base)| **base > 0.0)
            .map(|(ours, base)| ours / base);
        Spread::of(ratios.collect())
    }

    /// The median latency added to `base`'s, round by round (each round's
    /// median against `base`'s in the same round): how far the pooled
    /// figure moves from round to round.
    pub fn round_added_p50(&self, base: &TargetResult, op: Op) -> Option<Spread> {
        let (ours, theirs) = (self.round_p50_ms.get(&op)?, base.round_p50_ms.get(&op)?);
        let added = ours.iter().zip(theirs).map(|(ours, base)| ours - base);
        Spread::of(added.filter(|added| !added.is_nan()).collect())
    }

    /// The median of the slower of two answers, one drawn from `self`'s
    /// and one from `other`'s, each on its own: what a write to both would
    /// take were the two sides independent and the fan-out free. The
    /// slower of two is slower than either's median: it is at most `t`
    /// only when both are, so its median is the `t` where the product of
    /// the two shares at most `t` reaches one half.
    pub fn slower_of_two_p50_ms(&self, other: &TargetResult, op: Op) -> Option<f64> {
        let (a, b) = (self.latency_us.get(&op)?, other.latency_us.get(&op)?);
        if a.is_empty() || b.is_empty() {
            return None;
        }
        let both_within = |t: u64| a.quantile_below(t) * b.quantile_below(t) >= 0.5;
        let (mut low, mut high) = (0, a.max().max(b.max()));
        while low < high {
            let mid = low + (high - low) / 2;
            if both_within(mid) {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        // Shown as quantiles are: the highest value `low`'s bucket holds.
        Some(a.highest_equivalent(low) as f64 / 1000.0)
    }

    pub fn quantile_ms(&self, op: Op, q: f64) -> f64 {
        self.latency_us
            .get(&op)
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// Round-by-round figures: their median, lowest and highest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Option<Spread> {
        values.sort_by(f64::total_cmp);
        let median = match values.len() {
            0 => return None,
            n if n % 2 == 1 => values[n / 2],
            n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        };
        Some(Spread {
            median,
            low: values[0],
            high: values[values.len() - 1],
        })
    }
}

pub struct Report {
    pub title: String,
    pub load: String,
    /// Which processes were pinned to which CPU, in words.
    pub pinning: String,
    /// A closed loop's throughput is the targets' to show; an open loop's
    /// is the rate it was given.
    pub closed_loop: bool,
    pub results: Vec<TargetResult>,
    /// Each shadowing cutover's own report: (target, `GET /routes/NAME/shadow`).
    pub shadows: Vec<(String, Value)>,
    /// Each dual-writing cutover's count of its writes: (target,
    /// `processes::write_report`).
    pub writes: Vec<(String, Value)>,
}

impl Report {
    fn direct(&self, protocol: Protocol) -> Option<&TargetResult> {
        self.results
            .iter()
            .find(|r| r.protocol == protocol && r.target == verdicts::DIRECT)
    }

    pub fn markdown(&self) -> String {
        let mut out = format!(
            "{}; {}; {}\n\n| protocol | operation | target | req/s | req/s per round vs direct: median (range) | errors | proxy CPU µs/req | proxy peak RSS MiB | p50 added ms; per round: median (range) | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            self.title, self.load, self.pinning,
        );
        let ratio = |value: f64, base: Option<f64>| match base {
            Some(base) if base > 0.0 => format!(" (x{:.2})", value / base),
            _ => String::new(),
        };
        for r in &self.results {
            let direct = self.direct(r.protocol).filter(|d| !std::ptr::eq(*d, r));
            for (op, histogram) in &r.latency_us {
                out.push_str(&format!(
                    "| {} | {} | {} | {:.0}{} |",
                    r.protocol.name(),
                    op.name(),
                    r.target,
                    r.throughput(*op),
                    ratio(r.throughput(*op), direct.map(|d| d.throughput(*op))),
                ));
                match direct.and_then(|d| r.round_ratios(d, *op)) {
                    Some(Spread { median, low, high }) => {
                        out.push_str(&format!(" x{median:.2} ({low:.2}..{high:.2}) |"))
                    }
                    None => out.push_str(" |"),
                }
                out.push_str(&format!(" {} |", r.errors.get(op).copied().unwrap_or(0)));
                // What the proxy in between spent, and the latency its hop adds:
                // the figures to set beside a peer proxy's.
                match r.proxy_cpu_us_per_request() {
                    Some(us) => out.push_str(&format!(" {us:.0} |")),
                    None => out.push_str(" |"),
                }
                match r.proxy_peak_rss_mib {
                    Some(mib) => out.push_str(&format!(" {mib:.1} |")),
                    None => out.push_str(" |"),
                }
                if histogram.is_empty() {
                    out.push_str(" | none answered | | | | |\n");
                    continue;
                }
                match direct.map(|d| r.quantile_ms(*op, 0.5) - d.quantile_ms(*op, 0.5)) {
                    Some(added) => out.push_str(&format!(" {added:+.2}")),
                    None => out.push_str(" |"),
                }
                let rounds = r.round_p50_ms.get(op).map_or(0, Vec::len);
                let spread = direct.and_then(|d| r.round_added_p50(d, *op));
                match spread.filter(|_| rounds > 1) {
                    Some(Spread { median, low, high }) => {
                        out.push_str(&format!("; rounds {median:+.2} ({low:+.2}..{high:+.2}) |"))
                    }
                    None if direct.is_some() => out.push_str(" |"),
                    None => {}
                }
                for (_, q) in QUANTILES {
                    let value = r.quantile_ms(*op, q);
                    out.push_str(&format!(
                        " {value:.2}{} |",
                        ratio(value, direct.map(|d| d.quantile_ms(*op, q)))
                    ));
                }
                out.push_str(&format!(" {:.2} |\n", histogram.max() as f64 / 1000.0));
            }
        }
        if !self.shadows.is_empty() {
            out.push_str("\nShadow coverage, as cutover counted it (both protocols, warm-ups included):\n\n| target | mirrored | dropped | compared | not compared |\n|---|---|---|---|---|\n");
            for (target, body) in &self.shadows {
                let report = &body["report"];
                out.push_str(&format!(
                    "| {target} | {} | {} | {} | {} |\n",
                    report["mirrored"],
                    by_reason(&report["dropped"]),
                    report["sides"]["compared"],
                    by_reason(&report["uncompared"]),
                ));
            }
        }
        if !self.writes.is_empty() {
            out.push_str("\nDual writes, as cutover counted them (warm-ups included; green's copies `queued` went behind the replay log unsent):\n\n| target | protocol | blue | green |\n|---|---|---|---|\n");
            for (target, report) in &self.writes {
                for (label, sides) in report["sides"].as_object().into_iter().flatten() {
                    // cutover's label (`grpc`) as the table names it (`gRPC`).
                    let protocol = [Protocol::Grpc, Protocol::Rest]
                        .into_iter()
                        .find(|p| p.name().eq_ignore_ascii_case(label))
                        .map_or(label.as_str(), |p| p.name());
                    out.push_str(&format!(
                        "| {target} | {protocol} | {} | {} |\n",
                        by_reason(&sides["blue"]),
                        by_reason(&sides["green"]),
                    ));
                }
            }
            for (target, report) in &self.writes {
                let count = |name| report["replay"][name].as_u64().unwrap_or(0);
                out.push_str(&format!(
                    "\n{target}'s replay log took {} of green's copies and applied {}.\n",
                    count("appended"),
                    count("applied"),
                ));
            }
        }
        out.push_str(&verdicts::markdown(&self.verdicts()));
        out
    }

    fn verdicts(&self) -> Vec<verdicts::Verdict> {
        verdicts::judge(&self.results, self.closed_loop)
    }

    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .results
            .iter()
            .flat_map(|r| {
                r.latency_us.iter().map(move |(op, histogram)| {
                    let mut latency = serde_json::Map::new();
                    for (name, q) in QUANTILES {
                        latency.insert(format!("{name}_ms"), json!(r.quantile_ms(*op, q)));
                    }
                    latency.insert("max_ms".into(), json!(histogram.max() as f64 / 1000.0));
                    latency.insert("mean_ms".into(), json!(histogram.mean() / 1000.0));
                    json!({
                        "target": r.target,
                        "protocol": r.protocol.name(),
                        "operation": op.name(),
                        "requests": histogram.len(),
                        "errors": r.errors.get(op).copied().unwrap_or(0),
                        "seconds": r.elapsed.as_secs_f64(),
                        "throughput_per_s": r.throughput(*op),
                        "throughput_per_s_by_round": r.round_throughput.get(op),
                        "p50_ms_by_round": r.round_p50_ms.get(op),
                        "proxy_cpu_us_per_request": r.proxy_cpu_us_per_request(),
                        "proxy_peak_rss_mib": r.proxy_peak_rss_mib,
                        "latency": latency,
                    })
                })
            })
            .collect();
        let shadows: Vec<Value> = self
            .shadows
            .iter()
            .map(|(target, report)| json!({ "target": target, "shadow": report }))
            .collect();
        let writes: Vec<Value> = self
            .writes
            .iter()
            .map(|(target, report)| json!({ "target": target, "writes": report }))
            .collect();
        json!({
            "title": self.title,
            "load": self.load,
            "pinning": self.pinning,
            "results": rows,
            "shadow_reports": shadows,
            "write_reports": writes,
            "goals": verdicts::json(&self.verdicts()),
        })
    }
}

/// Counts by reason, as `12 (full 10, too_large 2)`; `0` for none.
fn by_reason(counts: &Value) -> String {
    let total = crate::processes::total(counts);
    let reasons: Vec<String> = counts
        .as_object()
        .into_iter()
        .flatten()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    match reasons.is_empty() {
        true => total.to_string(),
        false => format!("{total} ({})", reasons.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rounds(throughput: &[f64]) -> TargetResult {
        let mut result = TargetResult::new("t", Protocol::Grpc);
        result
            .round_throughput
            .insert(Op::Search, throughput.to_vec());
        result
    }

    /// A target whose upserts took each of `latencies_us` once.
    fn answered(latencies_us: impl IntoIterator<Item = u64>) -> TargetResult {
        let mut histogram = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
        for latency in latencies_us {
            histogram.record(latency).unwrap();
        }
        let mut result = TargetResult::new("t", Protocol::Grpc);
        result.latency_us.insert(Op::Upsert, histogram);
        result
    }

    #[test]
    fn the_slower_of_two_independent_sides_is_slower_than_either() {
        let even = answered(1..=1000);
        // Two sides spread evenly over 1 to 1000 µs: the slower of two is
        // within t µs with chance (t/1000)², a half from t = 708 on.
        assert_eq!(even.slower_of_two_p50_ms(&even, Op::Upsert), Some(0.708));
        // Against a side that always answers first, the other's own median.
        let quick = answered([50; 10]);
        assert_eq!(even.slower_of_two_p50_ms(&quick, Op::Upsert), Some(0.5));
        // Never under the slower side's own median, as the histograms
        // round it (to 3 significant digits: 4,500 µs is a bucket 4,500-4,503).
        let slow = answered((1..=1000).map(|i| 4000 + i));
        let floor = slow.slower_of_two_p50_ms(&quick, Op::Upsert).unwrap();
        assert_eq!(floor, slow.quantile_ms(Op::Upsert, 0.5));
        // A side that answered nothing has no median.
        let none = answered([]);
        assert_eq!(even.slower_of_two_p50_ms(&none, Op::Upsert), None);
        assert_eq!(even.slower_of_two_p50_ms(&even, Op::Search), None);
    }

    #[test]
    fn counts_are_shown_by_reason() {
        assert_eq!(by_reason(&json!({})), "0");
        assert_eq!(
            by_reason(&json!({ "full": 10, "too_large": 2 })),
            "12 (full 10, too_large 2)"
        );
    }

    #[test]
    fn round_ratios_are_taken_round_by_round() {
        let direct = rounds(&[100.0, 200.0, 100.0]);
        // Round by round: 0.9, 1.0, 1.1, though the totals' ratio is 1.0.
        let proxy = rounds(&[90.0, 200.0, 110.0]);
        let spread = proxy.round_ratios(&direct, Op::Search).unwrap();
        assert_eq!(
            spread,
            Spread {
                median: 1.0,
                low: 0.9,
                high: 1.1
            }
        );
        // An even count: the mean of the middle two.
        let (direct, proxy) = (rounds(&[100.0; 4]), rounds(&[80.0, 90.0, 95.0, 99.0]));
        let median = proxy.round_ratios(&direct, Op::Search).unwrap().median;
        assert!((median - 0.925).abs() < 1e-9, "{median}");
        assert!(rounds(&[]).round_ratios(&direct, Op::Search).is_none());
    }

    #[test]
    fn a_target_that_answered_nothing_has_its_row_with_its_errors() {
        let measured = |answered_us: &[u64], failed: u64| {
            let mut histogram = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
            for us in answered_us {
                histogram.record(*us).unwrap();
            }
            Measured {
                latency_us: BTreeMap::from([(Op::Upsert, histogram)]),
                errors: BTreeMap::from([(Op::Upsert, failed)]),
                first_error: None,
                elapsed: Duration::from_secs(1),
            }
        };
        let mut direct = TargetResult::new(verdicts::DIRECT, Protocol::Grpc);
        direct.add(measured(&[2_000], 0));
        let mut stalled = TargetResult::new(verdicts::DUAL, Protocol::Grpc);
        stalled.add(measured(&[], 3));
        let report = Report {
            title: "t".into(),
            load: "open loop".into(),
            pinning: "not pinned".into(),
            results: vec![direct, stalled],
            closed_loop: false,
            shadows: Vec::new(),
            writes: Vec::new(),
        };
        let table = report.markdown();
        let row = table
            .lines()
            .find(|l| l.contains("| cutover dual |"))
            .unwrap_or_else(|| panic!("no row for the target that failed:\n{table}"));
        assert_eq!(
            row,
            "| gRPC | upsert | cutover dual | 0 (x0.00) | x0.00 (0.00..0.00) | 3 | | | | none answered | | | | |"
        );
        assert!(
            crate::plot::percentile_svg(&report.results[1..], Protocol::Grpc, Op::Upsert, "t")
                .is_none()
        );
    }

    #[test]
    fn a_dual_writes_outcomes_and_replay_log_are_shown_as_cutover_counted_them() {
        let report = Report {
            title: "t".into(),
            load: "open loop".into(),
            pinning: "not pinned".into(),
            results: Vec::new(),
            closed_loop: false,
            shadows: Vec::new(),
            writes: vec![(
                verdicts::DUAL.into(),
                json!({
                    "sides": { "grpc": {
                        "blue": { "ok": 1200 },
                        "green": { "ok": 1061, "queued": 100, "timeout": 39 },
                    } },
                    "replay": { "appended": 139, "applied": 139 },
                }),
            )],
        };
        let table = report.markdown();
        assert!(
            table.contains(
                "| cutover dual | gRPC | 1200 (ok 1200) | 1200 (ok 1061, queued 100, timeout 39) |\n"
            ),
            "{table}"
        );
        assert!(
            table.contains("cutover dual's replay log took 139 of green's copies and applied 139."),
            "{table}"
        );
        assert_eq!(report.json()["write_reports"][0]["target"], verdicts::DUAL);
    }

    #[test]
    fn added_medians_are_taken_round_by_round_skipping_empty_rounds() {
        let medians = |p50_ms: &[f64]| {
            let mut result = TargetResult::new("t", Protocol::Grpc);
            result.round_p50_ms.insert(Op::Search, p50_ms.to_vec());
            result
        };
        // The machine slows in round 2; the hop stays 0.1 to 0.3 ms. The
        // proxy's round 4 had no answers.
        let direct = medians(&[1.0, 2.0, 1.0, 1.0]);
        let proxy = medians(&[1.1, 2.3, 1.2, f64::NAN]);
        let spread = proxy.round_added_p50(&direct, Op::Search).unwrap();
        assert!((spread.median - 0.2).abs() < 1e-9, "{spread:?}");
        assert!((spread.low - 0.1).abs() < 1e-9, "{spread:?}");
        assert!((spread.high - 0.3).abs() < 1e-9, "{spread:?}");
    }
}
