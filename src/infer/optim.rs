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
        // Zipped slices without a branch (untouched rows keep their values by a select), so
        // the loop vectorizes; the arithmetic per element is the same as one by one.
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let row = |p: &mut f64, m: &mut f64, v: &mut f64, g: f64, t: bool, scale: f64| {
            let g = g * clip;
            let m_new = b1 * *m + (1.0 - b1) * g;
            let v_new = b2 * *v + (1.0 - b2) * g * g;
            let p_new = *p - scale * lr * (m_new / c1) / ((v_new / c2).sqrt() + eps);
            *m = if t { m_new } else { *m };
            *v = if t { v_new } else { *v };
            *p = if t { p_new } else { *p };
        };
        let n = params.len();
        let k = step_scale.len().min(n);
        let (p_head, p_tail) = params.split_at_mut(k);
        let (m_head, m_tail) = m[..n].split_at_mut(k);
        let (v_head, v_tail) = v[..n].split_at_mut(k);
        let (g_head, g_tail) = grad[..n].split_at(k);
        let (t_head, t_tail) = touched[..n].split_at(k);
        for (((((p, m), v), &g), &t), &s) in p_head
            .iter_mut()
            .zip(m_head)
            .zip(v_head)
            .zip(g_head)
            .zip(t_head)
            .zip(&step_scale[..k])
        {
            row(p, m, v, g, t, s);
        }
        for ((((p, m), v), &g), &t) in p_tail
            .iter_mut()
            .zip(m_tail)
            .zip(v_tail)
            .zip(g_tail)
            .zip(t_tail)
        {
            row(p, m, v, g, t, 1.0);
        }
    }
}
