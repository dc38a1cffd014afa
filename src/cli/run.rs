//! `spreadc run MODEL --data DIR --out DIR`: fit a model by SVI, show progress, print a short
//! posterior table, write the report and the checkpoint.

use clap::Args as ClapArgs;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use spread::report::latents::{LatentDraws, summarize};
use spread::run::{RunConfig, RunResult, SiteSearch, run_model};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `spreadc run`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The .spread model file.
    pub model: PathBuf,
    /// Folder holding the model's data files.
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder (summary.json, elbo.csv, posterior.npz, checkpoint).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Total SVI steps (counting steps of a resumed run).
    #[arg(long, default_value_t = 10000)]
    pub steps: u64,
    /// Seed of every random stream.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Override a const or select a variant choice: --set parametrization=noncentered.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = super::check::parse_set)]
    pub sets: Vec<(String, String)>,
    /// ELBO particles per step.
    #[arg(long, default_value_t = 4)]
    pub particles: usize,
    /// Adam learning rate at the first step.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Factor the learning rate falls by (exponentially) over the horizon; 1 keeps it constant.
    #[arg(long, default_value_t = 0.002)]
    pub lr_decay: f64,
    /// Steps over which the rate falls by --lr-decay (default: --steps; --resume keeps the
    /// horizon of the run it continues).
    #[arg(long, value_name = "N")]
    pub lr_horizon: Option<u64>,
    /// Write a checkpoint every N steps (one is always written at the end).
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Posterior draws for the summaries.
    #[arg(long, default_value_t = 1000)]
    pub draws: usize,
    /// Size limit of posterior.npz in MiB (0: none); the largest quantities' draws beyond it
    /// are left out, with a note, and keep their summaries in summary.json.
    #[arg(long, value_name = "MIB", default_value_t = spread::run::DEFAULT_NPZ_MAX_MIB)]
    pub npz_max_mib: u64,
    /// Print JSON lines (progress and the result) instead of a progress bar and a table.
    #[arg(long)]
    pub json: bool,
    /// Search the modes of per-instance latents: each instance of their top-level plate tries
    /// K starts drawn from the latents' priors, each refined by --search-refine SVI steps with
    /// the dataset-level latents held, against its current guide, and keeps the best (e.g.
    /// --search rot,tilt:8 for each image's orientation and mosaic-domain tilts).
    #[arg(long, value_name = "SITES:K", value_parser = parse_search)]
    pub search: Option<(Vec<String>, usize)>,
    /// Steps at which --search runs (default: a tenth and a quarter into the lr horizon).
    #[arg(
        long,
        value_name = "S1,S2,...",
        value_delimiter = ',',
        requires = "search"
    )]
    pub search_at: Option<Vec<u64>>,
    /// SVI steps refining each start of --search.
    #[arg(long, value_name = "N", default_value_t = 100, requires = "search")]
    pub search_refine: u64,
    /// A targeted round of --search with K starts for the instances the per-image
    /// goodness-of-fit check names (z below -10: counts explained far worse than Poisson
    /// noise allows), only they evaluated, each start refined by a fresh Adam run at the base
    /// rate (e.g. --search-misfit 32 for images left in a wrong mode by the wide rounds).
    #[arg(long, value_name = "K", requires = "search", value_parser = clap::value_parser!(u64).range(1..))]
    pub search_misfit: Option<u64>,
    /// Step before which --search-misfit runs (default: 40% into the lr horizon, after the
    /// wide rounds have settled).
    #[arg(long, value_name = "S", requires = "search_misfit")]
    pub search_misfit_at: Option<u64>,
    /// Profile scan of one dataset-level latent (e.g. --scan edge_ev=7110:7130:0.25): before
    /// the --scan-at steps its guide location is set to each grid value in turn, everything
    /// else held, the ELBO over all the data is scored, and the location moves to the best
    /// point if that beats it by 1 nat; at the end the same scan reports, without moving, a
    /// point that beats the fit (a far mode).
    #[arg(long, value_name = "SITE=LO:HI:STEP", value_parser = parse_scan, allow_hyphen_values = true)]
    pub scan: Option<(String, f64, f64, f64)>,
    /// Steps at which --scan runs (default: a tenth and a quarter into the lr horizon).
    #[arg(
        long,
        value_name = "S1,S2,...",
        value_delimiter = ',',
        requires = "scan"
    )]
    pub scan_at: Option<Vec<u64>>,
    /// Guide draws averaged in each point's score of --scan (the same draws at every point).
    #[arg(long, value_name = "N", default_value_t = 2, requires = "scan")]
    pub scan_draws: u64,
    /// SVI steps refining every other latent at each --scan point, the scanned one held,
    /// before its score: a profile proper, where the other latents follow each point instead
    /// of staying adapted to the current location (costs points × N steps per scan).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "scan")]
    pub scan_refine: u64,
    /// Hold the guides of the named latents at their start (their prior's location, or `init`)
    /// for the first N steps, then let them move: stage-wise fitting, e.g. --hold edge_ev:300
    /// fits the images before the edge can follow their early misfit.
    #[arg(long, value_name = "SITES:N", value_parser = parse_hold)]
    pub hold: Option<(Vec<String>, u64)>,
    /// Summarize the dataset-level latents (all, or the comma-separated SITES) by their
    /// linear-response covariance: the inverse of the log joint's expected curvature under the
    /// fitted guide, with every per-image and per-shoebox latent integrated out (a mean-field
    /// guide understates sds where latents are correlated). Costs 16 gradients per
    /// conjugate-gradient iteration, tens of iterations per element.
    #[arg(
        long,
        value_name = "SITES",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "",
        value_delimiter = ','
    )]
    pub linear_response: Option<Vec<String>>,
}

/// `SITE,SITE:K` (K >= 1), or `SITES` for 8 starts.
fn parse_search(s: &str) -> Result<(Vec<String>, usize), String> {
    let (sites, k) = s.split_once(':').unwrap_or((s, "8"));
    let sites: Vec<String> = sites.split(',').map(str::to_string).collect();
    if sites.iter().any(String::is_empty) {
        return Err(format!("`{s}`: expected SITES:K, e.g. rot,tilt:8"));
    }
    match k.parse::<usize>() {
        Ok(k) if k >= 1 => Ok((sites, k)),
        _ => Err(format!("`{s}`: K must be a whole number of starts >= 1")),
    }
}

/// `SITES:N`, e.g. edge_ev,edge_width_ev:300.
fn parse_hold(s: &str) -> Result<(Vec<String>, u64), String> {
    let usage = || format!("`{s}`: expected SITES:N, e.g. edge_ev:300");
    let (sites, n) = s.rsplit_once(':').ok_or_else(usage)?;
    let sites: Vec<String> = sites.split(',').map(str::to_string).collect();
    if sites.iter().any(String::is_empty) {
        return Err(usage());
    }
    Ok((sites, n.trim().parse::<u64>().map_err(|_| usage())?))
}

/// `SITE=LO:HI:STEP`, e.g. edge_ev=7110:7130:0.25.
fn parse_scan(s: &str) -> Result<(String, f64, f64, f64), String> {
    let usage = || format!("`{s}`: expected SITE=LO:HI:STEP, e.g. edge_ev=7110:7130:0.25");
    let (site, range) = s.split_once('=').ok_or_else(usage)?;
    let parts: Vec<&str> = range.split(':').collect();
    let [lo, hi, step] = parts.as_slice() else {
        return Err(usage());
    };
    let num = |x: &str| x.trim().parse::<f64>().map_err(|_| usage());
    if site.is_empty() {
        return Err(usage());
    }
    Ok((site.to_string(), num(lo)?, num(hi)?, num(step)?))
}

/// Runs the fit; exit 0 on success, 1 on model or data errors, 2 on usage or IO errors.
pub fn run(args: &Args) -> ExitCode {
    let cfg = RunConfig {
        model: args.model.clone(),
        data: args.data.clone(),
        out: args.out.clone(),
        steps: args.steps,
        seed: args.seed,
        threads: args.threads,
        sets: args.sets.clone(),
        particles: args.particles,
        lr: args.lr,
        lr_decay: args.lr_decay,
        lr_horizon: args.lr_horizon,
        checkpoint_every: args.checkpoint_every,
        resume: args.resume,
        draws: args.draws.max(2),
        npz_max_bytes: (args.npz_max_mib > 0).then(|| args.npz_max_mib.saturating_mul(1 << 20)),
        search: args.search.clone().map(|(sites, candidates)| SiteSearch {
            sites,
            candidates,
            refine_steps: args.search_refine,
            at_steps: args.search_at.clone(),
            misfit: args
                .search_misfit
                .map(|k| (k as usize, args.search_misfit_at)),
        }),
        scan: args
            .scan
            .clone()
            .map(|(site, lo, hi, step)| spread::run::profile::SiteScan {
                site,
                lo,
                hi,
                step,
                at_steps: args.scan_at.clone(),
                draws: args.scan_draws,
                refine_steps: args.scan_refine,
            }),
        hold: args.hold.clone(),
        linear_response: args
            .linear_response
            .clone()
            .map(|v| v.into_iter().filter(|s| !s.is_empty()).collect()),
    };
    let bar = progress_bar(args);
    let start = Instant::now();
    let json = args.json;
    let every = (args.steps / 100).max(1);
    let mut on_step = |r: spread::infer::svi::StepReport| {
        let rate = f64::from(u32::try_from(r.step).unwrap_or(u32::MAX))
            / start.elapsed().as_secs_f64().max(1e-9);
        if json {
            if r.step.is_multiple_of(every) || r.step == args.steps {
                println!(
                    "{}",
                    serde_json::json!({"event": "step", "step": r.step, "elbo": r.elbo})
                );
            }
        } else {
            bar.set_position(r.step);
            bar.set_message(format!("ELBO {:.3}  {rate:.0} steps/s", r.elbo));
        }
    };
    let result = run_model(&cfg, &mut on_step);
    bar.finish_and_clear();
    match result {
        Ok(r) => {
            report(args, &r, start.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"event": "error", "message": e.to_string(), "exit": e.exit_code()})
                );
            }
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn progress_bar(args: &Args) -> ProgressBar {
    if args.json || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(args.steps), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(args.steps);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    bar
}

fn report(args: &Args, r: &RunResult, seconds: f64) {
    eprint!("{}", r.warnings);
    for c in &r.ignored_columns {
        eprintln!("note: column not used by the model: {c}");
    }
    if args.json {
        let rows: Vec<_> = r.quantities.iter().flat_map(summarize).collect();
        println!(
            "{}",
            serde_json::json!({"event": "done", "steps": r.state.step, "elbo": r.state.elbo.last(), "seconds": seconds, "posterior": rows, "states": r.states, "data": r.data})
        );
        return;
    }
    for d in &r.data {
        print!("data:\n{d}");
    }
    let rate = r.steps_now as f64 / seconds.max(1e-9);
    println!(
        "{} steps ({} now, {rate:.0} steps/s), final ELBO {:.3}",
        r.state.step,
        r.steps_now,
        r.state.elbo.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "{:<20} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "", "mean", "sd", "5%", "50%", "95%"
    );
    for q in &r.quantities {
        table_rows(q);
    }
    let mut sites: Vec<&str> = r.states.iter().map(|s| s.site.as_str()).collect();
    sites.dedup();
    for site in sites {
        let mut rows: Vec<_> = r.states.iter().filter(|s| s.site == site).collect();
        rows.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        let parts: Vec<String> = rows
            .iter()
            .map(|s| format!("P({}) = {:.4}", s.state, s.probability))
            .collect();
        println!(
            "oxidation state of {site}: {} ({}; log odds {:.1} ± {:.1} over {} guide draws)",
            rows[0].state,
            parts.join(", "),
            rows[0].log_odds,
            rows[0].log_odds_se,
            rows[0].particles
        );
    }
    for c in &r.corrections {
        println!(
            "correction flow `{}` ({}, penalty {}) on {}: log-likelihood gain over the uncorrected likelihood {:+.1} ± {:.1} nats ({:+.1} over its Gaussian start)",
            c.flow,
            c.kind,
            c.penalty,
            c.observe.lines().next().unwrap_or_default(),
            c.log_lik_gain,
            c.log_lik_gain_se,
            c.gain_over_identity
        );
    }
    println!("wrote {}", args.out.display());
}

/// Rows of the posterior table: every element of small quantities, the first 8 of larger ones.
fn table_rows(q: &LatentDraws) {
    let rows = summarize(q);
    let n = rows.len();
    for row in rows.iter().take(if n > 10 { 8 } else { n }) {
        let s = &row.summary;
        let name = if q.kind == "let" {
            format!("{} (let)", row.name)
        } else {
            row.name.clone()
        };
        println!(
            "{name:<20} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            s.mean, s.sd, s.q05, s.q50, s.q95
        );
    }
    if n > 10 {
        println!("{:<20} ... {} more in summary.json", "", n - 8);
    }
}
