//! What Keras does to a variable's gradient and value before its optimizer's `update_step`:
//! clipping (`clipvalue`, `clipnorm`) and decoupled weight decay (`weight_decay`).

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
    /// arithmetic: `clip(g, -v, v)`, and `g * norm / max(‖g‖₂, norm)` in float32. Keras
    /// allows one of the two only.
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

/// Keras's decoupled weight decay, `p -= p · wd · lr` in float32 before the update, applied
/// lazily: to the rows of the batch only (a dense variable decays every row every step).
pub(super) fn decay(param: &mut [f32], weight_decay: f32, lr: f32) {
    if weight_decay != 0.0 {
        for p in param.iter_mut() {
            *p -= *p * weight_decay * lr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_bounds_the_summed_rows_as_keras_clips_a_dense_gradient() {
        // Ids [1, 1, 1, 2] with 0.4 per position sum to 1.2 and 0.4: clipvalue bounds the sum.
        let mut g = [1.2f32, 0.4];
        let value = Clip {
            value: Some(0.5),
            norm: None,
        };
        value.apply(&mut g);
        assert_eq!(g, [0.5, 0.4]);
        // clipnorm scales every row of the step by one factor: the norm of them all.
        let norm = Clip {
            value: None,
            norm: Some(0.5),
        };
        let mut g = [3.0f32, 4.0];
        norm.apply(&mut g);
        assert_eq!(g, [3.0 * 0.5 / 5.0, 4.0 * 0.5 / 5.0]);
        let mut small = [0.1f32, -0.2];
        norm.apply(&mut small);
        assert_eq!(small, [0.1, -0.2]);
        let mut zero = [0.0f32; 2];
        norm.apply(&mut zero);
        assert_eq!(zero, [0.0, 0.0]);
    }

    #[test]
    fn decay_shrinks_by_weight_decay_times_lr() {
        let mut p = [2.0f32, -1.0];
        decay(&mut p, 0.1, 0.5);
        assert_eq!(p, [2.0 - 2.0 * 0.1 * 0.5, -1.0 + 0.1 * 0.5]);
        decay(&mut p, 0.0, 0.5);
        assert_eq!(p, [2.0 - 2.0 * 0.1 * 0.5, -1.0 + 0.1 * 0.5]);
    }
}
