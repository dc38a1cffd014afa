//! refined_sf.mtz: posterior structure-factor amplitudes of the observed reflections as a merged
//! anomalous MTZ (H K L FMEAN SIGFMEAN F(+) SIGF(+) F(-) SIGF(-) DANO SIGDANO).
//!
//! In: a space group (for the reciprocal asymmetric unit and the MTZ symmetry records), the
//! cell, and per unique reflection the posterior draws of |F(+h)| and |F(-h)| (h in the
//! asymmetric unit). Out: [`RefinedSf`] (posterior mean and sd of every column) and its [`Mtz`].
//! Guarantees: where the space group is its reference setting up to an origin shift, the
//! asymmetric unit is CCP4's (the ten conditions of CCP4 symlib, gemmi and cctbx, chosen by the
//! space-group number); any other setting uses "the largest index of the Laue orbit" and says
//! so in [`ReciprocalAsu::convention`]. F(+) belongs to h, F(-) to -h; FMEAN is the posterior
//! mean of (|F(+)| + |F(-)|) / 2 and DANO of |F(+)| - |F(-)|; sd has the n - 1 denominator. A
//! centric row (-h equivalent to h) is written with F(-) = F(+) and DANO = 0 exactly.

use crate::formats::mtz::{Mtz, MtzColumn, MtzSpaceGroup};
use crate::physics::symmetry::{SpaceGroup, SymOp, table};
use serde::Serialize;

/// File name of the refined structure factors in `--out`.
pub const FILE_NAME: &str = "refined_sf.mtz";

/// Which member of a Friedel pair an observed index is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Symmetry-equivalent to the asymmetric-unit index h.
    Plus,
    /// Symmetry-equivalent to -h.
    Minus,
}

/// How the asymmetric unit is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AsuRule {
    /// CCP4's condition number 0-9 (gemmi's `ReciprocalAsu` numbering).
    Ccp4(u8),
    /// The lexicographically largest index of the orbit under the Laue group.
    LargestIndex,
}

/// The reciprocal-space asymmetric unit of a space group (Friedel mates kept apart).
#[derive(Debug, Clone)]
pub struct ReciprocalAsu {
    rotations: Vec<[[i32; 3]; 3]>,
    rule: AsuRule,
}

/// CCP4's asymmetric-unit condition of space group `number` (gemmi's `ccp4_hkl_asu` table).
fn ccp4_asu_class(number: u32) -> Option<u8> {
    Some(match number {
        1..=2 => 0,
        3..=15 => 1,
        16..=74 => 2,
        75..=88 | 168..=176 => 3,
        89..=142 | 177..=194 => 4,
        143..=148 => 5,
        149 | 151 | 153 | 157 | 159 | 162 | 163 => 6,
        150 | 152 | 154..=156 | 158 | 160 | 161 | 164..=167 => 7,
        195..=206 => 8,
        207..=230 => 9,
        _ => return None,
    })
}

/// True when `[h, k, l]` satisfies CCP4 condition `class`.
fn in_ccp4_asu(class: u8, [h, k, l]: [i32; 3]) -> bool {
    match class {
        0 => l > 0 || (l == 0 && (h > 0 || (h == 0 && k >= 0))),
        1 => k >= 0 && (l > 0 || (l == 0 && h >= 0)),
        2 => h >= 0 && k >= 0 && l >= 0,
        3 => l >= 0 && ((h >= 0 && k > 0) || (h == 0 && k == 0)),
        4 => h >= k && k >= 0 && l >= 0,
        5 => (h >= 0 && k > 0) || (h == 0 && k == 0 && l >= 0),
        6 => h >= k && k >= 0 && (k > 0 || l >= 0),
        7 => h >= k && k >= 0 && (h > k || l >= 0),
        8 => h >= 0 && ((l >= h && k > h) || (l == h && k == h)),
        9 => k >= l && l >= h && h >= 0,
        _ => false,
    }
}

/// The CCP4 condition of a group tabulated in its reference setting or an origin choice of it
/// (same Hermann-Mauguin symbol, not rhombohedral axes), where CCP4's conditions apply to the
/// indices as they are; None for any other setting.
fn reference_class(group: &SpaceGroup) -> Option<u8> {
    let entry = table::by_hall(&group.hall)?;
    let first = table::by_number(entry.number)?;
    (entry.hm == first.hm && entry.ext != "R")
        .then(|| ccp4_asu_class(entry.number))
        .flatten()
}

/// h R (Miller indices are row vectors).
fn rotate(h: [i32; 3], rot: &[[i32; 3]; 3]) -> [i32; 3] {
    std::array::from_fn(|j| (0..3).map(|i| h[i] * rot[i][j]).sum())
}

fn negate(h: [i32; 3]) -> [i32; 3] {
    h.map(|x| -x)
}

impl ReciprocalAsu {
    /// The asymmetric unit of `group`.
    pub fn new(group: &SpaceGroup) -> Self {
        let mut rotations: Vec<[[i32; 3]; 3]> = Vec::new();
        for op in &group.ops {
            if !rotations.contains(&op.rot) {
                rotations.push(op.rot);
            }
        }
        let rule = reference_class(group).map_or(AsuRule::LargestIndex, AsuRule::Ccp4);
        Self { rotations, rule }
    }

    /// True when the CCP4 convention applies.
    pub fn is_ccp4(&self) -> bool {
        matches!(self.rule, AsuRule::Ccp4(_))
    }

    /// The convention in words, for summary.json.
    pub fn convention(&self) -> &'static str {
        match self.rule {
            AsuRule::Ccp4(_) => "CCP4 (as gemmi and cctbx)",
            AsuRule::LargestIndex => {
                "largest index of the Laue orbit (not CCP4's: the space group is not in its reference setting)"
            }
        }
    }

    fn contains(&self, h: [i32; 3], orbit: &[[i32; 3]]) -> bool {
        match self.rule {
            AsuRule::Ccp4(class) => in_ccp4_asu(class, h),
            AsuRule::LargestIndex => orbit.iter().all(|&g| g <= h),
        }
    }

    /// The asymmetric-unit index of `h` and which Friedel member `h` is of it. Centric
    /// reflections (-h equivalent to h) are always [`Side::Plus`].
    pub fn reduce(&self, h: [i32; 3]) -> ([i32; 3], Side) {
        let plus: Vec<[i32; 3]> = self.rotations.iter().map(|r| rotate(h, r)).collect();
        let mut laue = plus.clone();
        laue.extend(plus.iter().map(|&g| negate(g)));
        if let Some(&g) = plus.iter().find(|&&g| self.contains(g, &laue)) {
            return (g, Side::Plus);
        }
        match laue[plus.len()..]
            .iter()
            .find(|&&g| self.contains(g, &laue))
        {
            Some(&g) => (g, Side::Minus),
            // Unreachable for a crystallographic group; keep h rather than fail.
            None => (h, Side::Plus),
        }
    }

    /// True when -h is symmetry-equivalent to h (Friedel's law holds for it).
    pub fn is_centric(&self, h: [i32; 3]) -> bool {
        self.rotations.iter().any(|r| rotate(h, r) == negate(h))
    }

    /// The sorted asymmetric-unit indices of the observed reflections (000 left out).
    pub fn unique(&self, observed: impl IntoIterator<Item = [i32; 3]>) -> Vec<[i32; 3]> {
        let set: std::collections::BTreeSet<[i32; 3]> = observed
            .into_iter()
            .filter(|&h| h != [0, 0, 0])
            .map(|h| self.reduce(h).0)
            .collect();
        set.into_iter().collect()
    }
}

/// CCP4 point-group name of space group `number` (as in CCP4's symop.lib).
fn point_group_name(number: u32, asu_class: Option<u8>) -> &'static str {
    let trigonal_312 = asu_class == Some(6);
    match number {
        1 => "PG1",
        2 => "PG1bar",
        3..=5 => "PG2",
        6..=9 => "PGm",
        10..=15 => "PG2/m",
        16..=24 => "PG222",
        25..=46 => "PGmm2",
        47..=74 => "PGmmm",
        75..=80 => "PG4",
        81..=82 => "PG4bar",
        83..=88 => "PG4/m",
        89..=98 => "PG422",
        99..=110 => "PG4mm",
        111..=122 => "PG4bar2m",
        123..=142 => "PG4/mmm",
        143..=146 => "PG3",
        147..=148 => "PG3bar",
        149..=155 if trigonal_312 => "PG312",
        149..=155 => "PG321",
        156..=161 if trigonal_312 => "PG31m",
        156..=161 => "PG3m1",
        162..=163 => "PG3bar1m",
        164..=167 => "PG3barm1",
        168..=173 => "PG6",
        174 => "PG6bar",
        175..=176 => "PG6/m",
        177..=182 => "PG622",
        183..=186 => "PG6mm",
        187..=190 => "PG6barm2",
        191..=194 => "PG6/mmm",
        195..=199 => "PG23",
        200..=206 => "PGm3bar",
        207..=214 => "PG432",
        215..=220 => "PG4bar3m",
        _ => "PGm3barm",
    }
}

/// The space group as MTZ records it: number, name, point group, lattice letter and every
/// operator (one per rotation first, the centring-translated ones after).
pub fn mtz_space_group(group: &SpaceGroup) -> Result<MtzSpaceGroup, String> {
    let (Some(number), Some(name)) = (group.number, group.hm.clone()) else {
        return Err(format!(
            "space group `{}` is not in the table of settings (no number or Hermann-Mauguin symbol for the MTZ)",
            group.hall
        ));
    };
    let lattice = group
        .hall
        .trim_start()
        .trim_start_matches('-')
        .chars()
        .next()
        .map(|c| c.to_ascii_uppercase())
        .ok_or_else(|| format!("space group `{}`: empty Hall symbol", group.hall))?;
    let mut primitive: Vec<SymOp> = Vec::new();
    let mut centred: Vec<SymOp> = Vec::new();
    for op in &group.ops {
        if primitive.iter().any(|p| p.rot == op.rot) {
            centred.push(*op);
        } else {
            primitive.push(*op);
        }
    }
    let primitive_operators = primitive.len();
    let operators = primitive
        .iter()
        .chain(&centred)
        .map(SymOp::triplet)
        .collect();
    Ok(MtzSpaceGroup {
        number,
        name,
        point_group: point_group_name(number, ccp4_asu_class(number)).to_string(),
        lattice,
        operators,
        primitive_operators,
    })
}

/// Posterior mean and sd of one quantity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanSd {
    /// Posterior mean.
    pub mean: f64,
    /// Posterior standard deviation (n - 1 denominator; 0 for one draw).
    pub sd: f64,
}

/// Running mean and sum of squared deviations (Welford), exact enough for sd << mean.
#[derive(Debug, Clone, Copy, Default)]
struct Running {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Running {
    fn push(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    fn summary(&self) -> MeanSd {
        let sd = if self.n > 1 {
            (self.m2 / (self.n - 1) as f64).sqrt()
        } else {
            0.0
        };
        MeanSd {
            mean: self.mean,
            sd,
        }
    }
}

/// The posterior of one unique reflection's amplitudes (electrons).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefinedReflection {
    /// Asymmetric-unit index h.
    pub hkl: [i32; 3],
    /// (|F(h)| + |F(-h)|) / 2.
    pub f_mean: MeanSd,
    /// |F(h)|.
    pub f_plus: MeanSd,
    /// |F(-h)|.
    pub f_minus: MeanSd,
    /// |F(h)| - |F(-h)|.
    pub dano: MeanSd,
    /// -h is symmetry-equivalent to h: F(-) = F(+) and DANO = 0 are written exactly.
    pub centric: bool,
}

/// Accumulates draws of |F(+h)|, |F(-h)| of every reflection.
#[derive(Debug, Clone)]
pub struct AmplitudeDraws {
    hkl: Vec<[i32; 3]>,
    sums: Vec<[Running; 4]>,
}

impl AmplitudeDraws {
    /// No draws yet for reflections `hkl`.
    pub fn new(hkl: &[[i32; 3]]) -> Self {
        Self {
            hkl: hkl.to_vec(),
            sums: vec![[Running::default(); 4]; hkl.len()],
        }
    }

    /// Adds one posterior draw: `f_plus[i] = |F(h_i)|`, `f_minus[i] = |F(-h_i)|`.
    pub fn push(&mut self, f_plus: &[f64], f_minus: &[f64]) {
        for ((s, &p), &m) in self.sums.iter_mut().zip(f_plus).zip(f_minus) {
            for (r, x) in s.iter_mut().zip([(p + m) / 2.0, p, m, p - m]) {
                r.push(x);
            }
        }
    }

    /// The posterior summaries, in the order of `hkl`.
    pub fn finish(&self, asu: &ReciprocalAsu) -> Vec<RefinedReflection> {
        self.hkl
            .iter()
            .zip(&self.sums)
            .map(|(&hkl, s)| {
                let centric = asu.is_centric(hkl);
                let f_plus = s[1].summary();
                // Friedel's law holds for a centric reflection: |F(-h)| = |F(h)| exactly (the
                // computed values agree to ~1e-15 relative); write it so.
                let exact = |value: MeanSd| if centric { f_plus } else { value };
                RefinedReflection {
                    hkl,
                    f_mean: exact(s[0].summary()),
                    f_plus,
                    f_minus: exact(s[2].summary()),
                    dano: if centric {
                        MeanSd { mean: 0.0, sd: 0.0 }
                    } else {
                        s[3].summary()
                    },
                    centric,
                }
            })
            .collect()
    }
}

/// The refined structure factors of a run and where they were evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct RefinedSf {
    /// The metal element whose f'/f'' draws were used (`structure_factor`'s element).
    pub element: String,
    /// Energy of the amplitudes, eV (the channel nearest the mean spectrum energy).
    pub energy_ev: f64,
    /// Index of that channel on the model's grid.
    pub channel: usize,
    /// Mean over images of the spectrum-weighted energy, eV.
    pub mean_spectrum_energy_ev: f64,
    /// Wavelength of `energy_ev`, Å (MTZ DWAVEL).
    pub wavelength_a: f64,
    /// Posterior draws per reflection.
    pub draws: usize,
    /// Shoeboxes whose indices were reduced.
    pub observed_shoeboxes: usize,
    /// The asymmetric-unit convention.
    pub asu: &'static str,
    /// The scale of the amplitudes.
    pub scale: &'static str,
    /// One row per unique reflection.
    pub reflections: Vec<RefinedReflection>,
}

/// What the amplitudes are on, for the MTZ title and summary.json.
pub const SCALE: &str = "absolute: electrons per unit cell, as the model's structure_factor; per-image scale factors are not applied";

impl RefinedSf {
    /// The merged anomalous MTZ of these amplitudes in `cell` and `group`.
    pub fn to_mtz(
        &self,
        cell: [f64; 6],
        group: &SpaceGroup,
        crystal_name: &str,
    ) -> Result<Mtz, String> {
        let column =
            |label: &str, kind: char, pick: &dyn Fn(&RefinedReflection) -> f64| MtzColumn {
                label: label.into(),
                kind,
                values: self.reflections.iter().map(|r| pick(r) as f32).collect(),
            };
        let columns = vec![
            column("FMEAN", 'F', &|r| r.f_mean.mean),
            column("SIGFMEAN", 'Q', &|r| r.f_mean.sd),
            column("F(+)", 'G', &|r| r.f_plus.mean),
            column("SIGF(+)", 'L', &|r| r.f_plus.sd),
            column("F(-)", 'G', &|r| r.f_minus.mean),
            column("SIGF(-)", 'L', &|r| r.f_minus.sd),
            column("DANO", 'D', &|r| r.dano.mean),
            column("SIGDANO", 'Q', &|r| r.dano.sd),
        ];
        Ok(Mtz {
            title: format!(
                "spread posterior F at {:.1} eV, absolute scale (e-/cell)",
                self.energy_ev
            ),
            cell,
            space_group: mtz_space_group(group)?,
            wavelength_a: self.wavelength_a,
            names: [
                "spread".into(),
                mtz_name(crystal_name),
                format!("refined_{:.1}eV", self.energy_ev),
            ],
            hkl: self.reflections.iter().map(|r| r.hkl).collect(),
            columns,
        })
    }
}

/// A name MTZ accepts: no white space, ASCII, at most 64 characters.
fn mtz_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_whitespace() {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "crystal".into()
    } else {
        cleaned
    }
}
