#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Reading an image's shoeboxes again from its `.refl` (what a fit does on demand): the values
//! are those the load validated, bit for bit, for the real CuNiR indexed table (masked pixels),
//! for version-1 (i32 mask) shoeboxes, for rows of images interleaved in the table and for
//! skipped rows between used ones; a file changed or removed after the load is an error naming
//! it, never other data.

use spread::formats::dataset_dir::{DataError, Dataset, ImageData};
use spread::formats::image_index::{ImageShoeboxes, read_shoeboxes};
use spread::formats::refl::{Column, ReflectionTable, ShoeboxColumn, read_refl, write_refl};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dials")
        .join(name)
}

/// A fresh directory holding the CuNiR indexed pair as `shots.expt` / `shots.refl`.
fn data_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("image-index-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("indexed.expt"), dir.join("shots.expt")).unwrap();
    std::fs::copy(fixture("indexed.refl"), dir.join("shots.refl")).unwrap();
    dir
}

fn read_all(dir: &Path) -> Vec<ImageData> {
    let dataset = Dataset::open(dir).unwrap();
    dataset.images().map(Result::unwrap).collect()
}

/// Every image read again equals what the load produced; returns the images.
fn assert_reload_matches(dir: &Path) -> Vec<ImageData> {
    let images = read_all(dir);
    assert!(!images.is_empty());
    for image in &images {
        let again: ImageShoeboxes = read_shoeboxes(&image.location).unwrap();
        assert_eq!(again.shoeboxes, image.shoeboxes, "{}", image.identifier);
        let bits = |v: &[f32]| v.iter().map(|c| c.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&again.counts), bits(&image.counts));
        assert_eq!(again.use_pixel, image.use_pixel);
        assert_eq!(again.checksum, image.location.checksum);
        assert_eq!(image.location.shoeboxes, image.shoeboxes.len());
        assert_eq!(image.location.pixels, image.counts.len());
    }
    images
}

/// `table` with its shoebox column rebuilt by `f(row, shoebox, column)`.
fn rebuild(
    table: &mut ReflectionTable,
    f: impl Fn(usize, spread::formats::refl::ShoeboxRef<'_>, &mut ShoeboxColumn),
) {
    let old = table.shoeboxes().unwrap().clone();
    let mut boxes = ShoeboxColumn::default();
    for (row, sb) in old.iter().enumerate() {
        f(row, sb, &mut boxes);
    }
    table.insert("shoebox", Column::Shoebox(boxes)).unwrap();
}

#[test]
fn cunir_images_read_again_are_those_loaded() {
    let dir = data_dir("cunir");
    let images = assert_reload_matches(&dir);
    assert_eq!(images.len(), 5);
    // The table is sorted by id and every row is used: one run of rows per image.
    assert!(images.iter().all(|i| i.location.runs.len() == 1));
    let masked = images.iter().flat_map(|i| &i.use_pixel).filter(|u| !**u);
    assert_eq!(masked.count(), 329);
}

#[test]
fn version_one_masks_and_skipped_rows_read_again() {
    let dir = data_dir("v1");
    let mut table = read_refl(&dir.join("shots.refl")).unwrap();
    rebuild(&mut table, |row, sb, boxes| {
        let h = sb.header;
        let pixels = match row {
            // No pixels, then every pixel unusable: both skipped, splitting image 0's run.
            3 => None,
            5 => Some((vec![f32::NAN; sb.data.len()], sb.mask.to_vec())),
            // A negative count and a NaN stay in the box, flagged unused.
            7 => {
                let mut data = sb.data.to_vec();
                data[0] = -1.0;
                data[1] = f32::NAN;
                Some((data, sb.mask.to_vec()))
            }
            _ => Some((sb.data.to_vec(), sb.mask.to_vec())),
        };
        let pixels = pixels
            .as_ref()
            .map(|(d, m)| (&d[..], &m[..], sb.background));
        boxes.push(h.panel, h.bbox, pixels).unwrap();
    });
    let Some(Column::Shoebox(boxes)) = table
        .columns
        .iter_mut()
        .find(|c| c.0 == "shoebox")
        .map(|c| &mut c.1)
    else {
        panic!("no shoebox column");
    };
    boxes.set_version(1);
    write_refl(&table, &dir.join("shots.refl")).unwrap();
    assert_eq!(
        read_refl(&dir.join("shots.refl"))
            .unwrap()
            .shoeboxes()
            .unwrap()
            .headers()[0]
            .version,
        1
    );
    let images = assert_reload_matches(&dir);
    assert_eq!(images[0].shoeboxes.len(), 34 - 2);
    assert_eq!(images[0].location.runs.len(), 3);
}

#[test]
fn interleaved_rows_of_images_read_again() {
    let dir = data_dir("interleaved");
    let table = read_refl(&dir.join("shots.refl")).unwrap();
    // Deal the rows out image by image, round-robin, so no two rows of an image are neighbours.
    let n = table.nrows;
    let ids = table.column("id").and_then(Column::as_int).unwrap();
    let mut per_image: Vec<Vec<usize>> = vec![Vec::new(); 5];
    for (r, &id) in ids.iter().enumerate() {
        per_image[usize::try_from(id).unwrap()].push(r);
    }
    let order: Vec<usize> = (0..194)
        .flat_map(|t| {
            per_image
                .iter()
                .filter_map(move |rows| rows.get(t).copied())
        })
        .collect();
    assert_eq!(order.len(), n);
    let mut dealt = ReflectionTable::new(n);
    dealt.identifiers = table.identifiers.clone();
    let hkl = table
        .column("miller_index")
        .and_then(Column::as_miller_index)
        .unwrap();
    let old = table.shoeboxes().unwrap();
    let mut boxes = ShoeboxColumn::default();
    for &r in &order {
        let sb = old.get(r).unwrap();
        let pixels = (sb.header.version != 0).then_some((sb.data, sb.mask, sb.background));
        boxes.push(sb.header.panel, sb.header.bbox, pixels).unwrap();
    }
    let pick = |v: &[i32]| order.iter().map(|&r| v[r]).collect::<Vec<_>>();
    dealt.insert("id", Column::Int(pick(ids))).unwrap();
    dealt
        .insert(
            "miller_index",
            Column::MillerIndex(order.iter().map(|&r| hkl[r]).collect()),
        )
        .unwrap();
    dealt.insert("shoebox", Column::Shoebox(boxes)).unwrap();
    write_refl(&dealt, &dir.join("shots.refl")).unwrap();
    let images = assert_reload_matches(&dir);
    assert_eq!(images.iter().map(|i| i.shoeboxes.len()).sum::<usize>(), 360);
    assert!(images.iter().any(|i| i.location.runs.len() > 10));
}

#[test]
fn a_changed_or_missing_file_is_an_error_naming_it() {
    let dir = data_dir("changed");
    let images = read_all(&dir);
    let path = dir.join("shots.refl");
    let loc = &images[2].location;
    // One count changed in place (same length): the checksum differs.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = usize::try_from(loc.runs[0].shoebox_at).unwrap() + 29;
    bytes[at..at + 4].copy_from_slice(&12345.0f32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = read_shoeboxes(loc).unwrap_err();
    assert!(matches!(err, DataError::Changed { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("shots.refl") && text.contains("changed since it was loaded"),
        "{text}"
    );
    // Other images are untouched and still read.
    assert_eq!(
        read_shoeboxes(&images[0].location).unwrap().counts,
        images[0].counts
    );
    // A different length.
    bytes.push(0);
    std::fs::write(&path, &bytes).unwrap();
    let text = read_shoeboxes(&images[0].location).unwrap_err().to_string();
    assert!(
        text.contains("shots.refl") && text.contains("bytes"),
        "{text}"
    );
    // Gone.
    std::fs::remove_file(&path).unwrap();
    let err = read_shoeboxes(&images[0].location).unwrap_err();
    assert!(matches!(err, DataError::Read { .. }), "{err}");
    assert!(err.to_string().contains("shots.refl"), "{err}");
}
