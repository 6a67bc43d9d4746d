//! A deterministic follow graph with a power-law follower distribution.
//!
//! Users are `1..=users`. Each user follows about `mean_follows` others;
//! followees are drawn with probability proportional to `1 / rank^0.9`
//! (a Zipf-like law: most accounts have a few tens of followers, a few have
//! a large share), and the `celebrities` highest ranks additionally get a
//! fixed share of all users as followers. The same seed gives the same graph.

use std::collections::HashMap;

/// splitmix64: small, fast, deterministic.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

#[derive(Debug, Clone)]
pub struct GraphSpec {
    pub users: u64,
    pub mean_follows: u64,
    pub celebrities: u64,
    /// Fraction of all users who follow each celebrity.
    pub celebrity_share: f64,
    pub seed: u64,
}

pub struct Graph {
    pub spec: GraphSpec,
    /// followee -> followers
    pub followers: HashMap<u64, Vec<u64>>,
    pub edges: Vec<(u64, u64)>,
}

impl Graph {
    pub fn build(spec: GraphSpec) -> Graph {
        let n = spec.users.max(2);
        let mut rng = Rng::new(spec.seed);
        // Cumulative weights over ranks for the Zipf draw. Rank r maps to a
        // user via a fixed permutation so celebrities are not just low ids.
        let mut cum = Vec::with_capacity(n as usize);
        let mut total = 0.0;
        for r in 1..=n {
            total += 1.0 / (r as f64).powf(0.9);
            cum.push(total);
        }
        let user_of_rank = |r: u64| -> u64 { (r * 7_919 % n) + 1 };
        let mut edges = std::collections::HashSet::new();
        for follower in 1..=n {
            let k = rng.below(spec.mean_follows * 2 + 1);
            for _ in 0..k {
                let x = rng.f64() * total;
                let r = cum.partition_point(|&c| c < x) as u64;
                let followee = user_of_rank(r.min(n - 1));
                if followee != follower {
                    edges.insert((follower, followee));
                }
            }
        }
        for c in 0..spec.celebrities.min(n) {
            let celeb = user_of_rank(c);
            for follower in 1..=n {
                if follower != celeb && rng.f64() < spec.celebrity_share {
                    edges.insert((follower, celeb));
                }
            }
        }
        let mut edges: Vec<(u64, u64)> = edges.into_iter().collect();
        edges.sort_unstable();
        let mut followers: HashMap<u64, Vec<u64>> = HashMap::new();
        for &(f, t) in &edges {
            followers.entry(t).or_default().push(f);
        }
        Graph {
            spec,
            followers,
            edges,
        }
    }

    pub fn celebrities(&self) -> Vec<u64> {
        let n = self.spec.users.max(2);
        (0..self.spec.celebrities.min(n))
            .map(|r| (r * 7_919 % n) + 1)
            .collect()
    }

    pub fn followers_of(&self, u: u64) -> &[u64] {
        self.followers.get(&u).map(|v| v.as_slice()).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_skewed() {
        let spec = GraphSpec {
            users: 2000,
            mean_follows: 20,
            celebrities: 2,
            celebrity_share: 0.3,
            seed: 7,
        };
        let a = Graph::build(spec.clone());
        let b = Graph::build(spec);
        assert_eq!(a.edges, b.edges);
        let mut counts: Vec<usize> = a.followers.values().map(|v| v.len()).collect();
        counts.sort_unstable();
        let median = counts[counts.len() / 2];
        let max = *counts.last().unwrap();
        assert!(max > 20 * median.max(1), "max {max} median {median}");
        for c in a.celebrities() {
            assert!(a.followers_of(c).len() > 500);
        }
    }
}
