//! Per-target figures and their presentation: a Markdown table with ratios
//! to the first target (direct), and JSON with every figure.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::workload::Measured;

pub struct TargetResult {
    pub name: String,
    latency_us: Histogram<u64>,
    errors: u64,
    elapsed: Duration,
}

impl TargetResult {
    pub fn new(name: &str) -> Self {
        TargetResult {
            name: name.to_owned(),
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            errors: 0,
            elapsed: Duration::ZERO,
        }
    }

    pub fn add(&mut self, measured: Measured) {
        self.latency_us
            .add(measured.latency_us)
            .expect("same bounds");
        self.errors += measured.errors;
        self.elapsed += measured.elapsed;
    }

    fn throughput(&self) -> f64 {
        self.latency_us.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

pub struct Report {
    pub operation: String,
    pub clients: usize,
    pub pinned_cpu: Option<usize>,
    pub results: Vec<TargetResult>,
}

impl Report {
    pub fn markdown(&self) -> String {
        let base = &self.results[0];
        let mut out = format!(
            "{}; {} clients, closed loop; {}\n\n| target | req/s | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n|---|---|---|---|---|---|---|---|\n",
            self.operation,
            self.clients,
            match self.pinned_cpu {
                Some(cpu) => format!("every process pinned to CPU {cpu}: tails comparable"),
                None => "processes not pinned: compare medians only".to_owned(),
            }
        );
        for r in &self.results {
            let ratio = |value: f64, base_value: f64| {
                if std::ptr::eq(r, base) {
                    String::new()
                } else {
                    format!(" (x{:.2})", value / base_value)
                }
            };
            out.push_str(&format!(
                "| {} | {:.0}{} | {} |",
                r.name,
                r.throughput(),
                ratio(r.throughput(), base.throughput()),
                r.errors
            ));
            for (_, q) in QUANTILES {
                out.push_str(&format!(
                    " {:.2}{} |",
                    r.quantile_ms(q),
                    ratio(r.quantile_ms(q), base.quantile_ms(q))
                ));
            }
            out.push_str(&format!(" {:.2} |\n", r.latency_us.max() as f64 / 1000.0));
        }
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "operation": self.operation,
            "clients": self.clients,
            "pinned_cpu": self.pinned_cpu,
            "targets": self.results.iter().map(|r| {
                let mut quantiles = serde_json::Map::new();
                for (name, q) in QUANTILES {
                    quantiles.insert(format!("{name}_ms"), json!(r.quantile_ms(q)));
                }
                json!({
                    "name": r.name,
                    "requests": r.latency_us.len(),
                    "errors": r.errors,
                    "seconds": r.elapsed.as_secs_f64(),
                    "throughput_per_s": r.throughput(),
                    "latency": quantiles,
                    "max_ms": r.latency_us.max() as f64 / 1000.0,
                })
            }).collect::<Vec<_>>(),
        })
    }
}
