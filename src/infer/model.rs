//! The data-driven program the IR interpreter targets: nested plates holding latent, param
//! and observe sites whose densities are expressions over tape nodes.
//!
//! In: plates (sized, optionally subsampled), sites in declaration order, named data columns
//! indexed by plates. Out: a validated `Model` (every name resolved, every argument count and
//! plate reference checked) that `engine` evaluates. Guarantees: `validate` reports the first
//! problem with the site's name and label; evaluation never looks a name up that failed here.

use super::constraint::Constraint;
use super::dist::Family;
use crate::tape::{NodeId, Tape, TapeError};
use ndarray::{ArrayD, Axis, IxDyn};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Index of a plate in `Model::plates`.
pub type PlateId = usize;

/// A (possibly nested) plate of conditionally independent instances.
#[derive(Clone, Debug, PartialEq)]
pub struct Plate {
    /// Name, used in messages and summaries.
    pub name: String,
    /// Number of instances (for data plates, the length of the data).
    pub size: usize,
    /// Instances drawn per step (mini-batch); the likelihood is scaled by size / subsample. For a
    /// ragged plate: at most this many of each parent instance's own, scaled by its count / this.
    pub subsample: Option<usize>,
    /// Enclosing plate.
    pub parent: Option<PlateId>,
    /// Evaluate this many instances per tape, batched along a new leading axis (site values
    /// get shape [rows, ..shape], data columns [rows, ..]); expressions must then broadcast
    /// over that axis. Only for top-level plates without nested plates, with mean-field or
    /// point guides. None: one tape per instance.
    pub chunk: Option<usize>,
    /// A ragged child plate: instances are numbered globally (0..size over all parent
    /// instances) and parent instance p owns `offsets[p]..offsets[p + 1]` (e.g. the shoeboxes
    /// of each image). None: every parent instance has `size` instances of its own.
    pub ragged: Option<Arc<Vec<usize>>>,
    /// Evaluate only these instances (ascending) of a top-level plate, every step and
    /// unscaled, in place of its mini-batch: a targeted mode search refines and scores the
    /// instances it names alone. None: all (or the mini-batch).
    pub restrict: Option<Arc<Vec<usize>>>,
}

/// A closure building a node from the instance's environment.
pub type ExprFn = Arc<dyn Fn(&mut Tape, &Env) -> Result<NodeId, TapeError> + Send + Sync>;

/// An argument of a prior or likelihood.
#[derive(Clone)]
pub enum Expr {
    /// A number.
    Const(f64),
    /// A constant tensor.
    Array(Arc<ArrayD<f64>>),
    /// The constrained value of a site visible from here.
    Site(String),
    /// A data column at the current plate instance.
    Data(String),
    /// Arbitrary tape ops over the environment.
    Call(ExprFn),
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Const(v) => write!(f, "{v}"),
            Expr::Array(a) => write!(f, "array{:?}", a.shape()),
            Expr::Site(s) => write!(f, "site {s}"),
            Expr::Data(s) => write!(f, "data {s}"),
            Expr::Call(_) => write!(f, "<expression>"),
        }
    }
}

/// How a latent's posterior is approximated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GuideKind {
    /// Independent normals in unconstrained space.
    MeanField,
    /// Independent normals over a partially centred copy ũ of a Normal latent z ~ N(μ, σ):
    /// ũ ~ N(λμ, σ^λ), z = μ + σ^(1-λ) (ũ - λμ), with a learned centring λ ∈ (0, 1) per
    /// element (λ = 1 the centred latent, λ = 0 the non-centred one; Gorinova, Moore &
    /// Hoffman 2020). The block holds loc, raw scale and the centring's logit, `event` each.
    PartialCentring,
    /// Normal with covariance W Wᵀ + diag(D²) of the given rank.
    LowRank(usize),
    /// Normal with a full Cholesky factor.
    FullRank,
    /// A point estimate (`param`).
    Point,
    /// A normal whose location and scale an MLP computes from the instance's data
    /// (`LatentSite::encoder`); its weights are shared by all instances.
    Encoder,
    /// Not a guide: the conditioner weights of an observe site's correction flow
    /// (`ObserveSite::correction`), one block shared by all instances.
    Flow,
}

/// A latent variable (with a prior) or a parameter (without).
#[derive(Clone, Debug)]
pub struct LatentSite {
    /// Name.
    pub name: String,
    /// Innermost enclosing plate.
    pub plate: Option<PlateId>,
    /// Shape of one instance's value.
    pub shape: Vec<usize>,
    /// Prior family and arguments; None for a `param`.
    pub prior: Option<(Family, Vec<Expr>)>,
    /// Support.
    pub constraint: Constraint,
    /// Guide.
    pub guide: GuideKind,
    /// Initial constrained value of the guide's location.
    pub init: Option<f64>,
    /// Initial scale of a mean-field guide in unconstrained space (None: the default 0.1).
    pub init_scale: Option<f64>,
    /// The network of an `Encoder` guide.
    pub encoder: Option<Arc<super::encoder::EncoderSpec>>,
    /// Source label for errors.
    pub label: String,
}

/// An observed variable.
#[derive(Clone, Debug)]
pub struct ObserveSite {
    /// Name.
    pub name: String,
    /// Innermost enclosing plate.
    pub plate: Option<PlateId>,
    /// Likelihood family.
    pub family: Family,
    /// Likelihood arguments.
    pub args: Vec<Expr>,
    /// The observed value.
    pub value: Expr,
    /// The correction flow on the likelihood (`corrected by`), if any.
    pub correction: Option<Arc<super::flow::CorrectionSpec>>,
    /// Source label for errors.
    pub label: String,
}

/// A term added to the log density (a restraint), summed over its elements.
#[derive(Clone, Debug)]
pub struct FactorSite {
    /// Name.
    pub name: String,
    /// Innermost enclosing plate.
    pub plate: Option<PlateId>,
    /// The log-density term.
    pub value: Expr,
    /// Source label for errors.
    pub label: String,
}

/// A deterministic value computed once per evaluation and visible to later sites by name.
#[derive(Clone, Debug)]
pub struct LetSite {
    /// Name.
    pub name: String,
    /// Innermost enclosing plate.
    pub plate: Option<PlateId>,
    /// The value.
    pub value: Expr,
    /// Source label for errors.
    pub label: String,
}

/// A site, in declaration order.
#[derive(Clone, Debug)]
pub enum Site {
    /// A latent or param.
    Latent(LatentSite),
    /// An observation.
    Observe(ObserveSite),
    /// A named deterministic value (adds nothing to the density).
    Let(LetSite),
    /// A restraint: a term added to the log density.
    Factor(FactorSite),
}

impl Site {
    /// Site name.
    pub fn name(&self) -> &str {
        match self {
            Site::Latent(l) => &l.name,
            Site::Observe(o) => &o.name,
            Site::Let(d) => &d.name,
            Site::Factor(f) => &f.name,
        }
    }

    /// Innermost plate.
    pub fn plate(&self) -> Option<PlateId> {
        match self {
            Site::Latent(l) => l.plate,
            Site::Observe(o) => o.plate,
            Site::Let(d) => d.plate,
            Site::Factor(f) => f.plate,
        }
    }
}

/// A data column: leading axes indexed by `plates` (outermost first).
#[derive(Clone, Debug, PartialEq)]
pub struct DataColumn {
    /// Plates indexing the leading axes.
    pub plates: Vec<PlateId>,
    /// Values (shared: tapes read a plate instance's rows in place).
    pub values: Arc<ArrayD<f64>>,
}

/// A model ready to evaluate.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// Plates.
    pub plates: Vec<Plate>,
    /// Sites in declaration order.
    pub sites: Vec<Site>,
    /// Named data.
    pub data: HashMap<String, DataColumn>,
    index: HashMap<String, usize>,
}

/// A problem found when building or evaluating a model.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ModelError {
    /// A name used but not defined (or not visible from the plate).
    #[error("{label}: site `{site}` refers to unknown or out-of-plate name `{name}`")]
    UnknownName {
        /// Referring site.
        site: String,
        /// Its label.
        label: String,
        /// The missing name.
        name: String,
    },
    /// Two sites share a name.
    #[error("{label}: site `{site}` is defined twice")]
    Duplicate {
        /// Site name.
        site: String,
        /// Its label.
        label: String,
    },
    /// Wrong argument count for a family.
    #[error("{label}: site `{site}`: {family} takes {expected} arguments, got {found}")]
    Arity {
        /// Site name.
        site: String,
        /// Its label.
        label: String,
        /// Family name.
        family: &'static str,
        /// Expected count.
        expected: usize,
        /// Given count.
        found: usize,
    },
    /// A plate reference or size problem.
    #[error("plate `{plate}`: {detail}")]
    Plate {
        /// Plate name.
        plate: String,
        /// What is wrong.
        detail: String,
    },
    /// A data column whose plates or shape do not fit.
    #[error("data `{name}`: {detail}")]
    Data {
        /// Column name.
        name: String,
        /// What is wrong.
        detail: String,
    },
}

impl Model {
    /// Adds a plate and returns its id.
    pub fn plate(&mut self, name: &str, size: usize, parent: Option<PlateId>) -> PlateId {
        self.plates.push(Plate {
            name: name.into(),
            size,
            subsample: None,
            parent,
            chunk: None,
            ragged: None,
            restrict: None,
        });
        self.plates.len() - 1
    }

    /// Adds a ragged child plate of `parent`: parent instance p owns the instances
    /// `offsets[p]..offsets[p + 1]` (offsets start at 0, never decrease, and end at the total).
    pub fn ragged_plate(&mut self, name: &str, parent: PlateId, offsets: Vec<usize>) -> PlateId {
        let size = offsets.last().copied().unwrap_or(0);
        let id = self.plate(name, size, Some(parent));
        self.plates[id].ragged = Some(Arc::new(offsets));
        id
    }

    /// The instances of `plate` inside parent instance `parent_flat` (all of a plain plate).
    pub fn child_instances(&self, plate: PlateId, parent_flat: usize) -> std::ops::Range<usize> {
        let p = &self.plates[plate];
        match &p.ragged {
            Some(offsets) => {
                let lo = offsets.get(parent_flat).copied().unwrap_or(0);
                let hi = offsets.get(parent_flat + 1).copied().unwrap_or(lo);
                lo..hi
            }
            None => 0..p.size,
        }
    }

    /// Row-major flat index of an instance over its plate chain (a ragged plate's indices are
    /// already global, so the enclosing plates do not multiply them).
    pub fn flat_index(&self, instance: &[(PlateId, usize)]) -> usize {
        instance.iter().fold(0, |acc, &(p, i)| {
            if self.plates[p].ragged.is_some() {
                i
            } else {
                acc * self.plates[p].size + i
            }
        })
    }

    /// Adds a site (order matters: a site may only use sites declared before it).
    pub fn site(&mut self, site: Site) -> &mut Self {
        self.sites.push(site);
        self
    }

    /// Adds a data column indexed by `plates`.
    pub fn data(&mut self, name: &str, plates: Vec<PlateId>, values: ArrayD<f64>) -> &mut Self {
        let values = Arc::new(values.as_standard_layout().into_owned());
        self.data.insert(name.into(), DataColumn { plates, values });
        self
    }

    /// Index of a site by name (after `validate`).
    pub fn site_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The chain of plates from outermost to `plate`.
    pub fn plate_chain(&self, plate: Option<PlateId>) -> Vec<PlateId> {
        let mut chain = Vec::new();
        let mut p = plate;
        while let Some(id) = p {
            chain.push(id);
            p = self.plates.get(id).and_then(|pl| pl.parent);
        }
        chain.reverse();
        chain
    }

    /// Number of instances of a site (product of its plate sizes).
    pub fn instances(&self, plate: Option<PlateId>) -> usize {
        self.plate_chain(plate).iter().fold(1, |acc, &p| {
            if self.plates[p].ragged.is_some() {
                self.plates[p].size
            } else {
                acc * self.plates[p].size
            }
        })
    }

    /// Resolves names and checks arities, plates and data shapes.
    pub fn validate(&mut self) -> Result<(), ModelError> {
        self.validate_with(false)
    }

    /// [`Model::validate`], optionally admitting plates with no instances (a model planned only
    /// to evaluate its top-level lets, as the simulator does before any image exists).
    pub fn validate_with(&mut self, empty_plates: bool) -> Result<(), ModelError> {
        self.check_plates(empty_plates)?;
        self.check_data()?;
        self.index.clear();
        for (i, site) in self.sites.iter().enumerate() {
            if self.index.insert(site.name().to_string(), i).is_some() {
                return Err(ModelError::Duplicate {
                    site: site.name().into(),
                    label: site_label(site).to_string(),
                });
            }
            self.check_site(i, site)?;
        }
        Ok(())
    }

    fn check_plates(&self, empty_plates: bool) -> Result<(), ModelError> {
        for (i, p) in self.plates.iter().enumerate() {
            let err = |detail: String| ModelError::Plate {
                plate: p.name.clone(),
                detail,
            };
            if p.parent.is_some_and(|q| q >= i) {
                return Err(err("its parent must be declared before it".into()));
            }
            if p.size == 0 && !empty_plates {
                return Err(err("has no instances".into()));
            }
            let nested = self.plates.iter().any(|q| q.parent == Some(i));
            if p.chunk.is_some() && (p.parent.is_some() || nested) {
                return Err(err(
                    "only a top-level plate without nested plates can be chunked".into(),
                ));
            }
            if let Some(offsets) = &p.ragged {
                self.check_ragged(p, offsets).map_err(err)?;
            }
            if p.subsample.is_some_and(|b| b == 0 || b > p.size) {
                return Err(err(format!("subsample must be in 1..={}", p.size)));
            }
        }
        Ok(())
    }

    fn check_ragged(&self, p: &Plate, offsets: &[usize]) -> Result<(), String> {
        let Some(parent) = p.parent else {
            return Err("a ragged plate needs a parent".into());
        };
        let parents = self.instances(Some(parent));
        if offsets.len() != parents + 1 {
            return Err(format!(
                "has {} offsets for {parents} parent instances",
                offsets.len()
            ));
        }
        if offsets.first() != Some(&0) || offsets.windows(2).any(|w| w[1] < w[0]) {
            return Err("offsets must start at 0 and never decrease".into());
        }
        if p.chunk.is_some() {
            return Err("a ragged plate cannot be chunked".into());
        }
        Ok(())
    }

    fn check_data(&self) -> Result<(), ModelError> {
        for (name, col) in &self.data {
            let err = |detail: String| ModelError::Data {
                name: name.clone(),
                detail,
            };
            if col.values.ndim() < col.plates.len() {
                return Err(err(format!(
                    "has {} axes for {} plates",
                    col.values.ndim(),
                    col.plates.len()
                )));
            }
            for (axis, &p) in col.plates.iter().enumerate() {
                let plate = self
                    .plates
                    .get(p)
                    .ok_or_else(|| err(format!("unknown plate {p}")))?;
                if col.values.shape()[axis] != plate.size {
                    return Err(err(format!(
                        "axis {axis} has length {} but plate `{}` has {} instances",
                        col.values.shape()[axis],
                        plate.name,
                        plate.size
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_site(&self, i: usize, site: &Site) -> Result<(), ModelError> {
        let (family, args) = match site {
            Site::Latent(l) => match &l.prior {
                Some((f, a)) => (Some(*f), a.iter().collect::<Vec<_>>()),
                None => (None, Vec::new()),
            },
            Site::Observe(o) => (
                Some(o.family),
                o.args.iter().chain(std::iter::once(&o.value)).collect(),
            ),
            Site::Let(d) => (None, vec![&d.value]),
            Site::Factor(f) => (None, vec![&f.value]),
        };
        if let Some(f) = family {
            let given = args.len() - usize::from(matches!(site, Site::Observe(_)));
            if given != f.arity() {
                return Err(ModelError::Arity {
                    site: site.name().into(),
                    label: site_label(site).to_string(),
                    family: f.name(),
                    expected: f.arity(),
                    found: given,
                });
            }
        }
        let visible = self.plate_chain(site.plate());
        for arg in args {
            self.check_name(i, site, arg, &visible)?;
        }
        Ok(())
    }

    fn check_name(
        &self,
        i: usize,
        site: &Site,
        arg: &Expr,
        visible: &[PlateId],
    ) -> Result<(), ModelError> {
        let unknown = |name: &str| ModelError::UnknownName {
            site: site.name().into(),
            label: site_label(site).to_string(),
            name: name.into(),
        };
        match arg {
            Expr::Site(name) => {
                let j = self
                    .index
                    .get(name)
                    .copied()
                    .filter(|&j| j < i)
                    .ok_or_else(|| unknown(name))?;
                let their = self.plate_chain(self.sites[j].plate());
                if !visible.starts_with(&their) {
                    return Err(unknown(name));
                }
            }
            Expr::Data(name) => {
                let col = self.data.get(name).ok_or_else(|| unknown(name))?;
                // A ragged plate numbers its instances globally, so its columns may skip the
                // enclosing plates: every plate of the column must be visible, in order.
                let mut rest = visible.iter();
                if !col.plates.iter().all(|p| rest.any(|v| v == p)) {
                    return Err(unknown(name));
                }
                let ragged_skip = col
                    .plates
                    .first()
                    .is_some_and(|&p| self.plates[p].ragged.is_some());
                if !visible.starts_with(&col.plates) && !ragged_skip {
                    return Err(unknown(name));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The label of a site.
pub fn site_label(site: &Site) -> &str {
    match site {
        Site::Latent(l) => &l.label,
        Site::Observe(o) => &o.label,
        Site::Let(d) => &d.label,
        Site::Factor(f) => &f.label,
    }
}

/// What an expression sees at one plate instance: site values on the current tape, data, and
/// the instance indices of the enclosing plates.
pub struct Env<'a> {
    /// The model.
    pub model: &'a Model,
    /// Node of each site's value on the current tape (None where not yet evaluated).
    pub values: Vec<Option<NodeId>>,
    /// (plate, instance index) from outermost to innermost.
    pub instance: Vec<(PlateId, usize)>,
    /// A chunked plate and the instances evaluated together on this tape.
    pub batch: Option<(PlateId, Vec<usize>)>,
    /// Values a mode search proposed: (site, flat instance, node), in evaluation order.
    pub proposals: Vec<(usize, usize, NodeId)>,
}

impl<'a> Env<'a> {
    /// An empty environment at the global level (no site evaluated yet).
    pub fn new(model: &'a Model) -> Self {
        Env {
            model,
            values: vec![None; model.sites.len()],
            instance: Vec::new(),
            batch: None,
            proposals: Vec::new(),
        }
    }
    /// Node holding a site's constrained value.
    pub fn site(&self, name: &str) -> Option<NodeId> {
        self.model
            .site_index(name)
            .and_then(|i| self.values.get(i).copied().flatten())
    }

    /// The current instance index of a plate.
    pub fn plate_index(&self, plate: PlateId) -> Option<usize> {
        self.instance
            .iter()
            .find(|(p, _)| *p == plate)
            .map(|(_, i)| *i)
    }

    /// The slice of a data column at the current instance, as an array.
    pub fn data_slice(&self, name: &str) -> Option<ArrayD<f64>> {
        let col = self.model.data.get(name)?;
        if let Some((plate, rows)) = &self.batch
            && col.plates.first() == Some(plate)
        {
            let (first, last) = (*rows.first()?, *rows.last()?);
            if last + 1 - first == rows.len() {
                return Some(
                    col.values
                        .slice_axis(Axis(0), ndarray::Slice::from(first..=last))
                        .to_owned(),
                );
            }
            return Some(col.values.select(Axis(0), rows));
        }
        let mut view = col.values.view();
        for &p in &col.plates {
            view = view.index_axis_move(Axis(0), self.plate_index(p)?);
        }
        view.to_owned().into_dimensionality::<IxDyn>().ok()
    }

    /// The slice of a data column at the current instance as a tape node: read in place when
    /// its rows are contiguous (no copy per step), else copied.
    pub fn data_node(&self, t: &mut Tape, name: &str) -> Option<NodeId> {
        let col = self.model.data.get(name)?;
        let view = match &self.batch {
            Some((plate, rows)) if col.plates.first() == Some(plate) => {
                let (first, last) = (*rows.first()?, *rows.last()?);
                if last + 1 - first != rows.len() {
                    return Some(t.constant_real(col.values.select(Axis(0), rows)));
                }
                col.values
                    .slice_axis(Axis(0), ndarray::Slice::from(first..=last))
            }
            _ => {
                let mut view = col.values.view();
                for &p in &col.plates {
                    view = view.index_axis_move(Axis(0), self.plate_index(p)?);
                }
                view
            }
        };
        Some(match crate::tape::DataRef::of_view(&col.values, &view) {
            Some(d) => t.data(d),
            None => t.constant_real(view.to_owned()),
        })
    }

    /// Records an expression on the tape.
    pub fn eval(&self, t: &mut Tape, e: &Expr) -> Result<NodeId, TapeError> {
        let missing = |what: &str, name: &str| TapeError::Op {
            op: "lookup",
            label: String::new(),
            detail: format!("{what} `{name}` is not available here"),
        };
        match e {
            Expr::Const(v) => Ok(t.scalar(*v)),
            Expr::Array(a) => Ok(t.constant_real((**a).clone())),
            Expr::Site(name) => self.site(name).ok_or_else(|| missing("site", name)),
            Expr::Data(name) => self.data_node(t, name).ok_or_else(|| missing("data", name)),
            Expr::Call(f) => f(t, self),
        }
    }
}
