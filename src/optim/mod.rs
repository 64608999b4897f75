//! Sparse optimizer arithmetic and the initial rows of keys not yet stored. Pure: no I/O and
//! no tables (`table/train` runs it).
//!
//! Each update repeats Keras 3's `update_step` operation for operation in float32, with
//! Python-float hyperparameters rounded where Keras rounds them (e.g. Adam's `1 - beta_1` is
//! taken in double precision, then cast, while Nadam's is taken in float32), so a row updated
//! here equals the same row of a dense Keras variable given the same gradient.
//!
//! - `mod.rs`: the optimizers, their hyperparameter vector and their slot names;
//! - `apply.rs`: the per-row update of each;
//! - `clip.rs`: gradient clipping and weight decay, which Keras applies before the update;
//! - `init.rs`: the deterministic initial rows.

use crate::error::{Error, Result};

mod apply;
mod clip;
mod init;

pub use clip::Clip;
pub use init::Init;

/// A sparse optimizer and its hyperparameters (all but the learning rate and the step).
#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    /// `keras.optimizers.SGD`: one slot `m` (TFRA's name) when momentum ≠ 0.
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
    /// `keras.optimizers.Adam` / `AdamW`: slots `m` and `v`, and `vhat` with amsgrad.
    Adam {
        /// Decay of the first moment.
        beta_1: f64,
        /// Decay of the second moment.
        beta_2: f64,
        /// Added to the root of the second moment.
        epsilon: f64,
        /// Divide by the running maximum of `v` (slot `vhat`).
        amsgrad: bool,
    },
    /// `keras.optimizers.Ftrl`: slots `accumulator` and `linear`.
    Ftrl {
        /// `learning_rate_power` (≤ 0).
        lr_power: f64,
        /// Starting value of the accumulator.
        initial_accumulator: f64,
        /// L1 regularization strength.
        l1: f64,
        /// L2 regularization strength.
        l2: f64,
        /// L2 shrinkage regularization strength.
        l2_shrinkage: f64,
        /// `beta`.
        beta: f64,
    },
    /// `keras.optimizers.RMSprop`: slot `velocity`, then `momentum` (momentum > 0), then
    /// `average_gradient` (centered).
    Rmsprop {
        /// Discount of the squared-gradient average.
        rho: f64,
        /// Momentum factor (0: none).
        momentum: f64,
        /// Added under the square root.
        epsilon: f64,
        /// Subtract the squared mean gradient.
        centered: bool,
    },
    /// `keras.optimizers.Adadelta`: slots `accumulated_grad` and `accumulated_delta_var`.
    Adadelta {
        /// Decay rate.
        rho: f64,
        /// Added under the square roots.
        epsilon: f64,
    },
    /// `keras.optimizers.Adamax`: slots `m` and `u` (TFRA's names).
    Adamax {
        /// Decay of the first moment.
        beta_1: f64,
        /// Decay of the infinity norm.
        beta_2: f64,
        /// Added to the norm.
        epsilon: f64,
    },
    /// `keras.optimizers.Nadam`: slots `m` and `v`.
    Nadam {
        /// Decay of the first moment.
        beta_1: f64,
        /// Decay of the second moment.
        beta_2: f64,
        /// Added to the root of the second moment.
        epsilon: f64,
        /// The optimizer's `u_product` after this step's update (a float32 value).
        u_product: f64,
    },
    /// `keras.optimizers.Lion`: slot `m`.
    Lion {
        /// Interpolation of momentum and gradient for the update.
        beta_1: f64,
        /// Decay of the momentum.
        beta_2: f64,
    },
}

/// The per-step values: learning rate (after any schedule), Keras's `iterations + 1`, and
/// what Keras applies before the update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Learning rate of this step.
    pub lr: f32,
    /// The 1-based step number used by bias corrections.
    pub number: f32,
    /// Keras's `clipvalue` / `clipnorm`, applied to the summed gradient.
    pub clip: Clip,
    /// Keras's `weight_decay` (0: none), applied to the batch's rows before the update.
    pub weight_decay: f32,
    /// Keras's `global_clipnorm` factor for this step (`clip / max(norm, clip)` over the dense
    /// gradients and every layer's summed rows, computed before the apply), or none.
    pub global_scale: Option<f32>,
    /// Keras's `gradient_accumulation_steps`, or none.
    pub accumulate: Option<Accumulate>,
}

/// One step of a `gradient_accumulation_steps` cycle: every step adds its summed rows to the
/// accumulator, and the last of each `steps` applies the average of them all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accumulate {
    /// The cycle's length (≥ 2).
    pub steps: u32,
    /// This is the cycle's last step, which updates the rows.
    pub update: bool,
}

/// Each optimizer's own hyperparameters, in the order of the `hyper` vector.
const OWN: &[(&str, &[&str])] = &[
    ("sgd", &["momentum", "nesterov"]),
    ("adagrad", &["initial_accumulator_value", "epsilon"]),
    ("adam", &["beta_1", "beta_2", "epsilon", "amsgrad"]),
    (
        "ftrl",
        &[
            "learning_rate_power",
            "initial_accumulator_value",
            "l1_regularization_strength",
            "l2_regularization_strength",
            "l2_shrinkage_regularization_strength",
            "beta",
        ],
    ),
    ("rmsprop", &["rho", "momentum", "epsilon", "centered"]),
    ("adadelta", &["rho", "epsilon"]),
    ("adamax", &["beta_1", "beta_2", "epsilon"]),
    ("nadam", &["beta_1", "beta_2", "epsilon", "u_product"]),
    ("lion", &["beta_1", "beta_2"]),
];

/// What every `hyper` vector ends with.
const COMMON: [&str; 6] = [
    "clipvalue",
    "clipnorm",
    "weight_decay",
    "global_clip_scale",
    "gradient_accumulation_steps",
    "accumulation_update",
];

impl Optimizer {
    /// Parses the op's `optimizer` attribute and its `hyper` vector:
    /// `[lr, step, <the optimizer's own, as in OWN>, <COMMON>]`, where booleans are 0/1 and 0
    /// turns clipping, decay, the global clip and accumulation off.
    pub fn parse(name: &str, hyper: &[f64]) -> Result<(Optimizer, Step)> {
        let Some(&(_, own)) = OWN.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = OWN.iter().map(|(n, _)| *n).collect();
            return Err(Error::invalid(format!(
                "unknown optimizer {name:?}: expected one of {}",
                names.join(", ")
            )));
        };
        let want = 2 + own.len() + COMMON.len();
        if hyper.len() != want {
            return Err(Error::invalid(format!(
                "optimizer {name} takes {want} hyperparameters (lr, step, {}, {}), got {}",
                own.join(", "),
                COMMON.join(", "),
                hyper.len()
            )));
        }
        if let Some(bad) = hyper.iter().position(|h| !h.is_finite()) {
            return Err(Error::invalid(format!(
                "optimizer {name}: hyperparameter {bad} is not finite ({})",
                hyper[bad]
            )));
        }
        let (h, tail) = (&hyper[2..2 + own.len()], &hyper[2 + own.len()..]);
        let off = |i: usize| -> Result<Option<f32>> {
            if tail[i] < 0.0 {
                return Err(Error::invalid(format!(
                    "optimizer {name}: {} must not be negative, got {}",
                    COMMON[i], tail[i]
                )));
            }
            Ok((tail[i] > 0.0).then_some(tail[i] as f32))
        };
        let step = Step {
            lr: hyper[0] as f32,
            number: hyper[1] as f32,
            clip: Clip {
                value: off(0)?,
                norm: off(1)?,
            },
            weight_decay: off(2)?.unwrap_or(0.0),
            global_scale: off(3)?,
            accumulate: match off(4)? {
                None => None,
                Some(n) if n < 2.0 || n.fract() != 0.0 || n > u32::MAX as f32 => {
                    return Err(Error::invalid(format!(
                        "optimizer {name}: gradient_accumulation_steps must be an integer >= 2, \
                         got {n}"
                    )))
                }
                Some(n) => Some(Accumulate {
                    steps: n as u32,
                    update: tail[5] != 0.0,
                }),
            },
        };
        let opt = match name {
            "sgd" => Optimizer::Sgd {
                momentum: h[0],
                nesterov: h[1] != 0.0,
            },
            "adagrad" => Optimizer::Adagrad {
                initial_accumulator: h[0],
                epsilon: h[1],
            },
            "adam" => Optimizer::Adam {
                beta_1: h[0],
                beta_2: h[1],
                epsilon: h[2],
                amsgrad: h[3] != 0.0,
            },
            "ftrl" => Optimizer::Ftrl {
                lr_power: h[0],
                initial_accumulator: h[1],
                l1: h[2],
                l2: h[3],
                l2_shrinkage: h[4],
                beta: h[5],
            },
            "rmsprop" => Optimizer::Rmsprop {
                rho: h[0],
                momentum: h[1],
                epsilon: h[2],
                centered: h[3] != 0.0,
            },
            "adadelta" => Optimizer::Adadelta {
                rho: h[0],
                epsilon: h[1],
            },
            "adamax" => Optimizer::Adamax {
                beta_1: h[0],
                beta_2: h[1],
                epsilon: h[2],
            },
            "nadam" => Optimizer::Nadam {
                beta_1: h[0],
                beta_2: h[1],
                epsilon: h[2],
                u_product: h[3],
            },
            _ => Optimizer::Lion {
                beta_1: h[0],
                beta_2: h[1],
            },
        };
        Ok((opt, step))
    }

    /// The slot names, in storage order: TFRA's `DynamicEmbeddingOptimizer` names (with
    /// tf-keras 2.16's optimizers), which its slot tables carry.
    pub fn slots(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd { momentum, .. } if *momentum == 0.0 => &[],
            Optimizer::Sgd { .. } | Optimizer::Lion { .. } => &["m"],
            Optimizer::Adagrad { .. } => &["accumulator"],
            Optimizer::Adam { amsgrad: false, .. } | Optimizer::Nadam { .. } => &["m", "v"],
            Optimizer::Adam { amsgrad: true, .. } => &["m", "v", "vhat"],
            Optimizer::Ftrl { .. } => &["accumulator", "linear"],
            Optimizer::Rmsprop {
                momentum, centered, ..
            } => match (*momentum > 0.0, *centered) {
                (false, false) => &["velocity"],
                (true, false) => &["velocity", "momentum"],
                (false, true) => &["velocity", "average_gradient"],
                (true, true) => &["velocity", "momentum", "average_gradient"],
            },
            Optimizer::Adadelta { .. } => &["accumulated_grad", "accumulated_delta_var"],
            Optimizer::Adamax { .. } => &["m", "u"],
        }
    }

    /// The value every element of slot `i` starts at.
    pub fn slot_init(&self, i: usize) -> f32 {
        match self {
            Optimizer::Adagrad {
                initial_accumulator,
                ..
            } => *initial_accumulator as f32,
            Optimizer::Ftrl {
                initial_accumulator,
                ..
            } if i == 0 => *initial_accumulator as f32,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_checks_names_lengths_and_finiteness() {
        let e = Optimizer::parse("adafactor", &[0.1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown optimizer") && e.contains("ftrl"), "{e}");
        let e = Optimizer::parse("adam", &[0.1, 1.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes 12") && e.contains("amsgrad"), "{e}");
        assert!(Optimizer::parse(
            "sgd",
            &[f64::NAN, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        )
        .unwrap_err()
        .to_string()
        .contains("not finite"));
        let sgd = |tail: [f64; 6]| {
            let mut h = vec![0.1, 1.0, 0.0, 0.0];
            h.extend_from_slice(&tail);
            Optimizer::parse("sgd", &h)
        };
        let e = sgd([0.0, 0.0, -0.1, 0.0, 0.0, 0.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("weight_decay must not be negative"), "{e}");
        let (opt, step) = sgd([0.5, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
        assert!(opt.slots().is_empty());
        assert_eq!((step.clip.value, step.clip.norm), (Some(0.5), None));
        assert_eq!(
            (step.weight_decay, step.global_scale, step.accumulate),
            (0.0, None, None)
        );
        let (_, step) = sgd([0.0, 0.0, 0.0, 0.25, 4.0, 1.0]).unwrap();
        assert_eq!(step.global_scale, Some(0.25));
        assert_eq!(
            step.accumulate,
            Some(Accumulate {
                steps: 4,
                update: true
            })
        );
        for bad in [1.0, 2.5] {
            let e = sgd([0.0, 0.0, 0.0, 0.0, bad, 0.0]).unwrap_err().to_string();
            assert!(
                e.contains("gradient_accumulation_steps must be an integer >= 2"),
                "{e}"
            );
        }
    }

    #[test]
    fn slot_names_are_tfras() {
        let parse = |n: &str, own: &[f64]| {
            let mut h = vec![0.1, 1.0];
            h.extend_from_slice(own);
            h.extend_from_slice(&[0.0; COMMON.len()]);
            Optimizer::parse(n, &h).unwrap().0
        };
        assert_eq!(parse("sgd", &[0.9, 0.0]).slots(), &["m"]);
        assert_eq!(
            parse("adam", &[0.9, 0.999, 1e-7, 1.0]).slots(),
            &["m", "v", "vhat"]
        );
        let ftrl = parse("ftrl", &[-0.5, 0.1, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(ftrl.slots(), &["accumulator", "linear"]);
        assert_eq!((ftrl.slot_init(0), ftrl.slot_init(1)), (0.1, 0.0));
        let rms = parse("rmsprop", &[0.9, 0.5, 1e-7, 1.0]);
        assert_eq!(rms.slots(), &["velocity", "momentum", "average_gradient"]);
        assert_eq!(parse("adamax", &[0.9, 0.999, 1e-7]).slots(), &["m", "u"]);
    }
}
