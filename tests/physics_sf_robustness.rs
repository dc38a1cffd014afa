//! Arbitrary text into the symbol parsers and table readers: an error or a value, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use spread::physics::miller;
use spread::physics::scattering_tables::henke::HenkeTable;
use spread::physics::scattering_tables::{sasaki, sherrell, wk1995};
use spread::physics::symmetry::SpaceGroup;

proptest! {
    #[test]
    fn hall_symbols_never_panic(symbol in r"-?[PABCIRSTFQ]( -?[12346][xyz'\x22*]?[1-5]?[abcnuvwd]{0,3}){0,4}( \([0-9 -]{0,8}\))?") {
        if let Ok(group) = SpaceGroup::from_hall(&symbol) {
            prop_assert!(group.order() <= 192);
            for a in &group.ops {
                for b in &group.ops {
                    prop_assert!(group.ops.contains(&a.compose(b)), "not closed: {}", symbol);
                }
            }
        }
    }

    #[test]
    fn change_of_basis_never_panics(symbol in r"-?[PCIF] -?[246][xyz]?[abcn]? \([xyz0-9+\-*/,. ]{0,20}\)") {
        if let Ok(group) = SpaceGroup::from_hall(&symbol) {
            for a in &group.ops {
                for b in &group.ops {
                    prop_assert!(group.ops.contains(&a.compose(b)), "not closed: {}", symbol);
                }
            }
        }
    }

    #[test]
    fn hm_symbols_never_panic(symbol in r"[ -~]{0,16}") {
        let _ = SpaceGroup::from_hm(&symbol);
    }

    #[test]
    fn table_readers_never_panic(text in r"[ -~\n\t]{0,200}") {
        let _ = HenkeTable::parse("t.nff", &text);
        let _ = sasaki::parse("t.dat", &text);
        let _ = sherrell::parse("t.dat", &text);
        let _ = spread::formats::spectrum::parse_spectrum(&text, std::path::Path::new("t.lam"));
        let _ = wk1995::parse("t.csv", &text);
        let _ = miller::parse_hkl("t.hkl", &text);
    }
}
