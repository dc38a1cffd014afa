//! The built-in schema of data sources: what each `data` binding provides, field by field.
//!
//! In: a source kind (`pdb`, `dials`, `table`) and its arguments; a record kind and a field name.
//! Out: the type of the binding or field. Guarantees: this module is the single place that says what
//! data looks like to a model; the README's "Data sources" table is written from it.
//! Sizes that vary with the data are symbolic dimensions named `RECORD.FIELD` (e.g.
//! `shoebox.n_pixels`), so two fields with the same named size broadcast together.

use super::types::{Base, Dim, Rec, Type};
use crate::diagnostics::Code;
use crate::syntax::ast::DataArg;

/// Columns declared for each table binding: (binding, [(column, type)]).
pub type Tables = Vec<(String, Vec<(String, Type)>)>;

/// Source kinds with the form of their arguments (for messages).
pub const SOURCES: &[(&str, &str)] = &[
    ("pdb", "pdb(\"model.pdb\"): an atomic model (PDB or mmCIF)"),
    (
        "dials",
        "dials(\"*.expt\", \"*.refl\"): DIALS experiment lists and reflection tables with shoeboxes",
    ),
    (
        "table",
        "table(\"file.csv\", column: real, ...): a CSV table with typed columns",
    ),
];

fn sym(name: &str) -> Dim {
    Dim::Sym(name.to_string())
}

fn real(shape: Vec<Dim>) -> Type {
    Type::tensor(Base::Real, shape)
}

/// The fields of a record kind, in documentation order.
pub fn fields(rec: &Rec, tables: &Tables) -> Vec<(String, Type)> {
    let int = || Type::scalar(Base::Int);
    let list: Vec<(&str, Type)> = match rec {
        Rec::Crystal => vec![
            ("cell", real(vec![Dim::Known(6)])),
            ("n_atoms", int()),
            ("xyz", real(vec![sym("crystal.n_atoms"), Dim::Known(3)])),
            ("b_iso", real(vec![sym("crystal.n_atoms")])),
            ("occupancy", real(vec![sym("crystal.n_atoms")])),
        ],
        Rec::Shots => vec![
            ("images", Type::scalar(Base::Collection(Rec::Image))),
            ("n_images", int()),
            ("n_channels", int()),
            ("energies", real(vec![sym("shots.n_channels")])),
        ],
        Rec::Image => vec![
            ("shoeboxes", Type::scalar(Base::Collection(Rec::Shoebox))),
            ("n_shoeboxes", int()),
            ("spectrum", real(vec![sym("shots.n_channels")])),
            ("rot0", real(vec![Dim::Known(3)])),
            ("cell0", real(vec![Dim::Known(6)])),
            ("fluence", real(vec![])),
            ("index", int()),
        ],
        Rec::Shoebox => vec![
            ("pixels", real(vec![sym("shoebox.n_pixels")])),
            ("n_pixels", int()),
            (
                "mask",
                Type::tensor(Base::Bool, vec![sym("shoebox.n_pixels")]),
            ),
            ("xy", real(vec![sym("shoebox.n_pixels"), Dim::Known(2)])),
            (
                "panel_xy",
                real(vec![sym("shoebox.n_pixels"), Dim::Known(2)]),
            ),
            ("hkl", Type::tensor(Base::Int, vec![Dim::Known(3)])),
            ("panel", int()),
            ("bbox", Type::tensor(Base::Int, vec![Dim::Known(6)])),
        ],
        Rec::Table(t) => {
            vec![
                ("rows", Type::scalar(Base::Collection(Rec::Row(t.clone())))),
                ("n_rows", int()),
            ]
        }
        Rec::Row(t) => {
            let cols = tables
                .iter()
                .find(|(n, _)| n == t)
                .map(|(_, c)| c.clone())
                .unwrap_or_default();
            return cols;
        }
    };
    list.into_iter().map(|(n, t)| (n.to_string(), t)).collect()
}

/// The type of one field, if the record has it.
pub fn field(rec: &Rec, name: &str, tables: &Tables) -> Option<Type> {
    fields(rec, tables)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
}

/// Methods of records: `crystal.sites("FE")` is the number of sites of an element (a size).
pub fn method(rec: &Rec, name: &str) -> Option<&'static str> {
    match (rec, name) {
        (Rec::Crystal, "sites") => {
            Some("sites(element: str) -> int, the number of atoms of an element")
        }
        _ => None,
    }
}

/// Sizes a model may fix in a data binding (`dials(..., n_channels = 100)`), by source kind.
pub fn size_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "dials" => &["n_channels", "n_images"],
        "table" => &["n_rows"],
        _ => &[],
    }
}

/// The symbolic dimension a fixed size replaces.
pub fn size_symbol(kind: &str, binding: &str, key: &str) -> String {
    match kind {
        "dials" => format!("shots.{key}"),
        _ => format!("{binding}.{key}"),
    }
}

/// The type a data binding gets from its source and arguments, or (code, problem, expected form).
pub fn source_type(
    kind: &str,
    binding: &str,
    args: &[DataArg],
    column_types: &[Type],
) -> Result<Type, (Code, String)> {
    let paths = args
        .iter()
        .filter(|a| matches!(a, DataArg::Path(..)))
        .count();
    let columns = args
        .iter()
        .filter(|a| matches!(a, DataArg::Column(..)))
        .count();
    let form = SOURCES.iter().find(|(k, _)| *k == kind).map(|(_, f)| *f);
    let Some(form) = form else {
        return Err((Code::E0501, format!("unknown data source `{kind}`")));
    };
    let ok = match kind {
        "pdb" => paths == 1 && columns == 0,
        "dials" => paths == 2 && columns == 0,
        _ => {
            paths == 1
                && columns >= 1
                && column_types.iter().all(|t| {
                    t.shape.is_empty() && matches!(t.base, Base::Real | Base::Int | Base::Bool)
                })
        }
    };
    if !ok {
        return Err((Code::E0502, format!("expected {form}")));
    }
    Ok(Type::scalar(Base::Record(match kind {
        "pdb" => Rec::Crystal,
        "dials" => Rec::Shots,
        _ => Rec::Table(binding.to_string()),
    })))
}
