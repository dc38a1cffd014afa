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
        let rule = Rule {
            b1: self.beta1,
            b2: self.beta2,
            eps: self.eps,
            c1: 1.0 - self.beta1.powi(t),
            c2: 1.0 - self.beta2.powi(t),
            lr: self.lr_at(step),
            clip,
        };
        let n = params.len();
        let k = step_scale.len().min(n);
        let (p_head, p_tail) = params.split_at_mut(k);
        let (m_head, m_tail) = m[..n].split_at_mut(k);
        let (v_head, v_tail) = v[..n].split_at_mut(k);
        let (g_head, g_tail) = grad[..n].split_at(k);
        let (t_head, t_tail) = touched[..n].split_at(k);
        rule.apply(Rows {
            p: p_head,
            m: m_head,
            v: v_head,
            g: g_head,
            t: t_head,
            scale: Some(&step_scale[..k]),
        });
        rule.apply(Rows {
            p: p_tail,
            m: m_tail,
            v: v_tail,
            g: g_tail,
            t: t_tail,
            scale: None,
        });
    }
}

/// One step's Adam arithmetic: decays, bias corrections, learning rate and clip factor.
#[derive(Clone, Copy)]
struct Rule {
    b1: f64,
    b2: f64,
    eps: f64,
    c1: f64,
    c2: f64,
    lr: f64,
    clip: f64,
}

/// Equal-length slices of parameters, moments, gradient and touched flags, with each row's
/// step multiplier (1 for all when None).
struct Rows<'a> {
    p: &'a mut [f64],
    m: &'a mut [f64],
    v: &'a mut [f64],
    g: &'a [f64],
    t: &'a [bool],
    scale: Option<&'a [f64]>,
}

impl Rule {
    /// Updates the rows. With AVX2 the same loop runs in 256-bit vectors: no fused
    /// multiply-adds are formed (Rust never contracts), so the bits are those of the portable
    /// loop.
    fn apply(self, rows: Rows<'_>) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked just above).
            unsafe { self.apply_avx2(rows) };
            return;
        }
        self.apply_portable(rows);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn apply_avx2(self, rows: Rows<'_>) {
        self.apply_portable(rows);
    }

    #[inline(always)]
    fn apply_portable(self, r: Rows<'_>) {
        let rows = r.p.iter_mut().zip(r.m).zip(r.v).zip(r.g).zip(r.t);
        match r.scale {
            Some(s) => rows
                .zip(s)
                .for_each(|(((((p, m), v), &g), &t), &s)| self.row(p, m, v, g, t, s)),
            None => rows.for_each(|((((p, m), v), &g), &t)| self.row(p, m, v, g, t, 1.0)),
        }
    }

    /// One entry; untouched entries keep their values by a select (no branch, so the loop
    /// vectorizes), the arithmetic the same as entry by entry.
    #[inline(always)]
    fn row(self, p: &mut f64, m: &mut f64, v: &mut f64, g: f64, t: bool, scale: f64) {
        let g = g * self.clip;
        let m_new = self.b1 * *m + (1.0 - self.b1) * g;
        let v_new = self.b2 * *v + (1.0 - self.b2) * g * g;
        let p_new =
            *p - scale * self.lr * (m_new / self.c1) / ((v_new / self.c2).sqrt() + self.eps);
        *m = if t { m_new } else { *m };
        *v = if t { v_new } else { *v };
        *p = if t { p_new } else { *p };
    }
}
