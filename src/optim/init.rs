//! The initial rows of keys not yet stored: deterministic in the key and a seed.

use crate::error::{Error, Result};

/// How the row of a key not yet stored starts: deterministic in the key and a seed, so a
/// rerun or another worker sees the same row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Every element `value`.
    Constant(f32),
    /// Uniform in `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f32,
        /// Upper bound.
        high: f32,
    },
    /// Normal with `mean` and `stddev`.
    Normal {
        /// Mean.
        mean: f32,
        /// Standard deviation.
        stddev: f32,
    },
    /// Normal, with draws beyond two standard deviations drawn again (Keras's
    /// `TruncatedNormal`).
    TruncatedNormal {
        /// Mean.
        mean: f32,
        /// Standard deviation before truncation.
        stddev: f32,
    },
}

impl Init {
    /// Parses the op's `init` attribute (`constant`, `uniform`, `normal`, `truncated_normal`)
    /// with its two parameters (value and unused; low and high; mean and stddev).
    pub fn parse(kind: &str, a: f32, b: f32) -> Result<Init> {
        let init = match kind {
            "constant" => Init::Constant(a),
            "uniform" => Init::Uniform { low: a, high: b },
            "normal" => Init::Normal { mean: a, stddev: b },
            "truncated_normal" => Init::TruncatedNormal { mean: a, stddev: b },
            _ => {
                return Err(Error::invalid(format!(
                    "unknown initializer kind {kind:?}: expected constant, uniform, normal or \
                     truncated_normal"
                )))
            }
        };
        if !a.is_finite() || !b.is_finite() {
            return Err(Error::invalid(format!(
                "initializer {kind}: parameters must be finite, got {a} and {b}"
            )));
        }
        Ok(init)
    }

    /// Fills `out` with the initial row of `key`.
    pub fn fill(&self, seed: u64, key: &[u8], out: &mut [f32]) {
        let mut rng = SplitMix::new(seed, key);
        match *self {
            Init::Constant(v) => out.fill(v),
            Init::Uniform { low, high } => {
                for o in out {
                    *o = low + (high - low) * rng.unit();
                }
            }
            Init::Normal { mean, stddev } => {
                rng.normals(out, |z| Some(mean + stddev * z));
            }
            Init::TruncatedNormal { mean, stddev } => {
                rng.normals(out, |z| (z.abs() <= 2.0).then_some(mean + stddev * z));
            }
        }
    }
}

/// SplitMix64 seeded from a key's bytes (FNV-1a) and a seed.
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64, key: &[u8]) -> SplitMix {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in key {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        SplitMix(h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 24 bits.
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Fills `out` with `keep(z)` for standard normal draws `z`, skipping the draws it
    /// refuses. Marsaglia's polar method: each accepted pair costs one logarithm and one square
    /// root, with no trigonometry (row initialisation is on the lookup path).
    fn normals(&mut self, out: &mut [f32], keep: impl Fn(f32) -> Option<f32>) {
        let mut i = 0;
        while i < out.len() {
            let (u, v) = (2.0 * self.unit() - 1.0, 2.0 * self.unit() - 1.0);
            let s = u * u + v * v;
            if s >= 1.0 || s == 0.0 {
                continue;
            }
            let f = (-2.0 * s.ln() / s).sqrt();
            for z in [u * f, v * f] {
                if let (Some(x), true) = (keep(z), i < out.len()) {
                    out[i] = x;
                    i += 1;
                }
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_rows_depend_on_key_and_seed_only() {
        let init = Init::parse("uniform", -0.05, 0.05).unwrap();
        let (mut a, mut b, mut c) = ([0f32; 64], [0f32; 64], [0f32; 64]);
        init.fill(7, b"key-1", &mut a);
        init.fill(7, b"key-1", &mut b);
        init.fill(8, b"key-1", &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|v| (-0.05..0.05).contains(v)));
        let mean: f32 = a.iter().sum::<f32>() / 64.0;
        assert!(mean.abs() < 0.02, "{mean}");
    }

    #[test]
    fn normal_draws_have_the_asked_moments_and_truncation_bounds() {
        let normal = Init::parse("normal", 1.0, 2.0).unwrap();
        let trunc = Init::parse("truncated_normal", 0.0, 1.0).unwrap();
        let (mut n, mut t) = (vec![0f32; 20_000], vec![0f32; 20_000]);
        normal.fill(1, b"k", &mut n);
        trunc.fill(1, b"k", &mut t);
        let mean = n.iter().sum::<f32>() / n.len() as f32;
        let var = n.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n.len() as f32;
        assert!(
            (mean - 1.0).abs() < 0.06 && (var.sqrt() - 2.0).abs() < 0.06,
            "{mean} {var}"
        );
        assert!(t.iter().all(|x| x.abs() <= 2.0));
        assert!(Init::parse("orthogonal", 0.0, 0.0).is_err());
    }
}
