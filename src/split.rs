//! Hash-based read splits: a stable bucket of each read's routing key decides
//! whether green serves it. `bucket = xxh3_64(key, seed) % 10,000`; green when
//! `bucket < green share in basis points`. Raising the share only moves keys
//! from blue to green, never back, and every cutover instance decides alike:
//! xxh3 with a fixed seed has a documented, fixed output.
//!
//! (Named for the split, the bucketing serves shadow and fuse shares too.)

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::header::{HeaderMap, HeaderName};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::read_request::ReadRequest;

/// Shares are in basis points: 10,000 is everything.
pub const BUCKETS: u16 = 10_000;
/// The seed every instance buckets with ("cutover" in ASCII).
const SEED: u64 = 0x0063_7574_6f76_6572;

pub fn bucket(key: &[u8]) -> u16 {
    (xxh3_64_with_seed(key, SEED) % u64::from(BUCKETS)) as u16
}

/// Whether a read with this key goes to green at this share.
pub fn to_green(key: &[u8], green_basis_points: u16) -> bool {
    bucket(key) < green_basis_points
}

/// A share given in percent, as basis points; refused outside 0..=100.
pub fn basis_points(percent: f64) -> Result<u16, String> {
    if !(0.0..=100.0).contains(&percent) {
        return Err(format!(
            "a share is a percentage from 0 to 100, not {percent}"
        ));
    }
    Ok((percent * 100.0).round() as u16)
}

/// What a read is bucketed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingKey {
    /// A header (gRPC metadata), e.g. `x-tenant-id`: a user stays on one side.
    Header(HeaderName),
    /// The value a payload field is matched to in the request's filter
    /// (`must`), e.g. `tenant`; alike on both protocols.
    Payload(String),
    /// The request body: the same query goes to the same side.
    Body,
    /// Each read on its own.
    Random,
}

impl std::str::FromStr for RoutingKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("header", name)) => {
                HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                    .map(RoutingKey::Header)
                    .map_err(|_| format!("`{name}` is not a header name"))
            }
            Some(("payload", field)) if !field.trim().is_empty() => {
                Ok(RoutingKey::Payload(field.trim().to_owned()))
            }
            _ if text == "body" => Ok(RoutingKey::Body),
            _ if text == "random" => Ok(RoutingKey::Random),
            _ => Err(format!(
                "`{text}` is not a routing key; use header:NAME, payload:FIELD, body or random"
            )),
        }
    }
}

impl std::fmt::Display for RoutingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoutingKey::Header(name) => write!(f, "header:{name}"),
            RoutingKey::Payload(field) => write!(f, "payload:{field}"),
            RoutingKey::Body => f.write_str("body"),
            RoutingKey::Random => f.write_str("random"),
        }
    }
}

impl serde::Serialize for RoutingKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl RoutingKey {
    /// Whether the key is read in the decoded request.
    pub fn reads_request(&self) -> bool {
        matches!(self, RoutingKey::Payload(_))
    }

    /// This read's key; `None` when it carries no such header or filter
    /// match (a payload key needs the decoded request).
    pub fn of<'a>(
        &self,
        headers: &'a HeaderMap,
        body: &'a [u8],
        request: Option<&ReadRequest>,
    ) -> Option<Cow<'a, [u8]>> {
        match self {
            RoutingKey::Header(name) => headers.get(name).map(|v| Cow::Borrowed(v.as_bytes())),
            RoutingKey::Payload(field) => request?
                .matched_value(field)
                .map(|value| Cow::Owned(value.into_bytes())),
            RoutingKey::Body => Some(Cow::Borrowed(body)),
            RoutingKey::Random => Some(Cow::Owned(random_key().to_le_bytes().to_vec())),
        }
    }
}

/// A key that differs on every call (and between processes).
fn random_key() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    xxh3_64_with_seed(
        &COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes(),
        u64::from(std::process::id()),
    )
}

/// True for about `basis_points` in 10,000 calls.
pub fn sampled(basis_points: u16) -> bool {
    (random_key() % u64::from(BUCKETS)) < u64::from(basis_points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> impl Iterator<Item = String> {
        (0..n).map(|i| format!("tenant-{i}"))
    }

    #[test]
    fn buckets_are_fixed_across_processes_and_versions() {
        // Golden values: a change here moves users between sides in a running migration.
        assert_eq!(bucket(b"tenant-1"), bucket(b"tenant-1"));
        let golden: Vec<u16> = ["", "tenant-1", "tenant-2", "alice"]
            .iter()
            .map(|k| bucket(k.as_bytes()))
            .collect();
        assert_eq!(golden, GOLDEN);
    }

    /// xxh3_64 with seed 0x0063_7574_6f76_6572, modulo 10,000, computed with
    /// another implementation (Python's `xxhash` package), so that any
    /// instance, in any language, buckets alike.
    const GOLDEN: [u16; 4] = [2698, 9360, 4039, 7922];

    #[test]
    fn raising_the_share_only_moves_keys_to_green() {
        let mut previous: Vec<bool> = keys(5_000).map(|_| false).collect();
        for share in (0..=BUCKETS).step_by(250) {
            let now: Vec<bool> = keys(5_000).map(|k| to_green(k.as_bytes(), share)).collect();
            for (was, is) in previous.iter().zip(&now) {
                assert!(
                    !was || *is,
                    "a key went back to blue when the share rose to {share}"
                );
            }
            previous = now;
        }
        assert!(previous.iter().all(|g| *g), "at 100% every key is green");
    }

    #[test]
    fn the_share_is_what_was_asked_for() {
        let n = 100_000;
        for percent in [1.0, 10.0, 33.3, 50.0, 90.0] {
            let share = basis_points(percent).unwrap();
            let green = keys(n).filter(|k| to_green(k.as_bytes(), share)).count() as f64;
            let p = percent / 100.0;
            // Within 5 standard deviations of a binomial(n, p).
            let bound = 5.0 * (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (green - n as f64 * p).abs() < bound,
                "{percent}%: {green} of {n}"
            );
        }
    }

    #[test]
    fn keys_and_shares_parse() {
        assert_eq!(
            "header:X-Tenant-Id".parse(),
            Ok(RoutingKey::Header(HeaderName::from_static("x-tenant-id")))
        );
        assert_eq!("body".parse(), Ok(RoutingKey::Body));
        assert_eq!(
            "payload:user".parse(),
            Ok(RoutingKey::Payload("user".into()))
        );
        assert!("payload:".parse::<RoutingKey>().is_err());
        assert!("sometimes".parse::<RoutingKey>().is_err());
        assert_eq!(basis_points(12.5), Ok(1250));
        assert!(basis_points(101.0).is_err());
    }
}
