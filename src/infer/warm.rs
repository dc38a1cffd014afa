//! Keeping the thread pool's workers awake through the short serial parts of an SVI step.
//!
//! In: the end of a parallel region (`hold`) and the start of the next (`release`). Out: no
//! value; the other workers of the current rayon pool spin meanwhile instead of sleeping.
//! Guarantees: the spinners compute nothing and touch no model state, so every result stays
//! bit-identical for any thread count; a spinner stops at the next `release` or after
//! `MAX_SPIN`, whichever comes first, so at most `MAX_SPIN` of one core is spent per region.
//!
//! Why: between two parallel regions (the chunks of a plate, one per particle and step) the
//! step runs on one thread: the gradient reduction, the global tape's backward pass, Adam, the
//! next step's global forward pass, tens of µs on a small model. An idle rayon worker spins
//! only briefly before it sleeps on a futex, and waking it on a virtual machine costs tens of
//! µs more each region (eight 20 µs chunks after a 40 µs serial part took 110-150 µs on 2
//! threads instead of the 86 µs they take back to back). OpenMP runtimes spin their idle
//! threads for the same reason.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Longest a worker spins after a region (the serial part of a small model's step is
/// 40-80 µs; a region that `release` does not announce waits at most this long for it).
pub const MAX_SPIN: Duration = Duration::from_micros(300);

/// Bumped by every `release`: a spinner stops when it changes.
static EPOCH: AtomicU64 = AtomicU64::new(0);
/// Spinners running or queued (over every pool).
static SPINNING: AtomicUsize = AtomicUsize::new(0);

/// Called at the start of a parallel region: every spinner stops, so the workers take the
/// region's jobs.
pub fn release() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
}

/// Called at the end of a parallel region that another will soon follow: gives each of the
/// current pool's other workers a job that spins until the next `release` or `MAX_SPIN`.
/// Nothing with a pool of one thread.
pub fn hold() {
    let workers = rayon::current_num_threads();
    // The calling thread (a worker, or a thread outside the pool) goes on with the serial part.
    let others = match rayon::current_thread_index() {
        Some(_) => workers.saturating_sub(1),
        None => workers,
    };
    let epoch = EPOCH.load(Ordering::Acquire);
    let wanted = others.saturating_sub(SPINNING.load(Ordering::Acquire));
    for _ in 0..wanted {
        SPINNING.fetch_add(1, Ordering::AcqRel);
        rayon::spawn(move || {
            spin(epoch);
            SPINNING.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Spins while the epoch is `epoch`, for at most `MAX_SPIN`.
fn spin(epoch: u64) {
    let start = Instant::now();
    let mut rounds = 0u32;
    while EPOCH.load(Ordering::Acquire) == epoch {
        std::hint::spin_loop();
        rounds = rounds.wrapping_add(1);
        if rounds.is_multiple_of(64) && start.elapsed() >= MAX_SPIN {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// Work started on a held pool without a `release` still runs to the end (the spinners
    /// give way by themselves), and released regions give the same sums as unheld ones.
    #[test]
    fn held_pools_still_run_their_work() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        let sums = pool.install(|| {
            (0..50)
                .map(|round: u64| {
                    if round.is_multiple_of(2) {
                        release();
                    }
                    let s: u64 = (0..1000u64).into_par_iter().map(|i| i * round).sum();
                    hold();
                    s
                })
                .collect::<Vec<_>>()
        });
        let expected: Vec<u64> = (0..50).map(|round| 499_500 * round).collect();
        assert_eq!(sums, expected);
    }
}
