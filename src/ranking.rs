//! Ranked lists of point IDs: Reciprocal Rank Fusion of two sides' answers,
//! and the measures a shadow read compares them by. Pure functions, no I/O.
//!
//! RRF as in Cormack, Clarke and Büttcher (2009): an item's score is
//! `sum over sides of weight / (k + rank)`, rank counted from 1, k = 60 by
//! default. Qdrant's own `rrf` fusion scores `1 / (k + position)` with a
//! 0-based position and k = 2, which is the same formula with rank = position
//! + 1 and k = 1 (docs/reads.md works the mapping through).

use std::collections::HashMap;
use std::hash::Hash;

use crate::routing::Side;

/// How two sides' answers are fused.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rrf {
    pub k: f64,
    pub blue_weight: f64,
    pub green_weight: f64,
}

impl Default for Rrf {
    fn default() -> Self {
        Rrf {
            k: 60.0,
            blue_weight: 1.0,
            green_weight: 1.0,
        }
    }
}

impl Rrf {
    fn weight(&self, side: Side) -> f64 {
        match side {
            Side::Blue => self.blue_weight,
            Side::Green => self.green_weight,
        }
    }

    /// Fuses the primary's and the secondary's ranked items into one list,
    /// best first, each with its RRF score. An item both sides ranked is
    /// kept once, as the primary gave it. Ties keep the primary's order,
    /// then the secondary's. `offset` and `limit` apply to the fused list.
    pub fn fuse<T, K: Eq + Hash>(
        &self,
        primary_side: Side,
        primary: Vec<T>,
        secondary: Vec<T>,
        key: impl Fn(&T) -> K,
        offset: usize,
        limit: usize,
    ) -> Vec<(T, f64)> {
        let mut fused: Vec<(T, f64)> = Vec::with_capacity(primary.len() + secondary.len());
        let mut seen: HashMap<K, usize> = HashMap::with_capacity(primary.len());
        let sides = [
            (primary, self.weight(primary_side)),
            (secondary, self.weight(primary_side.other())),
        ];
        for (items, weight) in sides {
            for (index, item) in items.into_iter().enumerate() {
                let score = weight / (self.k + (index + 1) as f64);
                match seen.get(&key(&item)) {
                    Some(&at) => fused[at].1 += score,
                    None => {
                        seen.insert(key(&item), fused.len());
                        fused.push((item, score));
                    }
                }
            }
        }
        // Stable: equal scores keep first-seen order.
        fused.sort_by(|a, b| b.1.total_cmp(&a.1));
        fused.into_iter().skip(offset).take(limit).collect()
    }
}

/// How alike two ranked ID lists are.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Agreement {
    /// Shared IDs over the longer list's length (1 when both are empty).
    pub overlap: f64,
    /// Rank-biased overlap (Webber, Moffat and Zobel 2010), p = 0.9,
    /// extrapolated to the lists' common depth: 1 for the same order.
    pub rbo: f64,
    /// Both lists start with the same ID (or both are empty).
    pub top1: bool,
    /// The second list's length minus the first's.
    pub count_difference: i64,
}

impl Agreement {
    /// Nothing differs.
    pub fn identical(&self) -> bool {
        self.overlap == 1.0 && self.top1 && self.count_difference == 0 && self.rbo >= 1.0 - 1e-9
    }
}

/// The persistence of rank-biased overlap: how much the top ranks weigh.
const RBO_P: f64 = 0.9;

pub fn agreement<K: Eq + Hash>(a: &[K], b: &[K]) -> Agreement {
    let count_difference = b.len() as i64 - a.len() as i64;
    if a.is_empty() && b.is_empty() {
        return Agreement {
            overlap: 1.0,
            rbo: 1.0,
            top1: true,
            count_difference,
        };
    }
    let in_b: std::collections::HashSet<&K> = b.iter().collect();
    let shared = a.iter().filter(|id| in_b.contains(id)).count();
    Agreement {
        overlap: shared as f64 / a.len().max(b.len()) as f64,
        rbo: rbo(a, b),
        top1: a.first() == b.first(),
        count_difference,
    }
}

/// RBO_ext (Webber et al. 2010, eq. 32) at depth k = the shorter list's
/// length: `X_k/k * p^k + (1-p)/p * sum_{d=1..k} X_d/d * p^d`, where X_d
/// is the number of IDs the two top-d prefixes share.
fn rbo<K: Eq + Hash>(a: &[K], b: &[K]) -> f64 {
    let depth = a.len().min(b.len());
    if depth == 0 {
        return 0.0;
    }
    let (mut seen_a, mut seen_b) = (
        std::collections::HashSet::with_capacity(depth),
        std::collections::HashSet::with_capacity(depth),
    );
    let (mut shared, mut sum, mut weight) = (0usize, 0.0, 1.0);
    for d in 1..=depth {
        let (x, y) = (&a[d - 1], &b[d - 1]);
        if x == y {
            shared += 1;
        } else {
            shared += usize::from(seen_b.contains(x)) + usize::from(seen_a.contains(y));
        }
        seen_a.insert(x);
        seen_b.insert(y);
        weight *= RBO_P;
        sum += shared as f64 / d as f64 * weight;
    }
    shared as f64 / depth as f64 * weight + (1.0 - RBO_P) / RBO_P * sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fused(rrf: &Rrf, a: &[u32], b: &[u32], offset: usize, limit: usize) -> Vec<(u32, f64)> {
        rrf.fuse(Side::Blue, a.to_vec(), b.to_vec(), |id| *id, offset, limit)
    }

    #[test]
    fn rrf_matches_a_hand_computed_fusion() {
        // blue: 1 2 3 4, green: 3 1 5.
        // 1: 1/61 + 1/62 = 0.032522...   3: 1/63 + 1/61 = 0.032266...
        // 2: 1/62 = 0.016129...  5: 1/63 = 0.015873...  4: 1/64 = 0.015625
        let rrf = Rrf::default();
        let got = fused(&rrf, &[1, 2, 3, 4], &[3, 1, 5], 0, 10);
        let want = [
            (1, 1.0 / 61.0 + 1.0 / 62.0),
            (3, 1.0 / 63.0 + 1.0 / 61.0),
            (2, 1.0 / 62.0),
            (5, 1.0 / 63.0),
            (4, 1.0 / 64.0),
        ];
        assert_eq!(got.len(), want.len());
        for ((id, score), (want_id, want_score)) in got.iter().zip(want) {
            assert_eq!(*id, want_id);
            assert!((score - want_score).abs() < 1e-12, "{id}: {score}");
        }
        // Offset and limit cut the fused list, not each side's.
        let page: Vec<u32> = fused(&rrf, &[1, 2, 3, 4], &[3, 1, 5], 1, 2)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(page, [3, 2]);
    }

    #[test]
    fn weights_and_k_change_the_order() {
        // k = 1, green weighted 3: 3 = 1/4 + 3/2 = 1.75, 1 = 1/2 + 3/3 = 1.5, 2 = 1/3.
        let rrf = Rrf {
            k: 1.0,
            blue_weight: 1.0,
            green_weight: 3.0,
        };
        let got = fused(&rrf, &[1, 2, 3], &[3, 1], 0, 10);
        // Green primary: its list comes first, with green's weight still its own.
        let swapped = rrf.fuse(Side::Green, vec![3, 1], vec![1, 2, 3], |id| *id, 0, 10);
        assert_eq!(
            swapped.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [3, 1, 2]
        );
        let ids: Vec<u32> = got.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [3, 1, 2]);
        assert!((got[0].1 - 1.75).abs() < 1e-12);
        assert!((got[1].1 - 1.5).abs() < 1e-12);
    }

    #[test]
    fn a_point_both_sides_rank_is_kept_as_the_primary_gave_it() {
        let rrf = Rrf::default();
        let got = rrf.fuse(
            Side::Blue,
            vec![(7, "primary")],
            vec![(7, "secondary"), (8, "secondary")],
            |(id, _)| *id,
            0,
            10,
        );
        assert_eq!(got[0].0, (7, "primary"));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn agreement_of_equal_lists_is_perfect() {
        let a = agreement(&[1, 2, 3], &[1, 2, 3]);
        assert!(a.identical(), "{a:?}");
        assert!((a.rbo - 1.0).abs() < 1e-9);
        assert!(agreement::<u32>(&[], &[]).identical());
    }

    #[test]
    fn agreement_measures_differences() {
        let a = agreement(&[1, 2, 3, 4], &[2, 1, 3, 9]);
        assert_eq!(a.overlap, 0.75);
        assert!(!a.top1);
        assert_eq!(a.count_difference, 0);
        // X_1 = 0, X_2 = 2, X_3 = 3, X_4 = 3; RBO_ext by hand:
        let p: f64 = 0.9;
        let sum = 0.0 + 2.0 / 2.0 * p.powi(2) + 3.0 / 3.0 * p.powi(3) + 3.0 / 4.0 * p.powi(4);
        let want = 3.0 / 4.0 * p.powi(4) + (1.0 - p) / p * sum;
        assert!((a.rbo - want).abs() < 1e-12, "{} vs {want}", a.rbo);
        let disjoint = agreement(&[1, 2], &[3, 4, 5]);
        assert_eq!((disjoint.overlap, disjoint.rbo), (0.0, 0.0));
        assert_eq!(disjoint.count_difference, 1);
        assert!(!agreement(&[1], &[]).identical());
    }
}
