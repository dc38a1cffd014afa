//! The one interface through which per-worker gradient sums are combined across processes.
//!
//! In: a buffer [log-weight part, shared-latent gradients, parameter gradients] already summed
//! over this process's plate instances in a fixed order. Out: the same buffer summed over all
//! participants. In one process it is the identity; an MPI all-reduce across ranks (each rank
//! holding a shard of images) implements this trait without touching models or the engine.

/// Sums a gradient buffer across participants.
pub trait GradientReduce: Send + Sync {
    /// Replaces `buffer` by its elementwise sum over all participants, identically on each.
    fn all_reduce_sum(&self, buffer: &mut [f64]);
}

/// A single process: nothing to combine.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl GradientReduce for SingleProcess {
    fn all_reduce_sum(&self, _buffer: &mut [f64]) {}
}
