//! Space-group symmetry. In: a Hall symbol (as DIALS `.expt` files carry) or a Hermann-Mauguin
//! symbol (as PDB CRYST1 records carry). Out: a [`SpaceGroup`], the closed set of Seitz operators
//! (R, t) of all 230 groups in any setting the Hall notation describes, with translations held
//! exactly in 1/24 and reduced mod 1, identity first.
//!
//! `hall` parses Hall symbols into generators; `closure` builds the group; `table` maps
//! Hermann-Mauguin symbols and numbers to the Hall symbol of each tabulated setting.

pub mod change_of_basis;
pub mod hall;
pub mod table;

/// Translations are exact multiples of 1/`TDEN`.
pub const TDEN: i32 = 24;

/// Most operators a crystallographic space group has in a conventional cell (Fm-3m: 48 x 4).
const MAX_ORDER: usize = 192;

/// Errors of symmetry symbols.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SymmetryError {
    /// A Hall symbol that does not parse.
    #[error("Hall symbol '{symbol}': {message}")]
    Hall {
        /// The symbol.
        symbol: String,
        /// What is wrong.
        message: String,
    },
    /// A Hermann-Mauguin symbol or number not in the table.
    #[error("unknown space group '{0}'")]
    Unknown(String),
    /// Generators that do not close into a finite crystallographic group.
    #[error("Hall symbol '{0}': the generators do not form a space group of at most 192 operators")]
    NotAGroup(String),
}

/// A Seitz operator x -> R x + t/24 on fractional coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymOp {
    /// Rotation part (integer matrix acting on fractional coordinates).
    pub rot: [[i32; 3]; 3],
    /// Translation in units of 1/24, each component in 0..24.
    pub tran: [i32; 3],
}

impl SymOp {
    /// The identity.
    pub const IDENTITY: SymOp = SymOp {
        rot: [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        tran: [0, 0, 0],
    };

    /// An operator with its translation reduced mod 1.
    pub fn new(rot: [[i32; 3]; 3], tran: [i32; 3]) -> Self {
        Self {
            rot,
            tran: tran.map(|t| t.rem_euclid(TDEN)),
        }
    }

    /// self ∘ other: x -> R_s (R_o x + t_o) + t_s, reduced mod 1.
    pub fn compose(&self, other: &SymOp) -> SymOp {
        let rot = std::array::from_fn(|i| {
            std::array::from_fn(|j| (0..3).map(|k| self.rot[i][k] * other.rot[k][j]).sum())
        });
        let tran = std::array::from_fn(|i| {
            self.tran[i] + (0..3).map(|j| self.rot[i][j] * other.tran[j]).sum::<i32>()
        });
        SymOp::new(rot, tran)
    }

    /// The image of fractional coordinates `x`.
    pub fn apply(&self, x: [f64; 3]) -> [f64; 3] {
        let t = self.tran.map(|t| f64::from(t) / f64::from(TDEN));
        std::array::from_fn(|i| {
            (0..3)
                .map(|j| f64::from(self.rot[i][j]) * x[j])
                .sum::<f64>()
                + t[i]
        })
    }

    /// The operator as an `x,y,z` triplet, e.g. `-x+1/2,-y,z+1/2`.
    pub fn triplet(&self) -> String {
        let parts: Vec<String> = (0..3)
            .map(|i| row_triplet(self.rot[i], self.tran[i]))
            .collect();
        parts.join(",")
    }
}

/// One row of a triplet: `-x+y+1/2`.
fn row_triplet(row: [i32; 3], tran: i32) -> String {
    let mut s = String::new();
    for (coefficient, name) in row.iter().zip(["x", "y", "z"]) {
        match coefficient {
            0 => {}
            1 => s += &format!("{}{name}", if s.is_empty() { "" } else { "+" }),
            -1 => s += &format!("-{name}"),
            c => s += &format!("{c:+}{name}"),
        }
    }
    if tran != 0 {
        let g = gcd(tran, TDEN);
        s += &format!(
            "{}{}/{}",
            if s.is_empty() { "" } else { "+" },
            tran / g,
            TDEN / g
        );
    }
    s
}

/// Greatest common divisor of positive integers.
fn gcd(a: i32, b: i32) -> i32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A space group: its symbol(s) and its operators.
#[derive(Debug, Clone, PartialEq)]
pub struct SpaceGroup {
    /// Hall symbol.
    pub hall: String,
    /// Hermann-Mauguin symbol, when known from the table.
    pub hm: Option<String>,
    /// International Tables number, when known.
    pub number: Option<u32>,
    /// All operators mod lattice translations of the conventional cell (centring included),
    /// identity first, the rest sorted.
    pub ops: Vec<SymOp>,
}

impl SpaceGroup {
    /// The group of a Hall symbol, e.g. `P 2ac 2ab` or `-P 4a 2b (0 0 1)`.
    pub fn from_hall(symbol: &str) -> Result<Self, SymmetryError> {
        let generators = hall::generators(symbol)?;
        let ops =
            closure(&generators).ok_or_else(|| SymmetryError::NotAGroup(symbol.to_string()))?;
        let entry = table::by_hall(symbol);
        Ok(Self {
            hall: symbol.trim().to_string(),
            hm: entry.map(|e| e.hm_full()),
            number: entry.map(|e| e.number),
            ops,
        })
    }

    /// The group of a Hermann-Mauguin symbol, e.g. `P 21 21 21`, `P212121`, `R 3 :H`, `P 21`.
    pub fn from_hm(symbol: &str) -> Result<Self, SymmetryError> {
        let entry =
            table::by_hm(symbol).ok_or_else(|| SymmetryError::Unknown(symbol.to_string()))?;
        let mut group = Self::from_hall(&entry.hall)?;
        group.hm = Some(entry.hm_full());
        Ok(group)
    }

    /// The reference setting of space group `number` (1-230).
    pub fn from_number(number: u32) -> Result<Self, SymmetryError> {
        let entry =
            table::by_number(number).ok_or_else(|| SymmetryError::Unknown(number.to_string()))?;
        Self::from_hall(&entry.hall)
    }

    /// Number of operators (centring included).
    pub fn order(&self) -> usize {
        self.ops.len()
    }
}

/// The closed group generated by `generators`, identity first; None if it exceeds 192 operators
/// or leaves the integer matrices a crystallographic group has.
pub fn closure(generators: &[SymOp]) -> Option<Vec<SymOp>> {
    let mut ops = vec![SymOp::IDENTITY];
    let mut frontier: Vec<SymOp> = generators.to_vec();
    while let Some(op) = frontier.pop() {
        if ops.contains(&op) {
            continue;
        }
        // In a conventional basis every crystallographic rotation has entries in {-1, 0, 1};
        // anything larger means the generators do not form a crystallographic group.
        if ops.len() == MAX_ORDER || op.rot.iter().flatten().any(|v| v.abs() > 1) {
            return None;
        }
        ops.push(op);
        for existing in ops.clone() {
            frontier.push(existing.compose(&op));
            frontier.push(op.compose(&existing));
        }
    }
    ops[1..].sort();
    Some(ops)
}
