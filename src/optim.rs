//! Sparse optimizer arithmetic and the initial rows of keys not yet stored. Pure: no I/O and
//! no tables (`table/train.rs` runs it).
//!
//! Each update repeats Keras 3's `update_step` operation for operation in float32, with
//! Python-float hyperparameters rounded where Keras rounds them (e.g. `1 - beta_1` is taken in
//! double precision, then cast), so a row updated here equals the same row of a dense Keras
//! variable given the same gradient.

use crate::error::{Error, Result};

/// A sparse optimizer and its hyperparameters (all but the learning rate and the step).
#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    /// `keras.optimizers.SGD`: one `momentum` slot when momentum ≠ 0.
    Sgd {
        /// Momentum factor.
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// `keras.optimizers.Adagrad`: one `accumulator` slot.
    Adagrad {
        /// Starting value of the accumulator.
        initial_accumulator: f64,
        /// Added under the square root.
        epsilon: f64,
    },
    /// `keras.optimizers.Adam` (without amsgrad): slots `m` and `v`.
    Adam {
        /// Decay of the first moment.
        beta_1: f64,
        /// Decay of the second moment.
        beta_2: f64,
        /// Added to the root of the second moment.
        epsilon: f64,
    },
}

/// The per-step values: learning rate (after any schedule), Keras's `iterations + 1`, and
/// the gradient clipping to apply first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Learning rate of this step.
    pub lr: f32,
    /// The 1-based step number used by Adam's bias correction.
    pub number: f32,
    /// Keras's `clipvalue` / `clipnorm`, applied to the summed gradient.
    pub clip: Clip,
}

/// Keras's per-variable gradient clipping, applied as Keras applies it to a dense variable:
/// to the gradient after duplicate ids are summed (a dense embedding's gradient has one row
/// per id), so `clipnorm` bounds the norm of the whole step's rows together.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Clip {
    /// Each element to `[-value, value]` (`clipvalue`).
    pub value: Option<f32>,
    /// All rows scaled by `norm / max(‖g‖, norm)` (`clipnorm`).
    pub norm: Option<f32>,
}

impl Clip {
    /// Clips `sums` (every distinct row's summed gradient of one step) in place, with Keras's
    /// arithmetic: `clip(g, -v, v)`, and `g * norm / max(‖g‖₂, norm)` in float32.
    pub fn apply(&self, sums: &mut [f32]) {
        if let Some(v) = self.value {
            for g in sums.iter_mut() {
                *g = g.clamp(-v, v);
            }
        }
        if let Some(norm) = self.norm {
            let l2sum: f64 = sums.iter().map(|&g| f64::from(g) * f64::from(g)).sum();
            let l2norm = (l2sum.sqrt() as f32).max(norm);
            for g in sums.iter_mut() {
                *g = (*g * norm) / l2norm;
            }
        }
    }
}

impl Optimizer {
    /// Parses the op's `optimizer` attribute and its `hyper` vector, which ends with
    /// `clipvalue, clipnorm` (0 for none):
    /// - `sgd`: `[lr, step, momentum, nesterov (0/1), clipvalue, clipnorm]`;
    /// - `adagrad`: `[lr, step, initial_accumulator_value, epsilon, clipvalue, clipnorm]`;
    /// - `adam`: `[lr, step, beta_1, beta_2, epsilon, clipvalue, clipnorm]`.
    pub fn parse(name: &str, hyper: &[f64]) -> Result<(Optimizer, Step)> {
        let want = match name {
            "sgd" | "adagrad" => 6,
            "adam" => 7,
            _ => {
                return Err(Error::invalid(format!(
                    "unknown optimizer {name:?}: expected sgd, adagrad or adam"
                )))
            }
        };
        if hyper.len() != want {
            return Err(Error::invalid(format!(
                "optimizer {name} takes {want} hyperparameters, got {}",
                hyper.len()
            )));
        }
        if let Some(bad) = hyper.iter().position(|h| !h.is_finite()) {
            return Err(Error::invalid(format!(
                "optimizer {name}: hyperparameter {bad} is not finite ({})",
                hyper[bad]
            )));
        }
        let clip = |i: usize| -> Result<Option<f32>> {
            let h = hyper[want - 2 + i];
            if h < 0.0 {
                return Err(Error::invalid(format!(
                    "optimizer {name}: {} must be positive, got {h}",
                    ["clipvalue", "clipnorm"][i]
                )));
            }
            Ok((h > 0.0).then_some(h as f32))
        };
        let step = Step {
            lr: hyper[0] as f32,
            number: hyper[1] as f32,
            clip: Clip {
                value: clip(0)?,
                norm: clip(1)?,
            },
        };
        let opt = match name {
            "sgd" => Optimizer::Sgd {
                momentum: hyper[2],
                nesterov: hyper[3] != 0.0,
            },
            "adagrad" => Optimizer::Adagrad {
                initial_accumulator: hyper[2],
                epsilon: hyper[3],
            },
            _ => Optimizer::Adam {
                beta_1: hyper[2],
                beta_2: hyper[3],
                epsilon: hyper[4],
            },
        };
        Ok((opt, step))
    }

    /// The slot names, in storage order (TFRA's and Keras's names).
    pub fn slots(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd { momentum, .. } if *momentum == 0.0 => &[],
            Optimizer::Sgd { .. } => &["momentum"],
            Optimizer::Adagrad { .. } => &["accumulator"],
            Optimizer::Adam { .. } => &["m", "v"],
        }
    }

    /// The value every element of slot `i` starts at.
    pub fn slot_init(&self, _i: usize) -> f32 {
        match self {
            Optimizer::Adagrad {
                initial_accumulator,
                ..
            } => *initial_accumulator as f32,
            _ => 0.0,
        }
    }

    /// Updates one row in place: `param` and `grad` have `dim` elements, `slots` holds
    /// `self.slots().len()` rows of `dim` one after another.
    pub fn apply(&self, step: Step, param: &mut [f32], slots: &mut [f32], grad: &[f32]) {
        let dim = param.len();
        debug_assert_eq!(grad.len(), dim);
        debug_assert_eq!(slots.len(), dim * self.slots().len());
        let lr = step.lr;
        match *self {
            Optimizer::Sgd { momentum, nesterov } if momentum != 0.0 => {
                let mom = momentum as f32;
                for ((p, m), &g) in param.iter_mut().zip(slots.iter_mut()).zip(grad) {
                    *m = *m * mom - g * lr;
                    if nesterov {
                        *p += *m * mom - g * lr;
                    } else {
                        *p += *m;
                    }
                }
            }
            Optimizer::Sgd { .. } => {
                for (p, &g) in param.iter_mut().zip(grad) {
                    *p -= g * lr;
                }
            }
            Optimizer::Adagrad { epsilon, .. } => {
                let eps = epsilon as f32;
                for ((p, a), &g) in param.iter_mut().zip(slots.iter_mut()).zip(grad) {
                    *a += g * g;
                    *p -= (lr * g) / (*a + eps).sqrt();
                }
            }
            Optimizer::Adam {
                beta_1,
                beta_2,
                epsilon,
            } => {
                let b1_power = (beta_1 as f32).powf(step.number);
                let b2_power = (beta_2 as f32).powf(step.number);
                let alpha = lr * (1.0 - b2_power).sqrt() / (1.0 - b1_power);
                let (one_minus_b1, one_minus_b2) = ((1.0 - beta_1) as f32, (1.0 - beta_2) as f32);
                let eps = epsilon as f32;
                let (m, v) = slots.split_at_mut(dim);
                for i in 0..dim {
                    let g = grad[i];
                    m[i] += (g - m[i]) * one_minus_b1;
                    v[i] += (g * g - v[i]) * one_minus_b2;
                    param[i] -= (m[i] * alpha) / (v[i].sqrt() + eps);
                }
            }
        }
    }
}

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

    fn adam() -> Optimizer {
        Optimizer::parse("adam", &[0.01, 1.0, 0.9, 0.999, 1e-7, 0.0, 0.0])
            .unwrap()
            .0
    }

    #[test]
    fn parse_checks_names_lengths_and_finiteness() {
        assert!(Optimizer::parse("rmsprop", &[0.1])
            .unwrap_err()
            .to_string()
            .contains("unknown optimizer"));
        assert!(Optimizer::parse("adam", &[0.1, 1.0, 0.0, 0.0])
            .unwrap_err()
            .to_string()
            .contains("takes 7"));
        assert!(
            Optimizer::parse("sgd", &[f64::NAN, 1.0, 0.0, 0.0, 0.0, 0.0])
                .unwrap_err()
                .to_string()
                .contains("not finite")
        );
        assert_eq!(adam().slots(), &["m", "v"]);
        let sgd = Optimizer::parse("sgd", &[0.1, 1.0, 0.0, 0.0, 0.0, 0.0])
            .unwrap()
            .0;
        assert!(sgd.slots().is_empty());
    }

    #[test]
    fn adam_first_step_moves_each_element_by_about_lr() {
        // With zero moments, step 1 moves every element by lr · g/|g| (up to epsilon).
        let (opt, step) =
            Optimizer::parse("adam", &[0.01, 1.0, 0.9, 0.999, 1e-7, 0.0, 0.0]).unwrap();
        let mut p = [1.0f32, -1.0];
        let mut s = [0.0f32; 4];
        opt.apply(step, &mut p, &mut s, &[0.5, -2.0]);
        assert!((p[0] - 0.99).abs() < 1e-6, "{p:?}");
        assert!((p[1] + 0.99).abs() < 1e-6, "{p:?}");
        assert!(
            (s[0] - 0.05).abs() < 1e-7 && (s[2] - 0.00025).abs() < 1e-9,
            "{s:?}"
        );
    }

    #[test]
    fn adagrad_and_sgd_match_their_formulas() {
        let (ada, step) = Optimizer::parse("adagrad", &[0.1, 1.0, 0.1, 1e-7, 0.0, 0.0]).unwrap();
        assert_eq!(ada.slot_init(0), 0.1f32);
        let (mut p, mut a) = ([1.0f32], [0.1f32]);
        ada.apply(step, &mut p, &mut a, &[2.0]);
        assert_eq!(a[0], 4.1);
        assert!((p[0] - (1.0 - 0.2 / (4.1f32 + 1e-7).sqrt())).abs() < 1e-7);

        let (mom, step) = Optimizer::parse("sgd", &[0.1, 1.0, 0.9, 1.0, 0.0, 0.0]).unwrap();
        let (mut p, mut m) = ([1.0f32], [0.5f32]);
        mom.apply(step, &mut p, &mut m, &[1.0]);
        // m = 0.5·0.9 − 0.1 = 0.35; nesterov: p += 0.35·0.9 − 0.1.
        assert!((m[0] - 0.35).abs() < 1e-7);
        assert!((p[0] - (1.0 + 0.35 * 0.9 - 0.1)).abs() < 1e-6);
    }

    #[test]
    fn clipping_applies_to_the_summed_rows_as_keras_clips_a_dense_gradient() {
        let parse = |cv: f64, cn: f64| Optimizer::parse("sgd", &[1.0, 1.0, 0.0, 0.0, cv, cn]);
        assert_eq!(parse(0.0, 0.0).unwrap().1.clip, Clip::default());
        assert!(parse(-1.0, 0.0)
            .unwrap_err()
            .to_string()
            .contains("clipvalue must be positive"));
        assert!(parse(0.0, -1.0)
            .unwrap_err()
            .to_string()
            .contains("clipnorm must be positive"));
        // Ids [1, 1, 1, 2] with 0.4 per position sum to 1.2 and 0.4: clipvalue bounds the sum.
        let mut g = [1.2f32, 0.4];
        parse(0.5, 0.0).unwrap().1.clip.apply(&mut g);
        assert_eq!(g, [0.5, 0.4]);
        // clipnorm scales every row of the step by one factor: the norm of them all.
        let mut g = [3.0f32, 4.0];
        parse(0.0, 0.5).unwrap().1.clip.apply(&mut g);
        assert_eq!(g, [3.0 * 0.5 / 5.0, 4.0 * 0.5 / 5.0]);
        let mut small = [0.1f32, -0.2];
        parse(0.0, 0.5).unwrap().1.clip.apply(&mut small);
        assert_eq!(small, [0.1, -0.2]);
    }

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
