#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `--data DIR` layout: pairing, spectra, validation errors, and counts of what was used
//! and skipped by reason, on the real CuNiR indexed files (per-id row counts 34/36/194/34/62,
//! 1785 pixels of which 329 lack the VALID mask bit, from the Python msgpack reading).

use spread::formats::dataset_dir::{DataError, Dataset, ImageData, write_dataset};
use spread::formats::expt::read_expt;
use spread::formats::refl::{Column, ShoeboxColumn, mask_bits, read_refl, write_refl};
use spread::formats::spectrum::Spectrum;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dials")
        .join(name)
}

/// A fresh directory holding the CuNiR indexed pair as `shots.expt` / `shots.refl`.
fn data_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spread-data-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("indexed.expt"), dir.join("shots.expt")).unwrap();
    std::fs::copy(fixture("indexed.refl"), dir.join("shots.refl")).unwrap();
    dir
}

fn read_all(dir: &Path) -> (Vec<ImageData>, spread::formats::dataset_dir::DataReport) {
    let dataset = Dataset::open(dir).unwrap();
    let mut stream = dataset.images();
    let images: Vec<ImageData> = stream.by_ref().map(Result::unwrap).collect();
    (images, stream.report().clone())
}

#[test]
fn cunir_directory_yields_five_images_with_every_shoebox() {
    let dir = data_dir("plain");
    let (images, report) = read_all(&dir);
    assert_eq!(images.len(), 5);
    let per_image: Vec<usize> = images.iter().map(|i| i.shoeboxes.len()).collect();
    assert_eq!(per_image, [34, 36, 194, 34, 62]);
    assert_eq!(report.images.used, 5);
    assert_eq!(report.shoeboxes.used, 360);
    assert_eq!(report.shoeboxes.total_skipped(), 0);
    assert_eq!(report.pixels.used, 1785 - 329);
    assert_eq!(report.pixels.skipped["masked (mask lacks VALID)"], 329);
    assert_eq!(report.monochromatic_fallback, 5);
    let first = &images[0];
    assert_eq!(first.identifier, "2c2f20d9-7012-4f15-8065-c7f1dadeacec");
    assert_eq!(first.spectrum.wavelength_a, vec![1.37611]);
    assert_eq!(first.shoeboxes[0].miller_index, [-26, 2, 20]);
    assert_eq!(&first.counts[..3], &[49.0, 41.0, 66.0]);
    // Masked pixels stay in place (dense bbox) but are flagged unused with a zero count.
    let unused = images
        .iter()
        .flat_map(|i| &i.use_pixel)
        .filter(|u| !**u)
        .count();
    assert_eq!(unused, 329);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn spectra_come_from_dataset_toml_or_the_spectra_folder() {
    let dir = data_dir("spectra");
    std::fs::create_dir_all(dir.join("spectra")).unwrap();
    std::fs::write(
        dir.join("spectra/c4fc52a7-327f-4475-93d1-187bb796f907.lam"),
        "1.37,1\n1.38,3\n",
    )
    .unwrap();
    std::fs::write(dir.join("all.lam"), "# wavelengths, weights\n1.376,2\n").unwrap();
    std::fs::write(
        dir.join("dataset.toml"),
        "spectrum = \"all.lam\"\n[[files]]\nexperiments = \"shots.expt\"\nreflections = \"shots.refl\"\n\
         [spectra]\nno-such-shot = \"all.lam\"\n",
    )
    .unwrap();
    let (images, report) = read_all(&dir);
    assert_eq!(images[1].spectrum.weight, vec![1.0, 3.0]);
    assert!((images[1].spectrum.mean_wavelength_a() - 1.3775).abs() < 1e-12);
    assert_eq!(images[0].spectrum.wavelength_a, vec![1.376]);
    assert_eq!(report.monochromatic_fallback, 0);
    assert_eq!(report.unused_spectra, vec!["no-such-shot"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_reflection_file_is_named() {
    let dir = data_dir("missing");
    std::fs::remove_file(dir.join("shots.refl")).unwrap();
    let err = Dataset::open(&dir).unwrap_err();
    assert!(matches!(
        err,
        DataError::MissingFile {
            role: "reflections",
            ..
        }
    ));
    assert!(
        err.to_string()
            .ends_with("shots.refl: missing reflections file")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn experiment_without_crystal_is_skipped_and_counted() {
    let dir = data_dir("nocrystal");
    let text = std::fs::read_to_string(dir.join("shots.expt")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["experiment"][2]["crystal"] = serde_json::Value::Null;
    std::fs::write(dir.join("shots.expt"), json.to_string()).unwrap();
    let (images, report) = read_all(&dir);
    assert_eq!(images.len(), 4);
    assert_eq!(report.images.skipped["no crystal or beam model"], 1);
    assert_eq!(
        report.shoeboxes.skipped["image has no crystal or beam model"],
        194
    );
    assert_eq!(report.shoeboxes.used, 360 - 194);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn empty_nan_negative_and_overloaded_pixels_are_counted_not_used() {
    let dir = data_dir("badpixels");
    let mut table = read_refl(&dir.join("shots.refl")).unwrap();
    let old = table.shoeboxes().unwrap().clone();
    let mut boxes = ShoeboxColumn::default();
    for (row, sb) in old.iter().enumerate() {
        let h = sb.header;
        match row {
            // Row 0 (3 valid pixels): drop its pixels entirely.
            0 => boxes.push(h.panel, h.bbox, None).unwrap(),
            // Row 1 (2 valid pixels, counts 34, 31): one NaN, one negative.
            1 => boxes
                .push(
                    h.panel,
                    h.bbox,
                    Some((&[f32::NAN, -2.0], sb.mask, sb.background)),
                )
                .unwrap(),
            // Row 2: its first valid pixel over the panel's trusted range (max 59399, an
            // overload), its second at the maximum (inclusive, as in dxtbx: still used).
            2 => {
                let mut data = sb.data.to_vec();
                let mut valid = (0..data.len()).filter(|&k| sb.mask[k] & mask_bits::VALID != 0);
                data[valid.next().unwrap()] = 59400.0;
                data[valid.next().unwrap()] = 59399.0;
                boxes
                    .push(h.panel, h.bbox, Some((&data, sb.mask, sb.background)))
                    .unwrap()
            }
            _ => boxes
                .push(h.panel, h.bbox, Some((sb.data, sb.mask, sb.background)))
                .unwrap(),
        }
    }
    table.insert("shoebox", Column::Shoebox(boxes)).unwrap();
    write_refl(&table, &dir.join("shots.refl")).unwrap();
    let (_, report) = read_all(&dir);
    assert_eq!(report.shoeboxes.skipped["no pixels"], 1);
    assert_eq!(
        report.shoeboxes.skipped["every pixel masked, NaN, negative or untrusted"],
        1
    );
    assert_eq!(
        report.pixels.skipped["outside the panel's trusted_range (an overload)"],
        1
    );
    assert_eq!(report.shoeboxes.used, 358);
    assert_eq!(
        report.pixels.skipped["in a shoebox with no usable pixel"],
        2
    );
    assert_eq!(report.pixels.used, 1785 - 329 - 3 - 2 - 1);
    insta::assert_snapshot!("counts_printed_by_every_run", report.to_string());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reflection_ids_naming_no_experiment_are_an_error() {
    let dir = data_dir("badid");
    let mut table = read_refl(&dir.join("shots.refl")).unwrap();
    table.identifiers.remove(&4);
    write_refl(&table, &dir.join("shots.refl")).unwrap();
    let dataset = Dataset::open(&dir).unwrap();
    let err = dataset.images().find_map(Result::err).unwrap();
    assert!(matches!(err, DataError::UnknownId { id: 4, .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn written_datasets_read_back_with_their_spectra() {
    let dir = std::env::temp_dir().join(format!("spread-data-written-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let list = read_expt(&fixture("indexed.expt")).unwrap();
    let table = read_refl(&fixture("indexed.refl")).unwrap();
    let spectrum = Spectrum {
        wavelength_a: vec![1.7412, 1.74125, 1.7413],
        weight: vec![0.25, 1.0 / 3.0, 1e-300],
    };
    let spectra = vec![(list.experiments[3].identifier.clone(), spectrum.clone())];
    write_dataset(&dir, "sim", &list, &table, &spectra).unwrap();
    let (images, report) = read_all(&dir);
    assert_eq!(images.len(), 5);
    // The .lam text round-trips every f64 exactly.
    assert_eq!(images[3].spectrum, spectrum);
    assert_eq!(report.monochromatic_fallback, 4);
    assert_eq!(read_refl(&dir.join("sim.refl")).unwrap(), table);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lam_spectrum_reads_wavelengths_as_energies_and_names_bad_lines() {
    use spread::formats::spectrum::parse_spectrum;
    let path = Path::new("s.lam");
    let s = parse_spectrum("wavelength,weight\n1.7418,2\n1.7420,1.5\n", path).unwrap();
    let energies = s.energy_ev();
    let expected = [12398.4198 / 1.7418, 12398.4198 / 1.7420];
    for (e, x) in energies.iter().zip(expected) {
        assert!((e - x).abs() < 1e-9, "{e} vs {x}");
    }
    let err = parse_spectrum("wavelength,weight\n1.74,0.5\n1.75,-1\n", path).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("s.lam") && message.contains('3'),
        "{message}"
    );
}
