//! The table of space-group settings (number, extension, Hermann-Mauguin, Hall), generated once
//! from gemmi 0.7.5 (MPL-2.0) by tests/fixtures/ref/gen_tables.py and embedded. Look-ups by Hall
//! symbol, by Hermann-Mauguin symbol (spaces optional, case-insensitive, `:1`/`:2`/`:H`/`:R`
//! extensions, short monoclinic symbols such as `P 21`, PDB's `H 3` for `R 3 :H`) and by number.
//! Without an extension the first tabulated setting wins (origin choice 1, hexagonal axes).

use std::sync::OnceLock;

/// One tabulated setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// International Tables number.
    pub number: u32,
    /// Setting extension ("1", "2", "H", "R") or empty.
    pub ext: String,
    /// Hermann-Mauguin symbol without extension.
    pub hm: String,
    /// Hall symbol.
    pub hall: String,
}

impl Entry {
    /// The HM symbol with its extension, e.g. `R 3 :H`.
    pub fn hm_full(&self) -> String {
        if self.ext.is_empty() {
            self.hm.clone()
        } else {
            format!("{} :{}", self.hm, self.ext)
        }
    }
}

/// All tabulated settings, in gemmi's order.
pub fn entries() -> &'static [Entry] {
    static TABLE: OnceLock<Vec<Entry>> = OnceLock::new();
    TABLE.get_or_init(|| parse(include_str!("spacegroups.csv")))
}

/// Rows `number;ext;hm;hall` of the embedded table (the file is generated, so its shape is fixed;
/// `table_is_complete` in the tests checks that no row is lost).
fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split(';');
            let number = fields.next()?.parse().ok()?;
            let ext = fields.next()?.to_string();
            let hm = fields.next()?.to_string();
            let hall = fields.next()?.to_string();
            Some(Entry {
                number,
                ext,
                hm,
                hall,
            })
        })
        .collect()
}

/// Upper-case with all white space removed.
fn squash(symbol: &str) -> String {
    symbol
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

/// The setting whose Hall symbol is `hall` (runs of white space and case ignored; spaces
/// themselves separate matrix symbols, `P 32` is not `P 3 2`).
pub fn by_hall(hall: &str) -> Option<&'static Entry> {
    let normalize = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_uppercase()
    };
    let key = normalize(hall);
    entries().iter().find(|e| normalize(&e.hall) == key)
}

/// The reference (first) setting of space group `number`.
pub fn by_number(number: u32) -> Option<&'static Entry> {
    entries().iter().find(|e| e.number == number)
}

/// The setting a Hermann-Mauguin symbol names.
pub fn by_hm(symbol: &str) -> Option<&'static Entry> {
    let (name, ext) = match symbol.split_once(':') {
        Some((name, ext)) => (name, squash(ext)),
        None => (symbol, String::new()),
    };
    let name = squash(name);
    let find = |name: &str| {
        entries()
            .iter()
            .find(|e| squash(&e.hm) == name && (ext.is_empty() || squash(&e.ext) == ext))
    };
    find(&name)
        .or_else(|| {
            name.strip_prefix('H')
                .and_then(|rest| find(&format!("R{rest}")))
        })
        .or_else(|| monoclinic_short(&name).and_then(|full| find(&full)))
}

/// `P21` -> `P1211`: a short monoclinic symbol in the b-unique setting.
fn monoclinic_short(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let lattice = chars.next()?;
    let rest = chars.as_str();
    (!rest.is_empty() && rest.len() <= 4 && !rest.contains(' '))
        .then(|| format!("{lattice}1{rest}1"))
}
