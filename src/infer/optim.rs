//! Adam with global-norm gradient clipping and a learning-rate schedule.
//!
//! In: parameters, a loss gradient, which entries took part this step, the step number.
//! Out: updated parameters and moments (held by the caller's state, so checkpoints capture
//! them). Entries that did not take part (instances outside the mini-batch) are left alone,
//! moments included, so sparse updates do not drift.

/// Learning rate as a function of the step.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LrSchedule {
    /// The same rate throughout.
    Constant,
    /// rate × decay^(step / every).
    Exponential {
        /// Factor per `every` steps.
        decay: f64,
        /// Steps per factor.
        every: u64,
    },
}

/// Adam settings.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Adam {
    /// Base learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    /// Largest allowed global gradient norm (None = no clipping).
    pub clip_norm: Option<f64>,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            lr: 0.05,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            clip_norm: Some(100.0),
            schedule: LrSchedule::Constant,
        }
    }
}

/// The gradient of one step and which entries it covers.
#[derive(Clone, Copy, Debug)]
pub struct Gradient<'a> {
    /// d loss / d params.
    pub grad: &'a [f64],
    /// Entries that took part (others keep their value and moments).
    pub touched: &'a [bool],
    /// Per-entry step multipliers (1 where absent).
    pub step_scale: &'a [f64],
}

impl Adam {
    /// The learning rate at `step`.
    pub fn lr_at(&self, step: u64) -> f64 {
        match self.schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Exponential { decay, every } => {
                self.lr * decay.powf(step as f64 / every.max(1) as f64)
            }
        }
    }

    /// One update minimizing the loss whose gradient is `grad` (bias-corrected with t = step + 1);
    /// parameter i moves by at most about `step_scale[i]` × the learning rate (1 where absent).
    pub fn update(
        &self,
        params: &mut [f64],
        m: &mut [f64],
        v: &mut [f64],
        g: Gradient<'_>,
        step: u64,
    ) {
        let Gradient {
            grad,
            touched,
            step_scale,
        } = g;
        let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        let clip = match self.clip_norm {
            Some(c) if norm > c => c / norm,
            _ => 1.0,
        };
        let t = (step + 1) as i32;
        let (c1, c2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        let lr = self.lr_at(step);
        for i in 0..params.len() {
            if !touched[i] {
                continue;
            }
            let g = grad[i] * clip;
            m[i] = self.beta1 * m[i] + (1.0 - self.beta1) * g;
            v[i] = self.beta2 * v[i] + (1.0 - self.beta2) * g * g;
            let scale = step_scale.get(i).copied().unwrap_or(1.0);
            params[i] -= scale * lr * (m[i] / c1) / ((v[i] / c2).sqrt() + self.eps);
        }
    }
}
