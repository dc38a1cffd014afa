//! The planner's expression evaluation against closed forms, and its data and extern errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::infer::svi::SviState;
use spread::plan::{PlanError, Registry};
use spread::report::latents::LatentDraws;
use spread::run::{RunConfig, RunError, draw_quantities, load};
use std::path::{Path, PathBuf};

fn fixture(dir: &str) -> RunConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/run")
        .join(dir);
    RunConfig {
        model: root.join("model.spread"),
        data: root,
        ..RunConfig::default()
    }
}

fn value<'a>(q: &'a [LatentDraws], name: &str) -> (&'a [usize], &'a [f64]) {
    let d = q
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no quantity {name}"));
    (&d.shape, &d.draws[0])
}

/// x = (1, 2, -0.5, 3), g = (0, 2, 1, 2), w = (1, 2, 3): every let against its value by hand.
#[test]
fn lets_match_closed_forms() {
    let (_, planned, _) = load(&fixture("exprs"), &Registry::builtin()).unwrap();
    let state = SviState::new(&planned.model, 0);
    let q = draw_quantities(&planned.model, &state, 2, &[], None, None).unwrap();
    let close = |name: &str, shape: &[usize], want: &[f64]| {
        let (s, v) = value(&q, name);
        assert_eq!(s, shape, "{name} shape");
        for (a, b) in v.iter().zip(want) {
            assert!(
                (a - b).abs() < 1e-12 * b.abs().max(1.0),
                "{name}: {v:?} vs {want:?}"
            );
        }
    };
    close("x2", &[4], &[1.0, 4.0, 0.25, 9.0]);
    close(
        "xw",
        &[4, 3],
        &[
            1.0, 2.0, 3.0, 2.0, 4.0, 6.0, -0.5, -1.0, -1.5, 3.0, 6.0, 9.0,
        ],
    );
    close("pick", &[4], &[1.0, 3.0, 2.0, 3.0]);
    close("big", &[4], &[0.0, 1.0, 0.0, 1.0]);
    close("total", &[], &[14.25]);
    close("m", &[3], &[1.375, 2.75, 4.125]);
    close("st", &[4], &[1.0, 3.0, 2.0, 3.0]);
    let lse = [1.0f64, 4.0, 0.25, 9.0]
        .iter()
        .map(|v| v.exp())
        .sum::<f64>()
        .ln();
    close("lse", &[], &[lse]);
    close("zz", &[], &[50.0]);
    close("mx", &[], &[14.25]);
    close("v", &[3], &[14.25, -14.25, 1.0]);
    close("vs", &[], &[17.0 + 14f64.sqrt()]);
    close("shifted", &[], &[7.125]);
    // sum_to_zero(c)_i = sum_{j >= i} c_j / sqrt((j+1)(j+2)) - c_{i-1} i / sqrt(i(i+1)).
    let expand = |c: &[f64]| -> Vec<f64> {
        (0..=c.len())
            .map(|i| {
                let ones: f64 = (i..c.len())
                    .map(|j| c[j] / (((j + 1) * (j + 2)) as f64).sqrt())
                    .sum();
                let minus = if i == 0 {
                    0.0
                } else {
                    c[i - 1] * i as f64 / ((i * (i + 1)) as f64).sqrt()
                };
                ones - minus
            })
            .collect()
    };
    let centred = expand(&[1.0, 3.0, 2.0, 3.0]);
    close("centred", &[5], &centred);
    assert!(centred.iter().sum::<f64>().abs() < 1e-12);
    // An isometry: |y| = |c| = sqrt(23).
    let norm2: f64 = centred.iter().map(|v| v * v).sum();
    assert!((norm2 - 23.0).abs() < 1e-12, "{norm2}");
    // Rows (3, 3) of x_i w_j: column j maps to w_j times the expansion of x.
    let ex = expand(&[1.0, -0.5, 3.0]);
    let rows: Vec<f64> = ex
        .iter()
        .flat_map(|e| [1.0, 2.0, 3.0].map(|w| w * e))
        .collect();
    close("centred_rows", &[4, 3], &rows);
}

fn table_error(csv: &str, model_line: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("plan_table_{}", csv.len() + model_line.len()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("t.csv"), csv).unwrap();
    let model = format!(
        "{model_line}\nlatent mu ~ Normal(0.0, 1.0)\nplate r in t.rows {{\n  observe r.y ~ Normal(mu, 1.0)\n}}\n"
    );
    std::fs::write(dir.join("model.spread"), model).unwrap();
    let cfg = RunConfig {
        model: dir.join("model.spread"),
        data: dir.clone(),
        ..RunConfig::default()
    };
    match load(&cfg, &Registry::builtin()) {
        Err(RunError::Plan(e @ PlanError::Data { .. })) => {
            e.to_string().replace(&dir.display().to_string(), "DIR")
        }
        other => panic!("expected a data error, got {other:?}"),
    }
}

#[test]
fn table_errors_name_file_line_and_column() {
    let decl = "data t = table(\"t.csv\", y: real, k: int)";
    assert_eq!(
        table_error("y,k\n1.0,2\n2.5,x\n", decl),
        "DIR/t.csv:3: column `k`: `x` is not an integer"
    );
    assert_eq!(
        table_error("y,k\n1.0,2\nabc,3\n", decl),
        "DIR/t.csv:3: column `y`: `abc` is not a finite number"
    );
    assert_eq!(
        table_error("y\n1.0\n", decl),
        "DIR/t.csv:1: no column `k` (the header has: y)"
    );
    assert_eq!(
        table_error("y,k\n1.0,2,7\n", decl),
        "DIR/t.csv:2: has 3 cells, the header has 2"
    );
    let sized = "data t = table(\"t.csv\", y: real, k: int, n_rows = 3)";
    assert_eq!(
        table_error("y,k\n1.0,2\n2.0,1\n", sized),
        "DIR/t.csv: the model says n_rows = 3 but the file has 2 data rows"
    );
    let missing = "data t = table(\"absent.csv\", y: real)";
    assert!(table_error("y\n1\n", missing).starts_with("DIR/absent.csv: cannot read:"));
}

/// A model calling an operator this build does not implement: the operator is named with
/// the span of the statement calling it, before anything runs.
#[test]
fn missing_extern_names_operator_and_span() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plan_eval_missing_extern");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("frobnicate.spread");
    std::fs::write(
        &model,
        "// an operator without an implementation\n\
         extern fn frobnicate(x: real) -> real\n\
         data obs = table(\"obs.csv\", y: real)\n\
         latent mu ~ Normal(0.0, 10.0)\n\
         plate i in obs.rows {\n\
         \x20 observe i.y ~ Normal(frobnicate(mu), 2.0)\n\
         }\n",
    )
    .unwrap();
    let cfg = RunConfig {
        model: model.clone(),
        data: root.join("examples/normal_normal"),
        ..RunConfig::default()
    };
    let err = load(&cfg, &Registry::builtin()).unwrap_err();
    assert_eq!(err.exit_code(), 1);
    let text = err.to_string();
    // "<path>/rubredoxin_fe.spread:LINE:COL: physics operator `NAME` has no implementation ..."
    let (location, rest) = text
        .split_once(": physics operator `")
        .unwrap_or_else(|| panic!("{text}"));
    let operator = rest.split('`').next().unwrap();
    let mut parts = location.rsplitn(3, ':');
    let column: usize = parts.next().unwrap().parse().unwrap();
    let line: usize = parts.next().unwrap().parse().unwrap();
    assert!(
        parts.next().unwrap().ends_with("frobnicate.spread"),
        "{text}"
    );
    assert_eq!(operator, "frobnicate");
    let source = std::fs::read_to_string(&cfg.model).unwrap();
    let statement = source.lines().nth(line - 1).unwrap();
    assert!(
        column >= 1 && statement.contains(&format!("{operator}(")),
        "{text}\n{statement}"
    );
}

/// `sum_to_zero` end to end, gradients included: c ~ N(0, I₃), y = H c + N(0, 0.5²) for the
/// four values; since HᵀH = I the posterior is N(Hᵀy / 1.25, 0.2 I) exactly, with
/// Hᵀy = (1.3/√2, −0.1/√6, 4.1/√12) for y = (0.9, −0.4, 0.3, −1.1).
#[test]
fn sum_to_zero_contrasts_reach_their_closed_form_posterior() {
    use spread::infer::guide::gaussian_moments;
    use spread::infer::optim::{Adam, LrSchedule};
    use spread::infer::reduce::SingleProcess;
    use spread::infer::svi::{SviConfig, run};
    let (_, planned, _) = load(&fixture("sum_to_zero"), &Registry::builtin()).unwrap();
    let model = &planned.model;
    let cfg = SviConfig {
        steps: 3000,
        seed: 5,
        particles: 4,
        adam: Adam {
            lr: 0.05,
            schedule: LrSchedule::Exponential {
                decay: 0.002,
                every: 3000,
            },
            ..Adam::default()
        },
        ..SviConfig::default()
    };
    let state = run(
        model,
        &cfg,
        SviState::new(model, 5),
        &SingleProcess,
        &mut |_| {},
    )
    .unwrap();
    let hty = [1.3 / 2f64.sqrt(), -0.1 / 6f64.sqrt(), 4.1 / 12f64.sqrt()];
    let post_sd = 0.2f64.sqrt();
    let site = model.site_index("c").unwrap();
    let b = state.layout.blocks[site].as_ref().unwrap();
    // The sized plate is an axis of one tensor site: one guide block of 3 elements.
    let (mean, cov) = gaussian_moments(b, &state.params[b.offset..b.offset + b.per_instance]);
    assert_eq!(mean.len(), 3);
    for (j, h) in hty.iter().enumerate() {
        let (want, sd) = (h / 1.25, cov[j][j].sqrt());
        assert!(
            (mean[j] - want).abs() < 0.1 * post_sd,
            "c[{j}] mean {} vs exact {want}",
            mean[j]
        );
        assert!(
            (sd / post_sd - 1.0).abs() < 0.03,
            "c[{j}] sd {sd} vs exact {post_sd}"
        );
    }
}

/// The per-shoebox and per-image latents of rubredoxin_small summarized a block of instances
/// at a time without holding their draws (what `draw_quantities` does for the latents
/// posterior.npz leaves out) give the summaries of the whole draws to the bit: 3000 draws of
/// 897 background values take 21.5 MB, two 16 MiB blocks.
#[test]
fn streamed_summaries_match_the_whole_draws() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = RunConfig {
        model: root.join("models/rubredoxin_fe.spread"),
        data: root.join("examples/rubredoxin_small"),
        ..RunConfig::default()
    };
    let (_, planned, _) = load(&cfg, &Registry::builtin()).unwrap();
    let mut state = SviState::new(&planned.model, 5);
    // Guide locations away from their starts, so that no two instances draw alike.
    for (i, p) in state.params.iter_mut().enumerate() {
        *p += 0.01 * ((i * 7919) % 101) as f64;
    }
    let n = 3000;
    let whole = draw_quantities(&planned.model, &state, n, &planned.data_lets, None, None).unwrap();
    let streamed = draw_quantities(
        &planned.model,
        &state,
        n,
        &planned.data_lets,
        None,
        Some(1 << 16),
    )
    .unwrap();
    assert_eq!(whole.len(), streamed.len());
    let background = streamed.iter().find(|q| q.name == "background").unwrap();
    let s = background.streamed.as_ref().expect("background streamed");
    assert!(background.draws.is_empty());
    assert_eq!((s.draws, s.elements.len()), (n, 897));
    let mut count = 0;
    for (a, b) in whole.iter().zip(&streamed) {
        assert_eq!(a.name, b.name);
        assert!(a.streamed.is_none());
        count += usize::from(b.streamed.is_some());
        assert_eq!(
            spread::report::latents::summarize(a),
            spread::report::latents::summarize(b),
            "{}",
            a.name
        );
    }
    // background, rot, log_scale and tilt: every latent in a plate (the smallest, log_scale,
    // takes 192,000 bytes, over the 64 KiB limit).
    assert_eq!(count, 4);
}
