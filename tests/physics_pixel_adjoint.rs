//! The spot kernel's analytic adjoint against central finite differences, for every shape, w.r.t.
//! per-channel |F|², scale, background, N, the image rotation θ, the mosaic spread and a domain tilt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::physics::beam::{Beam, dispersion_wavelengths, equal_weight_channels};
use spread::physics::crystal::{UnitCell, nanobragg_real_space};
use spread::physics::geometry::detector::{MosflmDetector, Panel};
use spread::physics::lattice::Shape;
use spread::physics::mosaic::MosaicDomains;
use spread::physics::polarization::Polarization;
use spread::physics::spot::{ChannelFsq, Region, SpotModel, render, spot_vjp};

fn model(shape: Shape, n_channels: usize) -> SpotModel {
    let panel = Panel::mosflm(&MosflmDetector {
        distance_mm: 100.0,
        pixel_mm: 0.1,
        n_fast: 128,
        n_slow: 128,
        xbeam_mm: None,
        ybeam_mm: None,
    })
    .unwrap();
    let cell = UnitCell::new([50.0; 3], [90.0; 3]).unwrap();
    let channels =
        equal_weight_channels(&dispersion_wavelengths(1.0, 0.6, n_channels).unwrap()).unwrap();
    let beam = Beam::nanobragg(channels, 0.7);
    SpotModel {
        polarization: Polarization::new(beam.incident, beam.polar_vector, beam.kahn),
        panel,
        beam,
        real_space_m: nanobragg_real_space(&cell, [10.0, 20.0, 30.0]),
        rotation: [0.0008, -0.0011, 0.0005],
        domains: MosaicDomains::anisotropic([0.05, 0.08, 0.03], 4, 3, false),
        shape,
        n_cells: [5.0, 6.0, 7.0],
        oversample: 2,
        scale: 1.3,
        background: 0.2,
    }
}

/// The 11×11 shoebox around spot1 of oracle case square_mono.
const REGION: Region = Region {
    slow0: 68,
    fast0: 103,
    n_slow: 11,
    n_fast: 11,
};
const FSQ: [f64; 3] = [9000.0, 10000.0, 11500.0];

fn upstream() -> Vec<f64> {
    (0..REGION.len())
        .map(|i| 1.0 + 0.5 * (i as f64 * 0.7).sin())
        .collect()
}

fn loss(m: &SpotModel, fsq: &[f64]) -> f64 {
    let mut out = vec![0.0; REGION.len()];
    render(m, &ChannelFsq(fsq), &REGION, &mut out).unwrap();
    out.iter().zip(upstream()).map(|(a, b)| a * b).sum()
}

fn central<F: Fn(f64) -> f64>(f: F, x: f64, h: f64) -> f64 {
    (f(x + h) - f(x - h)) / (2.0 * h)
}

/// |fd − analytic| ≤ 1e-4·|analytic| + 1e-12·loss (the floor is far below every gradient here).
fn close(name: &str, fd: f64, an: f64, loss: f64) {
    let err = (fd - an).abs();
    assert!(an != 0.0, "{name}: analytic gradient is exactly zero");
    assert!(
        err <= 1e-4 * an.abs() + 1e-12 * loss,
        "{name}: fd {fd:.10e} analytic {an:.10e}"
    );
}

fn check_shape(shape: Shape, smooth: bool, n_channels: usize) {
    let m = model(shape, n_channels);
    let fsq: Vec<f64> = (0..n_channels).map(|k| 9000.0 + 700.0 * k as f64).collect();
    let g = spot_vjp(&m, &fsq, &REGION, &upstream()).unwrap();
    let l0 = loss(&m, &fsq);
    assert!(l0 > 0.0);
    for k in 0..n_channels {
        let fd = central(
            |x| {
                let mut f = fsq.clone();
                f[k] = x;
                loss(&m, &f)
            },
            fsq[k],
            1.0,
        );
        close(
            &format!("{shape:?}/{n_channels}ch fsq[{k}]"),
            fd,
            g.fsq[k],
            l0,
        );
    }
    let fd = central(
        |x| {
            loss(
                &SpotModel {
                    scale: x,
                    ..m.clone()
                },
                &fsq,
            )
        },
        m.scale,
        1e-4,
    );
    close(&format!("{shape:?}/{n_channels}ch scale"), fd, g.scale, l0);
    let fd = central(
        |x| {
            loss(
                &SpotModel {
                    background: x,
                    ..m.clone()
                },
                &fsq,
            )
        },
        m.background,
        10.0,
    );
    close(
        &format!("{shape:?}/{n_channels}ch background"),
        fd,
        g.background,
        l0,
    );
    for a in 0..3 {
        let fd = central(
            |x| {
                let mut n = m.n_cells;
                n[a] = x;
                loss(
                    &SpotModel {
                        n_cells: n,
                        ..m.clone()
                    },
                    &fsq,
                )
            },
            m.n_cells[a],
            1e-5,
        );
        close(
            &format!("{shape:?}/{n_channels}ch N[{a}]"),
            fd,
            g.n_cells[a],
            l0,
        );
    }
    if !smooth {
        return;
    }
    for a in 0..3 {
        let fd = central(
            |x| {
                let mut r = m.rotation;
                r[a] = x;
                loss(
                    &SpotModel {
                        rotation: r,
                        ..m.clone()
                    },
                    &fsq,
                )
            },
            m.rotation[a],
            1e-7,
        );
        close(
            &format!("{shape:?}/{n_channels}ch rotation[{a}]"),
            fd,
            g.rotation[a],
            l0,
        );
        let fd = central(
            |x| {
                let mut d = m.domains.clone();
                d.spread_rad[a] = x;
                loss(
                    &SpotModel {
                        domains: d,
                        ..m.clone()
                    },
                    &fsq,
                )
            },
            m.domains.spread_rad[a],
            1e-8,
        );
        close(
            &format!("{shape:?}/{n_channels}ch spread[{a}]"),
            fd,
            g.mosaic_spread[a],
            l0,
        );
        let fd = central(
            |x| {
                let mut d = m.domains.clone();
                d.draws[2][a] = x;
                loss(
                    &SpotModel {
                        domains: d,
                        ..m.clone()
                    },
                    &fsq,
                )
            },
            m.domains.draws[2][a],
            1e-5,
        );
        close(
            &format!("{shape:?}/{n_channels}ch draw[2][{a}]"),
            fd,
            g.domain_draws[2][a],
            l0,
        );
    }
}

#[test]
fn square_adjoint_matches_finite_differences() {
    // 3 channels take the pair-inner loops, 5 the channel-inner ones
    check_shape(Shape::Square, true, 3);
    check_shape(Shape::Square, true, 5);
}

#[test]
fn gauss_adjoint_matches_finite_differences() {
    // 3 channels take the pair-inner loops, 5 the channel-inner ones
    check_shape(Shape::Gauss, true, 3);
    check_shape(Shape::Gauss, true, 5);
}

#[test]
fn round_adjoint_matches_finite_differences() {
    // 3 channels take the pair-inner loops, 5 the channel-inner ones
    check_shape(Shape::Round, true, 3);
    check_shape(Shape::Round, true, 5);
}

#[test]
fn tophat_adjoint_matches_finite_differences() {
    // TOPHAT is piecewise constant in h: only |F|², scale, background and N (through NaNbNc) move it.
    // 3 channels take the pair-inner loops, 5 the channel-inner ones
    check_shape(Shape::Tophat, false, 3);
    check_shape(Shape::Tophat, false, 5);
}

#[test]
fn gradient_does_not_depend_on_thread_count() {
    let m = model(Shape::Gauss, 3);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let g1 = one.install(|| spot_vjp(&m, &FSQ, &REGION, &upstream()).unwrap());
    let g2 = two.install(|| spot_vjp(&m, &FSQ, &REGION, &upstream()).unwrap());
    assert_eq!(g1, g2);
}

#[test]
fn real_space_gradient_matches_finite_differences() {
    // ∂/∂A for every entry of the cell basis (a step of 1e-16 m on vectors of ~5e-9 m)
    for n_channels in [3, 5] {
        let m = model(Shape::Gauss, n_channels);
        let fsq = vec![9000.0; n_channels];
        let g = spot_vjp(&m, &fsq, &REGION, &upstream()).unwrap();
        let l0 = loss(&m, &fsq);
        for i in 0..3 {
            for j in 0..3 {
                let at = |x: f64| {
                    let mut a = m.real_space_m;
                    a[i][j] = x;
                    loss(
                        &SpotModel {
                            real_space_m: a,
                            ..m.clone()
                        },
                        &fsq,
                    )
                };
                let fd = central(at, m.real_space_m[i][j], 1e-16);
                close(
                    &format!("A[{i}][{j}] ({n_channels}ch)"),
                    fd,
                    g.real_space[i][j],
                    l0,
                );
            }
        }
    }
}

#[test]
fn scale_gradient_is_the_unscaled_image_even_at_zero_scale() {
    // pixel is linear in scale, so ∂(Σ g·pixel)/∂scale at scale 0 is Σ g·pixel at scale 1.
    for n_channels in [3, 5] {
        let one = model(Shape::Gauss, n_channels);
        let fsq = vec![9000.0; n_channels];
        let zero = SpotModel {
            scale: 0.0,
            ..one.clone()
        };
        let g = spot_vjp(&zero, &fsq, &REGION, &upstream()).unwrap();
        let want = loss(&SpotModel { scale: 1.0, ..one }, &fsq);
        assert!(
            (g.scale - want).abs() <= 1e-12 * want,
            "{} vs {want}",
            g.scale
        );
    }
}
