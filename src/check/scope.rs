//! What a name can stand for, and the entries of a module's scope.

use super::types::{Ad, Type};
use super::value::Value;
use crate::diagnostics::Span;

/// The kind of a model-level value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// `latent`
    Latent,
    /// `param`
    Param,
    /// `let`
    Let,
}

/// What a name is bound to.
#[derive(Debug, Clone, PartialEq)]
pub enum Binding {
    /// A constant with its value.
    Const(Value, Type),
    /// A variant with its choices and the selected one.
    Variant(Vec<String>, String),
    /// A data binding.
    Data(Type),
    /// A latent, param or let of the model, with the plates it varies over.
    Model(ModelKind, Type, Ad, Vec<usize>),
    /// The record variable of a data plate (plate id, record type).
    PlateVar(usize, Type),
    /// A sized or singleton plate (plate id).
    Plate(usize),
    /// A function parameter or local let.
    Local(Type, Ad),
    /// A user function (index into the program's functions).
    Fn(usize),
    /// A physics operator (index into the program's externs).
    Extern(usize),
    /// A flow declaration (index into the program's nets).
    Flow(usize),
    /// An encoder declaration (index into the program's nets).
    Encoder(usize),
}

/// A name in a module scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Binding.
    pub binding: Binding,
    /// Declaration (or import) site.
    pub span: Span,
}

impl Entry {
    /// Whether another module may import this entry.
    pub fn exportable(&self) -> bool {
        matches!(
            self.binding,
            Binding::Const(..) | Binding::Variant(..) | Binding::Fn(_) | Binding::Extern(_) | Binding::Flow(_) | Binding::Encoder(_)
        )
    }
}
