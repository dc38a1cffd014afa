//! `spreadc fcalc`: structure factors of an atomic model as CSV
//! (`h,k,l,energy_ev,d_spacing_A,ReF,ImF,absF`, one row per reflection and energy), with WK1995
//! f0, Henke f'/f'' (CCTBX's f32 interpolation) for every atom except the elements given by
//! `--fp-fdp` / `--fp-fdp-table`, so the output sets beside CCTBX's directly.

use spread::physics::atoms;
use spread::physics::form_factor::FormFactors;
use spread::physics::miller;
use spread::physics::scattering_tables::henke::HenkeTable;
use spread::physics::scattering_tables::wk1995::GaussianSet;
use spread::physics::scattering_tables::{SpectralTable, normalize_element, sherrell};
use spread::physics::structure_factor::{StructureFactorModel, structure_factors};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `spreadc fcalc`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Atomic model (PDB or mmCIF).
    pub model: PathBuf,
    /// Photon energy in eV (repeatable).
    #[arg(long = "energy", required = true)]
    pub energy_ev: Vec<f64>,
    /// Fixed f', f'' of every atom of an element: ELEMENT=FP,FDP (repeatable).
    #[arg(long = "fp-fdp")]
    pub fp_fdp: Vec<String>,
    /// f', f'' of an element from a three-column file (energy_eV fp fdp): ELEMENT=FILE (repeatable).
    #[arg(long = "fp-fdp-table")]
    pub fp_fdp_table: Vec<String>,
    /// Reflections: one `h k l` per line, or a CSV whose first three columns are h,k,l.
    #[arg(long, conflicts_with = "dmin")]
    pub hkl: Option<PathBuf>,
    /// Resolution limit in Angstrom: all unique, non-absent reflections with d >= DMIN.
    #[arg(long, required_unless_present = "hkl")]
    pub dmin: Option<f64>,
    /// Directory of Henke `.nff` tables (e.g. `yb.nff`) for elements this build does not embed.
    #[arg(long)]
    pub henke_dir: Option<PathBuf>,
    /// Write the CSV here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// How a user-specified element gets its f'/f''.
enum Override {
    Fixed(f64, f64),
    Table(SpectralTable),
}

/// A failure with its exit code (1 model/data, 2 usage/IO).
struct Failure(u8, String);

/// Run `spreadc fcalc`.
pub fn run(args: &Args) -> ExitCode {
    match compute(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

/// Read, compute and write.
fn compute(args: &Args) -> Result<(), Failure> {
    let overrides = parse_overrides(args)?;
    let crystal = read_model(args, &overrides)?;
    let hkl = reflections(args, &crystal)?;
    let form_factors =
        FormFactors::embedded(GaussianSet::Wk1995).map_err(|e| Failure(1, e.to_string()))?;
    let metals: Vec<&str> = overrides
        .iter()
        .map(|(element, _)| element.as_str())
        .collect();
    let model = StructureFactorModel::new(&crystal, &hkl, &form_factors, &metals)
        .map_err(|e| Failure(1, e.to_string()))?;
    let henke: Vec<HenkeTable> = model
        .types
        .iter()
        .map(|element| henke_table(args, element))
        .collect::<Result<_, _>>()?;
    let fixed = model
        .fixed_part(&args.energy_ev, |element, e| {
            let table = henke.iter().find(|t| t.element == element);
            table.map_or(Ok((0.0, 0.0)), |t| t.at_ev_f32(e))
        })
        .map_err(|e| Failure(1, e.to_string()))?;
    let (fp, fdp) = site_values(&model, &crystal, &overrides, &args.energy_ev)?;
    let f = structure_factors(&model, &fixed, fp.view(), fdp.view())
        .map_err(|e| Failure(1, e.to_string()))?;
    write_output(args, &format_csv(&model, &args.energy_ev, f.view()))
}

/// The atomic model, checked to hold every element named by an override; warnings to stderr.
fn read_model(args: &Args, overrides: &[(String, Override)]) -> Result<atoms::Crystal, Failure> {
    let crystal = atoms::read(&args.model).map_err(|e| match e {
        atoms::AtomsError::Io { .. } => Failure(2, e.to_string()),
        _ => Failure(1, e.to_string()),
    })?;
    for warning in &crystal.warnings {
        eprintln!("warning: {}: {warning}", args.model.display());
    }
    let present = |element: &String| crystal.atoms.iter().any(|a| &a.element == element);
    if let Some((element, _)) = overrides.iter().find(|(e, _)| !present(e)) {
        let model = args.model.display();
        return Err(Failure(
            1,
            format!("{model}: no atom of element {element} for --fp-fdp/--fp-fdp-table"),
        ));
    }
    Ok(crystal)
}

/// The Henke table of `element`: from --henke-dir when it has the file, else embedded.
fn henke_table(args: &Args, element: &str) -> Result<HenkeTable, Failure> {
    let file = args
        .henke_dir
        .as_ref()
        .map(|dir| dir.join(format!("{}.nff", element.to_ascii_lowercase())));
    let table = match file {
        Some(path) if path.exists() => HenkeTable::read(&path),
        _ => HenkeTable::embedded(element),
    };
    table.map_err(|e| {
        Failure(
            1,
            format!("{}: {e} (use --henke-dir DIR)", args.model.display()),
        )
    })
}

/// Reflections from --hkl or --dmin.
fn reflections(args: &Args, crystal: &atoms::Crystal) -> Result<Vec<[i32; 3]>, Failure> {
    match (&args.hkl, args.dmin) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure(2, format!("{}: {e}", path.display())))?;
            miller::parse_hkl(&path.display().to_string(), &text)
                .map_err(|e| Failure(1, e.to_string()))
        }
        (None, Some(d)) if d > 0.0 => Ok(miller::unique_to_d_min(
            &crystal.cell,
            &crystal.space_group,
            d,
        )),
        _ => Err(Failure(2, "give --hkl FILE or --dmin D (D > 0)".into())),
    }
}

/// One CSV row per reflection and energy.
fn format_csv(
    model: &StructureFactorModel,
    energies: &[f64],
    f: ndarray::ArrayView2<num_complex::Complex64>,
) -> String {
    let mut csv = String::from("h,k,l,energy_ev,d_spacing_A,ReF,ImF,absF\n");
    for (i, h) in model.hkl.iter().enumerate() {
        for (e, energy) in energies.iter().enumerate() {
            let (value, d) = (f[(i, e)], model.d_spacing[i]);
            let (re, im, abs) = (value.re, value.im, value.norm());
            csv += &format!(
                "{},{},{},{energy},{d:.5},{re:.6},{im:.6},{abs:.6}\n",
                h[0], h[1], h[2]
            );
        }
    }
    csv
}

/// ELEMENT=FP,FDP and ELEMENT=FILE options.
fn parse_overrides(args: &Args) -> Result<Vec<(String, Override)>, Failure> {
    let mut out = Vec::new();
    for option in &args.fp_fdp {
        let (element, values) = option
            .split_once('=')
            .ok_or_else(|| Failure(2, format!("--fp-fdp '{option}': expected ELEMENT=FP,FDP")))?;
        let numbers: Vec<f64> = values
            .split(',')
            .map(|v| v.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                Failure(
                    2,
                    format!("--fp-fdp '{option}': expected two numbers FP,FDP"),
                )
            })?;
        let [fp, fdp] = numbers[..] else {
            return Err(Failure(
                2,
                format!("--fp-fdp '{option}': expected two numbers FP,FDP"),
            ));
        };
        out.push((normalize_element(element), Override::Fixed(fp, fdp)));
    }
    for option in &args.fp_fdp_table {
        let (element, file) = option.split_once('=').ok_or_else(|| {
            Failure(
                2,
                format!("--fp-fdp-table '{option}': expected ELEMENT=FILE"),
            )
        })?;
        let table =
            sherrell::read(std::path::Path::new(file)).map_err(|e| Failure(1, e.to_string()))?;
        out.push((normalize_element(element), Override::Table(table)));
    }
    Ok(out)
}

/// f'/f'' of each metal site (site, channel) from the overrides.
fn site_values(
    model: &StructureFactorModel,
    crystal: &atoms::Crystal,
    overrides: &[(String, Override)],
    energies: &[f64],
) -> Result<(ndarray::Array2<f64>, ndarray::Array2<f64>), Failure> {
    let shape = (model.n_sites(), energies.len());
    let (mut fp, mut fdp) = (ndarray::Array2::zeros(shape), ndarray::Array2::zeros(shape));
    for (m, &atom) in model.metal_atoms.iter().enumerate() {
        let element = &crystal.atoms[atom].element;
        let Some((_, source)) = overrides.iter().find(|(e, _)| e == element) else {
            continue;
        };
        for (e, &energy) in energies.iter().enumerate() {
            let (a, b) = match source {
                Override::Fixed(a, b) => (*a, *b),
                Override::Table(table) => {
                    table.at_ev(energy).map_err(|e| Failure(1, e.to_string()))?
                }
            };
            fp[(m, e)] = a;
            fdp[(m, e)] = b;
        }
    }
    Ok((fp, fdp))
}

/// Write the CSV to --out or standard output.
fn write_output(args: &Args, csv: &str) -> Result<(), Failure> {
    match &args.out {
        Some(path) => {
            std::fs::write(path, csv).map_err(|e| Failure(2, format!("{}: {e}", path.display())))
        }
        None => std::io::stdout()
            .write_all(csv.as_bytes())
            .map_err(|e| Failure(2, format!("standard output: {e}"))),
    }
}
