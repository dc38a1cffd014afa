#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Mutated real `.refl` bytes never panic the reader: every outcome is a table or a typed error.
//! CI runs proptest's default number of cases; `PROPTEST_CASES=100000 cargo test --release
//! --test formats_fuzz` is the full run (see the report in the data issue).

use proptest::prelude::*;
use spread::formats::refl::{parse_refl, refl_to_bytes};
use std::path::Path;

fn real_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dials/strong_1.refl");
        std::fs::read(path).unwrap()
    })
}

/// One edit of the byte string: overwrite, insert, delete a run, or truncate.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    // Half the positions land in the first 700 bytes, where the header and column names live.
    let pos = prop_oneof![0usize..700, any::<usize>()];
    prop_oneof![
        4 => (pos.clone(), any::<u8>()).prop_map(|(p, b)| Edit::Set(p, b)),
        1 => (pos.clone(), prop::collection::vec(any::<u8>(), 1..9)).prop_map(|(p, v)| Edit::Insert(p, v)),
        1 => (pos.clone(), 1usize..64).prop_map(|(p, n)| Edit::Delete(p, n)),
        1 => pos.prop_map(Edit::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, e: &Edit) {
    let at = |p: usize, len: usize| if len == 0 { 0 } else { p % len };
    match e {
        Edit::Set(p, b) => {
            if !bytes.is_empty() {
                let i = at(*p, bytes.len());
                bytes[i] = *b;
            }
        }
        Edit::Insert(p, v) => {
            let i = at(*p, bytes.len() + 1);
            bytes.splice(i..i, v.iter().copied());
        }
        Edit::Delete(p, n) => {
            let i = at(*p, bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Edit::Truncate(p) => bytes.truncate(at(*p, bytes.len() + 1)),
    }
}

proptest! {
    #[test]
    fn mutated_refl_bytes_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        let mut bytes = real_bytes().to_vec();
        edits.iter().for_each(|e| apply(&mut bytes, e));
        if let Ok(table) = parse_refl(&bytes, Path::new("mutated.refl")) {
            // Whatever parses must survive its own round trip.
            let again = parse_refl(&refl_to_bytes(&table), Path::new("again.refl"));
            prop_assert!(again.is_ok());
        }
    }
}
