//! Plates over physics records (`plate image in shots.images`, `plate shoebox in
//! image.shoeboxes`) and the fields of `pdb(...)` / `dials(...)` records.
//!
//! In: the loaded physics sources and the IR plates over their collections. Out: a
//! [`PhysicsScope`]: which plates the engine iterates (images: a top-level plate, mini-batched;
//! shoeboxes: a ragged child plate numbered over all images), and, at one plate instance, the
//! values of record fields (`image.spectrum`, `shoebox.pixels`, `shots.energies`, ...) and the
//! records handed to operators. Guarantees: these plates have no tensor axis (each instance is
//! evaluated on its own, images in parallel), so their records may differ in size (shoeboxes
//! per image, pixels per shoebox); shoebox fields come from [`DialsData::shoeboxes`] (the
//! images of the current mini-batch, read from disk on demand and cached); a field the runtime
//! does not provide, or shoeboxes that cannot be read again, is an error naming it.

use super::externs::{ExternArg, ShoeboxRef};
use super::physics_data::DialsData;
use crate::infer::model::Env;
use crate::physics::atoms::Crystal;
use crate::tape::{NodeId, Tape};
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;
use std::sync::Arc;

/// A plate over the records of a physics source.
#[derive(Debug, Clone)]
pub enum RecordPlate {
    /// `plate NAME in shots.images`.
    Images {
        /// Engine plate.
        engine: usize,
        /// The source.
        data: Arc<DialsData>,
    },
    /// `plate NAME in image.shoeboxes`.
    Shoeboxes {
        /// Engine plate (ragged, numbered over all images).
        engine: usize,
        /// Engine plate of the enclosing image plate.
        image_engine: usize,
        /// Image i owns shoeboxes `offsets[i]..offsets[i + 1]`.
        offsets: Arc<Vec<usize>>,
        /// The source.
        data: Arc<DialsData>,
    },
}

/// The physics sources and the plates over them.
#[derive(Debug, Default)]
pub struct PhysicsScope {
    /// `pdb(...)` bindings.
    pub crystals: HashMap<String, Arc<Crystal>>,
    /// `dials(...)` bindings.
    pub shots: HashMap<String, Arc<DialsData>>,
    /// Record name (the plate's name) → its plate.
    pub records: HashMap<String, RecordPlate>,
}

fn vector(t: &mut Tape, values: Vec<f64>, shape: &[usize]) -> Result<NodeId, String> {
    let a = ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|e| e.to_string())?;
    Ok(t.constant_real(a))
}

fn unknown(name: &str, field: &str, known: &str) -> String {
    format!("`{name}.{field}` is not provided by the runtime (it provides {known})")
}

impl PhysicsScope {
    /// True when `name` is a physics binding or record.
    pub fn knows(&self, name: &str) -> bool {
        self.crystals.contains_key(name)
            || self.shots.contains_key(name)
            || self.records.contains_key(name)
    }

    /// The current (image, shoebox) of a record plate at this instance.
    fn current(&self, env: &Env, plate: &RecordPlate) -> Result<(usize, Option<usize>), String> {
        let at = |p: usize| {
            env.plate_index(p)
                .ok_or_else(|| "the record is used outside its plate".to_string())
        };
        match plate {
            RecordPlate::Images { engine, .. } => Ok((at(*engine)?, None)),
            RecordPlate::Shoeboxes {
                engine,
                image_engine,
                offsets,
                ..
            } => {
                let image = at(*image_engine)?;
                let global = at(*engine)?;
                Ok((image, Some(global - offsets[image])))
            }
        }
    }

    /// The value of `name.field` at this instance, if `name` is a physics record.
    pub fn field(
        &self,
        t: &mut Tape,
        env: &Env,
        name: &str,
        field: &str,
    ) -> Option<Result<NodeId, String>> {
        if let Some(c) = self.crystals.get(name) {
            return Some(crystal_field(t, c, name, field));
        }
        if let Some(d) = self.shots.get(name) {
            return Some(shots_field(t, d, name, field));
        }
        let plate = self.records.get(name)?;
        Some(self.current(env, plate).and_then(|(image, shoebox)| {
            let data = match plate {
                RecordPlate::Images { data, .. } | RecordPlate::Shoeboxes { data, .. } => data,
            };
            match shoebox {
                None => image_field(t, data, image, name, field),
                Some(s) => shoebox_field(t, data, image, s, name, field),
            }
        }))
    }

    /// The record `name` as an operator argument, if it is a physics record.
    pub fn extern_arg(&self, env: &Env, name: &str) -> Option<Result<ExternArg, String>> {
        if let Some(c) = self.crystals.get(name) {
            return Some(Ok(ExternArg::Crystal(c.clone())));
        }
        match self.records.get(name)? {
            plate @ RecordPlate::Shoeboxes { data, .. } => {
                Some(self.current(env, plate).and_then(|(image, shoebox)| {
                    let shoeboxes = data.shoeboxes(image).map_err(|e| e.to_string())?;
                    Ok(ExternArg::Shoebox(ShoeboxRef {
                        data: data.clone(),
                        image,
                        shoebox: shoebox.unwrap_or(0),
                        shoeboxes,
                    }))
                }))
            }
            RecordPlate::Images { .. } => None,
        }
    }
}

/// One record of a collection, bound by a set `[f(s) for s in image.shoeboxes]`: an image, or
/// a shoebox of an image (its index within the image).
#[derive(Debug, Clone)]
pub struct Element {
    /// The source.
    pub data: Arc<DialsData>,
    /// The image.
    pub image: usize,
    /// The shoebox within the image (None: the image itself).
    pub shoebox: Option<usize>,
}

impl PhysicsScope {
    /// The records of `name.field` at this instance: `shots.images` (every image), or
    /// `image.shoeboxes` of the current image (`name` an image plate's record or a bound image
    /// element, looked up in `bound` first).
    pub fn collection(
        &self,
        env: &Env,
        bound: &[(String, Element)],
        name: &str,
        field: &str,
    ) -> Result<Vec<Element>, String> {
        let not = || format!("`{name}.{field}` is not a collection of physics records");
        if let Some((_, el)) = bound.iter().rev().find(|(n, _)| n == name) {
            return match (el.shoebox, field) {
                (None, "shoeboxes") => shoeboxes_of(&el.data, el.image),
                _ => Err(not()),
            };
        }
        if let Some(d) = self.shots.get(name) {
            return match field {
                "images" => Ok((0..d.images.len())
                    .map(|image| Element {
                        data: d.clone(),
                        image,
                        shoebox: None,
                    })
                    .collect()),
                _ => Err(not()),
            };
        }
        match (self.records.get(name), field) {
            (Some(plate @ RecordPlate::Images { data, .. }), "shoeboxes") => {
                let (image, _) = self.current(env, plate)?;
                shoeboxes_of(data, image)
            }
            _ => Err(not()),
        }
    }
}

fn shoeboxes_of(data: &Arc<DialsData>, image: usize) -> Result<Vec<Element>, String> {
    let n = data
        .shoeboxes(image)
        .map_err(|e| e.to_string())?
        .shoeboxes
        .len();
    Ok((0..n)
        .map(|s| Element {
            data: data.clone(),
            image,
            shoebox: Some(s),
        })
        .collect())
}

/// The value of `name.field` for a bound element.
pub fn element_field(
    t: &mut Tape,
    el: &Element,
    name: &str,
    field: &str,
) -> Result<NodeId, String> {
    match el.shoebox {
        None => image_field(t, &el.data, el.image, name, field),
        Some(s) => shoebox_field(t, &el.data, el.image, s, name, field),
    }
}

fn crystal_field(t: &mut Tape, c: &Crystal, name: &str, field: &str) -> Result<NodeId, String> {
    match field {
        "cell" => {
            let [a, b, cc] = c.cell.lengths;
            let [al, be, ga] = c.cell.angles_deg;
            vector(t, vec![a, b, cc, al, be, ga], &[6])
        }
        "n_atoms" => Ok(t.scalar(c.atoms.len() as f64)),
        _ => Err(unknown(name, field, "cell, n_atoms")),
    }
}

fn shots_field(t: &mut Tape, d: &DialsData, name: &str, field: &str) -> Result<NodeId, String> {
    match field {
        "energies" => vector(t, d.energy_ev.clone(), &[d.energy_ev.len()]),
        "n_channels" => Ok(t.scalar(d.energy_ev.len() as f64)),
        "n_images" => Ok(t.scalar(d.images.len() as f64)),
        _ => Err(unknown(name, field, "energies, n_channels, n_images")),
    }
}

fn image_field(
    t: &mut Tape,
    d: &DialsData,
    i: usize,
    name: &str,
    field: &str,
) -> Result<NodeId, String> {
    let image = &d.images[i];
    match field {
        "spectrum" => vector(t, image.spectrum.clone(), &[image.spectrum.len()]),
        // The model's rotation is a small-angle offset from the DIALS orientation.
        "rot0" => vector(t, vec![0.0; 3], &[3]),
        "cell0" => vector(t, image.crystal.unit_cell().to_vec(), &[6]),
        "fluence" => Ok(t.scalar(image.fluence_per_m2)),
        "index" => Ok(t.scalar(i as f64)),
        "n_shoeboxes" => Ok(t.scalar(image.n_shoeboxes as f64)),
        _ => Err(unknown(
            name,
            field,
            "spectrum, rot0, cell0, fluence, index, n_shoeboxes",
        )),
    }
}

fn shoebox_field(
    t: &mut Tape,
    d: &DialsData,
    i: usize,
    s: usize,
    name: &str,
    field: &str,
) -> Result<NodeId, String> {
    let image = d.shoeboxes(i).map_err(|e| e.to_string())?;
    let sb = image
        .shoeboxes
        .get(s)
        .ok_or_else(|| format!("image {i} has no shoebox {s}"))?;
    let n = sb.pixel_count();
    let range = sb.offset..sb.offset + n;
    match field {
        "pixels" => {
            let counts = image.counts[range].iter().map(|&c| f64::from(c)).collect();
            vector(t, counts, &[n])
        }
        "mask" => {
            let used = image.use_pixel[range]
                .iter()
                .map(|&u| f64::from(u8::from(u)))
                .collect();
            vector(t, used, &[n])
        }
        "n_pixels" => Ok(t.scalar(n as f64)),
        "hkl" => vector(t, sb.miller_index.map(f64::from).to_vec(), &[3]),
        "panel" => Ok(t.scalar(f64::from(sb.panel))),
        "bbox" => vector(t, sb.bbox.map(f64::from).to_vec(), &[6]),
        "xy" => {
            let xy = pixel_centres(sb.bbox).flat_map(|(x, y)| [x, y]).collect();
            vector(t, xy, &[n, 2])
        }
        "panel_xy" => {
            let panel = d.images[i]
                .panels
                .get(sb.panel as usize)
                .ok_or_else(|| format!("image {i} has no panel {} (shoebox {s})", sb.panel))?;
            vector(t, panel_xy(sb.bbox, panel.image_size), &[n, 2])
        }
        _ => Err(unknown(
            name,
            field,
            "pixels, mask, n_pixels, hkl, panel, bbox, xy, panel_xy",
        )),
    }
}

/// The centres (x, y) of a shoebox's pixels in detector pixels, in the order of its counts (z,
/// then y, then x slowest to fastest), from its bbox (x0, x1, y0, y1, z0, z1).
fn pixel_centres(bbox: [i32; 6]) -> impl Iterator<Item = (f64, f64)> {
    (bbox[4]..bbox[5]).flat_map(move |_z| {
        (bbox[2]..bbox[3]).flat_map(move |y| {
            (bbox[0]..bbox[1]).map(move |x| (f64::from(x) + 0.5, f64::from(y) + 0.5))
        })
    })
}

/// The pixel centres of a shoebox on its panel of `image_size` (fast, slow) pixels, scaled to
/// [-1, 1]: 2 (x + 0.5) / n_fast - 1 along fast, the same along slow. Independent of the
/// detector's size, so a model's detector effects (a flat field, a correction flow given the
/// position) read the same on any panel.
fn panel_xy(bbox: [i32; 6], image_size: [usize; 2]) -> Vec<f64> {
    let [n_fast, n_slow] = image_size.map(|n| n.max(1) as f64);
    pixel_centres(bbox)
        .flat_map(|(x, y)| [2.0 * x / n_fast - 1.0, 2.0 * y / n_slow - 1.0])
        .collect()
}

/// The pixel count of the current shoebox and the indices of its used pixels, or None when
/// every pixel is used (or this is not a shoebox instance).
pub fn used_pixels(env: &Env, plate: &RecordPlate) -> Result<Option<(usize, Vec<usize>)>, String> {
    let RecordPlate::Shoeboxes {
        engine,
        image_engine,
        offsets,
        data,
    } = plate
    else {
        return Ok(None);
    };
    let (Some(image), Some(global)) = (env.plate_index(*image_engine), env.plate_index(*engine))
    else {
        return Ok(None);
    };
    let img = data.shoeboxes(image).map_err(|e| e.to_string())?;
    let s = global - offsets[image];
    let sb = img
        .shoeboxes
        .get(s)
        .ok_or_else(|| format!("image {image} has no shoebox {s}"))?;
    let flags = &img.use_pixel[sb.offset..sb.offset + sb.pixel_count()];
    if flags.iter().all(|&u| u) {
        return Ok(None);
    }
    Ok(Some((
        flags.len(),
        (0..flags.len()).filter(|&k| flags[k]).collect(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_xy_scales_pixel_centres_to_the_panel() {
        // Pixels 0 and 1919 of a 1920-wide panel sit half a pixel in from its edges; rows 10-11
        // of a 1000-row panel.
        let corners = panel_xy([0, 1, 10, 12, 0, 1], [1920, 1000]);
        assert_eq!(corners.len(), 4);
        assert!((corners[0] - (1.0 / 1920.0 - 1.0)).abs() < 1e-15);
        assert!((corners[1] - (21.0 / 1000.0 - 1.0)).abs() < 1e-15);
        assert!((corners[3] - (23.0 / 1000.0 - 1.0)).abs() < 1e-15);
        let last = panel_xy([1919, 1920, 0, 1, 0, 1], [1920, 1000]);
        assert!((last[0] - (1.0 - 1.0 / 1920.0)).abs() < 1e-15);
        // Counts run fast along x: the second pixel of a 2-wide row is x + 1.
        let row: Vec<(f64, f64)> = pixel_centres([4, 6, 7, 8, 0, 1]).collect();
        assert_eq!(row, vec![(4.5, 7.5), (5.5, 7.5)]);
    }
}
