//! One row's update: Keras 3's `update_step` of each optimizer, operation for operation in
//! float32. A hyperparameter is cast to float32 where Keras casts it: `1 - beta_1` is a Python
//! float (double) in Adam, Adamax, RMSprop and Adadelta, but a float32 tensor in Nadam and
//! Lion, which cast `beta_1` first.

use super::clip::decay;
use super::{Optimizer, Step};

/// TF's `sign`: 0 at 0 (`f32::signum` gives 1).
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

impl Optimizer {
    /// Updates one row in place: `param` and `grad` have `dim` elements, `slots` holds
    /// `self.slots().len()` rows of `dim` one after another. Weight decay comes first, as
    /// Keras applies it before the update step.
    pub fn apply(&self, step: Step, param: &mut [f32], slots: &mut [f32], grad: &[f32]) {
        let dim = param.len();
        debug_assert_eq!(grad.len(), dim);
        debug_assert_eq!(slots.len(), dim * self.slots().len());
        let lr = step.lr;
        decay(param, step.weight_decay, lr);
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
                amsgrad,
            } => {
                let b1_power = (beta_1 as f32).powf(step.number);
                let b2_power = (beta_2 as f32).powf(step.number);
                let alpha = lr * (1.0 - b2_power).sqrt() / (1.0 - b1_power);
                let (one_minus_b1, one_minus_b2) = ((1.0 - beta_1) as f32, (1.0 - beta_2) as f32);
                let eps = epsilon as f32;
                let (m, rest) = slots.split_at_mut(dim);
                let (v, vhat) = rest.split_at_mut(dim);
                for i in 0..dim {
                    let g = grad[i];
                    m[i] += (g - m[i]) * one_minus_b1;
                    v[i] += (g * g - v[i]) * one_minus_b2;
                    let v_used = if amsgrad {
                        vhat[i] = vhat[i].max(v[i]);
                        vhat[i]
                    } else {
                        v[i]
                    };
                    param[i] -= (m[i] * alpha) / (v_used.sqrt() + eps);
                }
            }
            Optimizer::Ftrl {
                lr_power,
                l1,
                l2,
                l2_shrinkage,
                beta,
                ..
            } => {
                let neg_power = (-lr_power) as f32;
                let l2_reg = l2 as f32 + beta as f32 / (2.0 * lr);
                let shrink = (2.0 * l2_shrinkage) as f32;
                let l1 = l1 as f32;
                let (accum, linear) = slots.split_at_mut(dim);
                for i in 0..dim {
                    let (g, p) = (grad[i], param[i]);
                    let grad_to_use = g + shrink * p;
                    let new_accum = accum[i] + g * g;
                    let new_pow = new_accum.powf(neg_power);
                    linear[i] += grad_to_use - ((new_pow - accum[i].powf(neg_power)) / lr) * p;
                    let quadratic = new_pow / lr + 2.0 * l2_reg;
                    let clipped = linear[i].clamp(-l1, l1);
                    param[i] = (clipped - linear[i]) / quadratic;
                    accum[i] = new_accum;
                }
            }
            Optimizer::Rmsprop {
                rho,
                momentum,
                epsilon,
                centered,
            } => {
                let (rho_f, one_minus_rho) = (rho as f32, (1.0 - rho) as f32);
                let (mom, eps) = (momentum as f32, epsilon as f32);
                let (velocity, rest) = slots.split_at_mut(dim);
                let (moms, rest) = rest.split_at_mut(if momentum > 0.0 { dim } else { 0 });
                let avg = rest;
                for i in 0..dim {
                    let g = grad[i];
                    velocity[i] = rho_f * velocity[i] + one_minus_rho * (g * g);
                    let denominator = if centered {
                        avg[i] = rho_f * avg[i] + one_minus_rho * g;
                        velocity[i] - avg[i] * avg[i] + eps
                    } else {
                        velocity[i] + eps
                    };
                    let increment = (lr * g) / denominator.sqrt();
                    if momentum > 0.0 {
                        moms[i] = mom * moms[i] + increment;
                        param[i] -= moms[i];
                    } else {
                        param[i] -= increment;
                    }
                }
            }
            Optimizer::Adadelta { rho, epsilon } => {
                let (rho_f, one_minus_rho, eps) = (rho as f32, (1.0 - rho) as f32, epsilon as f32);
                let (acc_grad, acc_delta) = slots.split_at_mut(dim);
                for i in 0..dim {
                    let g = grad[i];
                    acc_grad[i] = rho_f * acc_grad[i] + one_minus_rho * (g * g);
                    let delta = -(((acc_delta[i] + eps).sqrt() * g) / (acc_grad[i] + eps).sqrt());
                    acc_delta[i] = rho_f * acc_delta[i] + one_minus_rho * (delta * delta);
                    param[i] += lr * delta;
                }
            }
            Optimizer::Adamax {
                beta_1,
                beta_2,
                epsilon,
            } => {
                let b1_power = (beta_1 as f32).powf(step.number);
                let (one_minus_b1, b2, eps) =
                    ((1.0 - beta_1) as f32, beta_2 as f32, epsilon as f32);
                let (m, u) = slots.split_at_mut(dim);
                for i in 0..dim {
                    let g = grad[i];
                    m[i] += (g - m[i]) * one_minus_b1;
                    u[i] = (b2 * u[i]).max(g.abs());
                    param[i] -= (lr * m[i]) / ((1.0 - b1_power) * (u[i] + eps));
                }
            }
            Optimizer::Nadam {
                beta_1,
                beta_2,
                epsilon,
                u_product,
            } => {
                let (b1, b2, eps) = (beta_1 as f32, beta_2 as f32, epsilon as f32);
                let decay = 0.96f32;
                let u_t = b1 * (1.0 - 0.5 * decay.powf(step.number));
                let u_t_1 = b1 * (1.0 - 0.5 * decay.powf(step.number + 1.0));
                let u_product_t = u_product as f32;
                let u_product_t_1 = u_product_t * u_t_1;
                let b2_power = b2.powf(step.number);
                let (m, v) = slots.split_at_mut(dim);
                for i in 0..dim {
                    let g = grad[i];
                    m[i] += (g - m[i]) * (1.0 - b1);
                    v[i] += (g * g - v[i]) * (1.0 - b2);
                    let m_hat = (u_t_1 * m[i]) / (1.0 - u_product_t_1)
                        + ((1.0 - u_t) * g) / (1.0 - u_product_t);
                    let v_hat = v[i] / (1.0 - b2_power);
                    param[i] -= (m_hat * lr) / (v_hat.sqrt() + eps);
                }
            }
            Optimizer::Lion { beta_1, beta_2 } => {
                let (b1, b2) = (beta_1 as f32, beta_2 as f32);
                for ((p, m), &g) in param.iter_mut().zip(slots.iter_mut()).zip(grad) {
                    *p -= lr * sign(*m * b1 + g * (1.0 - b1));
                    *m = *m * b2 + g * (1.0 - b2);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, own: &[f64], lr: f64, weight_decay: f64) -> (Optimizer, Step) {
        let mut h = vec![lr, 1.0];
        h.extend_from_slice(own);
        h.extend_from_slice(&[0.0, 0.0, weight_decay, 0.0, 0.0, 0.0]);
        Optimizer::parse(name, &h).unwrap()
    }

    #[test]
    fn adam_first_step_moves_each_element_by_about_lr() {
        // With zero moments, step 1 moves every element by lr · g/|g| (up to epsilon).
        let (opt, step) = parse("adam", &[0.9, 0.999, 1e-7, 0.0], 0.01, 0.0);
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
        let (ada, step) = parse("adagrad", &[0.1, 1e-7], 0.1, 0.0);
        assert_eq!(ada.slot_init(0), 0.1f32);
        let (mut p, mut a) = ([1.0f32], [0.1f32]);
        ada.apply(step, &mut p, &mut a, &[2.0]);
        assert_eq!(a[0], 4.1);
        assert!((p[0] - (1.0 - 0.2 / (4.1f32 + 1e-7).sqrt())).abs() < 1e-7);

        let (mom, step) = parse("sgd", &[0.9, 1.0], 0.1, 0.0);
        let (mut p, mut m) = ([1.0f32], [0.5f32]);
        mom.apply(step, &mut p, &mut m, &[1.0]);
        // m = 0.5·0.9 − 0.1 = 0.35; nesterov: p += 0.35·0.9 − 0.1.
        assert!((m[0] - 0.35).abs() < 1e-7);
        assert!((p[0] - (1.0 + 0.35 * 0.9 - 0.1)).abs() < 1e-6);
    }

    #[test]
    fn amsgrad_divides_by_the_largest_v_seen() {
        let (opt, mut step) = parse("adam", &[0.9, 0.5, 1e-7, 1.0], 0.1, 0.0);
        let (mut p, mut s) = ([0.0f32], [0.0f32; 3]);
        opt.apply(step, &mut p, &mut s, &[2.0]);
        let vhat = s[2];
        assert_eq!(vhat, s[1]);
        step.number = 2.0;
        opt.apply(step, &mut p, &mut s, &[0.0]);
        // v halves on a zero gradient; vhat keeps the maximum.
        assert!(s[1] < vhat && s[2] == vhat, "{s:?}");
    }

    #[test]
    fn ftrl_with_l1_keeps_small_weights_at_zero() {
        let (opt, step) = parse("ftrl", &[-0.5, 0.1, 1.0, 0.0, 0.0, 0.0], 0.1, 0.0);
        let (mut p, mut s) = ([0.0f32, 0.0], [0.1f32, 0.1, 0.0, 0.0]);
        opt.apply(step, &mut p, &mut s, &[0.5, 3.0]);
        // |linear| = 0.5 ≤ l1 keeps the first at 0; the second moves against its gradient.
        assert_eq!((p[0], s[2]), (0.0, 0.5));
        assert!(p[1] < 0.0, "{p:?}");
        assert_eq!(s[..2], [0.1 + 0.25, 0.1 + 9.0]);
    }

    #[test]
    fn rmsprop_lion_adadelta_adamax_and_nadam_move_against_the_gradient() {
        let cases: [(&str, &[f64]); 6] = [
            ("rmsprop", &[0.9, 0.0, 1e-7, 0.0]),
            ("rmsprop", &[0.9, 0.5, 1e-7, 1.0]),
            ("lion", &[0.9, 0.99]),
            ("adadelta", &[0.95, 1e-7]),
            ("adamax", &[0.9, 0.999, 1e-7]),
            ("nadam", &[0.9, 0.999, 1e-7, 0.9 * (1.0 - 0.5 * 0.96f64)]),
        ];
        for (name, own) in cases {
            let (opt, step) = parse(name, own, 0.1, 0.0);
            let k = opt.slots().len();
            let (mut p, mut s) = ([0.0f32, 0.0], vec![0.0f32; 2 * k]);
            opt.apply(step, &mut p, &mut s, &[1.0, -1.0]);
            assert!(p[0] < 0.0 && p[1] > 0.0, "{name} {own:?}: {p:?}");
        }
        // Lion moves by exactly lr · sign, and not at all where the sign is 0.
        let (lion, step) = parse("lion", &[0.9, 0.99], 0.1, 0.0);
        let (mut p, mut m) = ([1.0f32, 1.0], [0.0f32, 0.0]);
        lion.apply(step, &mut p, &mut m, &[3.0, 0.0]);
        assert_eq!(p, [1.0 - 0.1, 1.0]);
    }

    #[test]
    fn weight_decay_comes_before_the_update() {
        let (sgd, step) = parse("sgd", &[0.0, 0.0], 0.5, 0.1);
        let mut p = [2.0f32];
        sgd.apply(step, &mut p, &mut [], &[1.0]);
        assert_eq!(p[0], (2.0 - 2.0 * 0.1 * 0.5) - 1.0 * 0.5);
    }
}
