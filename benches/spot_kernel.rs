//! Spot-kernel benchmark: evaluations/s on 1 and 2 threads, FLOPs per evaluation and fraction of peak,
//! forward+adjoint / forward, response matrix vs direct kernel, and oracle case gauss_oversample at
//! 256×256 against nanoBragg's pixel-steps/s on the same 2-core VM (oracle README).
//! Run: `cargo build --release && cargo bench --bench spot_kernel`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rayon::prelude::*;
use spread::physics::beam::spectrum_channels;
use spread::physics::mosaic::MosaicDomains;
use spread::physics::nanobragg::{Simulation, args};
use spread::physics::response::ResponseMatrix;
use spread::physics::spot::{
    ChannelFsq, ConstantF, Region, SpotModel, render_serial, spot_vjp_serial,
};
use std::time::Instant;

/// nanoBragg on gauss_oversample (oracle README): pixel-steps/s with 1 and 2 threads, whole process.
const NANOBRAGG_STEPS_PER_S: [f64; 2] = [14.1e6, 21.5e6];

/// CPU seconds of `clock` (CLOCK_THREAD_CPUTIME_ID or CLOCK_PROCESS_CPUTIME_ID): time actually run,
/// so the other processes sharing this VM do not inflate it.
fn cpu_seconds(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// user+sys CPU seconds of all waited-for child processes.
fn children_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return f64::NAN;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn thread_cpu_seconds() -> f64 {
    cpu_seconds(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn process_cpu_seconds() -> f64 {
    cpu_seconds(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Median (wall, process CPU) seconds of `f`.
fn median_wall_and_cpu<F: FnMut()>(repeats: usize, mut f: F) -> (f64, f64) {
    f();
    let mut t: Vec<(f64, f64)> = (0..repeats)
        .map(|_| {
            let (w, c) = (Instant::now(), process_cpu_seconds());
            f();
            (w.elapsed().as_secs_f64(), process_cpu_seconds() - c)
        })
        .collect();
    t.sort_by(|a, b| a.0.total_cmp(&b.0));
    t[t.len() / 2]
}

/// Median CPU seconds of `f` run on the calling thread.
fn median_cpu_seconds<F: FnMut()>(repeats: usize, mut f: F) -> f64 {
    f();
    let mut t: Vec<f64> = (0..repeats)
        .map(|_| {
            let s = thread_cpu_seconds();
            f();
            thread_cpu_seconds() - s
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn clock_ghz() -> f64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |mhz| mhz / 1000.0)
}

fn simulation(argv: &str) -> Simulation {
    let a = args::parse(
        &argv
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>(),
    )
    .expect("bench arguments");
    match Simulation::from_args(&a, None) {
        Ok(s) => s,
        Err(e) => panic!("bench setup: {e}"),
    }
}

/// The fit's workload: GAUSS, 100 channels, 8 mosaic domains, 64 shoeboxes of 11×11 pixels.
fn fit_workload() -> (SpotModel, Vec<Region>, Vec<f64>) {
    let mut m = simulation(
        "-cell 60 70 80 90 105 90 -misset 10 20 30 -default_F 100 -N 10 -gauss_xtal -lambda 1 \
         -distance 60 -pixel 0.1 -detpixels 256 -oversample 1 -polar 0",
    )
    .model;
    let wl: Vec<f64> = (0..100).map(|k| 0.995 + 0.0001 * k as f64).collect();
    m.beam.channels = spectrum_channels(&wl, &[0.01; 100]).expect("spectrum");
    m.domains = MosaicDomains::isotropic(0.05, 8, 1, true);
    let regions = (0..64)
        .map(|i| Region {
            slow0: 20 + (i / 8) * 28,
            fast0: 20 + (i % 8) * 28,
            n_slow: 11,
            n_fast: 11,
        })
        .collect();
    let fsq = (0..100).map(|k| 9000.0 + k as f64).collect();
    (m, regions, fsq)
}

fn forward(m: &SpotModel, regions: &[Region], fsq: &[f64], out: &mut [Vec<f64>], parallel: bool) {
    let one = |(o, r): (&mut Vec<f64>, &Region)| {
        render_serial(m, &ChannelFsq(fsq), r, o).expect("render")
    };
    if parallel {
        out.par_iter_mut().zip(regions).for_each(one);
    } else {
        out.iter_mut().zip(regions).for_each(one);
    }
}

fn adjoint(m: &SpotModel, regions: &[Region], fsq: &[f64], up: &[f64], parallel: bool) -> f64 {
    let one = |r: &Region| spot_vjp_serial(m, fsq, r, up).expect("adjoint").scale;
    if parallel {
        regions.par_iter().map(one).sum()
    } else {
        regions.iter().map(one).sum()
    }
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(f),
        Err(e) => panic!("thread pool: {e}"),
    }
}

fn bench_fit_kernel(ghz: f64) {
    let (m, regions, fsq) = fit_workload();
    let evals = (regions.len() * 121 * 100 * 8) as f64;
    let flops = m.flops_per_eval();
    println!(
        "fit workload: 64 shoeboxes x 11x11 px x 100 channels x 8 domains = {evals:.3e} evaluations/call"
    );
    println!(
        "  FLOPs per evaluation: {flops:.2} (GAUSS; counting rules in SpotModel::flops_per_eval)"
    );
    let mut out: Vec<Vec<f64>> = regions.iter().map(|r| vec![0.0; r.len()]).collect();
    let up = vec![1.0; 121];
    let peak1 = 16.0 * ghz * 1e9;
    // one thread: the calling thread's CPU time, so other processes on the VM do not inflate it
    let t1 = median_cpu_seconds(5, || forward(&m, &regions, &fsq, &mut out, false));
    let ta1 = median_cpu_seconds(5, || {
        std::hint::black_box(adjoint(&m, &regions, &fsq, &up, false));
    });
    let rate = evals / t1;
    println!(
        "  1 thread (CPU time): forward {:.1} ms = {:.1} M eval/s = {:.2} GFLOP/s = {:.1}% of 1-core peak ({:.0} GFLOP/s)",
        t1 * 1e3,
        rate / 1e6,
        rate * flops / 1e9,
        100.0 * rate * flops / peak1,
        peak1 / 1e9
    );
    println!(
        "  adjoint {:.1} ms; forward+adjoint / forward = {:.2}",
        ta1 * 1e3,
        (t1 + ta1) / t1
    );
    let (w2, c2) = in_pool(2, || {
        median_wall_and_cpu(5, || forward(&m, &regions, &fsq, &mut out, true))
    });
    let idle2 = evals / (c2 / 2.0);
    println!(
        "  2 threads: wall {:.1} ms ({:.1} M eval/s under the VM's current load); CPU {:.1} ms, so on an idle VM \
         ~{:.1} M eval/s = {:.1}% of 2-core peak, {:.2}x one thread",
        w2 * 1e3,
        evals / w2 / 1e6,
        c2 * 1e3,
        idle2 / 1e6,
        100.0 * idle2 * flops / (2.0 * peak1),
        2.0 * t1 / c2
    );
    let r = ResponseMatrix::build(&m, &regions[0]).expect("response matrix");
    let t_apply = median_cpu_seconds(50, || {
        std::hint::black_box(r.apply(&fsq).expect("apply"));
    });
    let mut one = vec![0.0; 121];
    let t_direct = median_cpu_seconds(5, || {
        render_serial(&m, &ChannelFsq(&fsq), &regions[0], &mut one).expect("render")
    });
    println!(
        "  response matrix (121 x 100) apply {:.2} us vs direct kernel {:.2} ms per shoebox: {:.0}x faster while geometry is fixed",
        t_apply * 1e6,
        t_direct * 1e3,
        t_direct / t_apply
    );
}

fn bench_gauss_oversample() {
    let sim = simulation(
        "-cell 60 70 80 90 105 90 -misset 10 20 30 -default_F 100 -N 10 -gauss_xtal -lambda 1 \
         -distance 60 -pixel 0.1 -detpixels 256 -oversample 3 -polar 0",
    );
    let steps = 256.0 * 256.0 * sim.steps as f64;
    println!(
        "gauss_oversample 256x256, {} steps/pixel = {steps} pixel-steps:",
        sim.steps
    );
    let t1 = median_cpu_seconds(9, || {
        let mut out = vec![0.0; 65536];
        render_serial(
            &sim.model,
            &ConstantF(100.0),
            &Region::full(&sim.model.panel),
            &mut out,
        )
        .expect("render");
        std::hint::black_box(out);
    });
    let rate1 = steps / t1;
    println!(
        "  1 thread (CPU time): {:.2} ms = {:.1} M pixel-steps/s = {:.2}x nanoBragg's 1-thread {:.1} M/s",
        t1 * 1e3,
        rate1 / 1e6,
        rate1 / NANOBRAGG_STEPS_PER_S[0],
        NANOBRAGG_STEPS_PER_S[0] / 1e6
    );
    let full = Region::full(&sim.model.panel);
    let (fsq, up) = ([1e4], vec![1.0; full.len()]);
    let ta = median_cpu_seconds(5, || {
        std::hint::black_box(spot_vjp_serial(&sim.model, &fsq, &full, &up).expect("adjoint"));
    });
    println!(
        "  adjoint {:.2} ms; forward+adjoint / forward = {:.2} (1 channel, 1 domain, 9 sub-pixels)",
        ta * 1e3,
        (t1 + ta) / t1
    );
    let (w2, c2) = in_pool(2, || {
        median_wall_and_cpu(9, || {
            std::hint::black_box(sim.render().expect("render"));
        })
    });
    let idle2 = steps / (c2 / 2.0);
    println!(
        "  2 threads: wall {:.2} ms ({:.1} M/s under the VM's current load); CPU {:.2} ms, so on an idle VM \
         ~{:.1} M pixel-steps/s = {:.2}x nanoBragg's 2-thread {:.1} M/s",
        w2 * 1e3,
        steps / w2 / 1e6,
        c2 * 1e3,
        idle2 / 1e6,
        idle2 / NANOBRAGG_STEPS_PER_S[1],
        NANOBRAGG_STEPS_PER_S[1] / 1e6
    );
    bench_whole_process(steps);
}

/// The same case as a whole `spreadc nanobragg` process (start-up, render, file writes), like nanoBragg's figure.
fn bench_whole_process(steps: f64) {
    let exe = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/spreadc");
    if !exe.exists() {
        println!("  (whole-process timing skipped: build target/release/spreadc first)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("spread-bench-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let argv = "nanobragg -cell 60 70 80 90 105 90 -misset 10 20 30 -default_F 100 -N 10 -gauss_xtal -lambda 1 \
        -distance 60 -pixel 0.1 -detpixels 256 -oversample 3 -polar 0 -floatfile g.f32 -intfile s.img -nopgm -noprogress -nonoise";
    for threads in [1, 2] {
        let mut runs: Vec<(f64, f64)> = (0..5)
            .map(|_| {
                let (w, c) = (Instant::now(), children_cpu_seconds());
                let status = std::process::Command::new(&exe)
                    .args(argv.split_whitespace())
                    .env("RAYON_NUM_THREADS", threads.to_string())
                    .current_dir(&dir)
                    .stdout(std::process::Stdio::null())
                    .status();
                assert!(status.is_ok_and(|s| s.success()));
                (w.elapsed().as_secs_f64(), children_cpu_seconds() - c)
            })
            .collect();
        runs.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (wall, cpu) = runs[2];
        println!(
            "  {threads} thread(s), whole spreadc process: wall {:.1} ms under load, CPU (user+sys) {:.1} ms; \
             nanoBragg's whole-process wall {:.1} ms",
            wall * 1e3,
            cpu * 1e3,
            steps / NANOBRAGG_STEPS_PER_S[threads - 1] * 1e3
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    let ghz = clock_ghz();
    println!("clock {ghz:.3} GHz (/proc/cpuinfo); peak = cores x 16 f64 FLOP/cycle x clock");
    bench_fit_kernel(ghz);
    bench_gauss_oversample();
}
