//! The forward model of one simulated still, evaluated through the same tape nodes a fit uses.
//!
//! In: the structure-factor node's static data (crystal, Miller indices, channel energies), the
//! metal site's f'/f'' per channel, a `SpotModel` template for the image (panel, beam, spectrum,
//! orientation, shape), the image's latents (scale, small rotation, mosaic tilts, domain size,
//! background plane) and the shoebox regions. Out: expected photons per pixel of every shoebox,
//! concatenated, and the spot part alone. Guarantees: the values are those of
//! `StructureFactorOp` → `BraggSpotOp` + `PlaneBackgroundOp` on a tape, the nodes
//! `spreadc run` records for the same model.

use super::SimulateError;
use crate::ops::{BraggSpotOp, MosaicInput, PlaneBackgroundOp, StructureFactorOp};
use crate::physics::geometry::Vec3;
use crate::physics::spot::{Region, SpotModel};
use crate::tape::{NodeId, Tape, Value};
use ndarray::{ArrayD, IxDyn};
use std::sync::Arc;

/// The latents of one image that the spot model takes as inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageLatents {
    /// Per-image scale exp(log_scale).
    pub scale: f64,
    /// Small-angle misorientation θ (radians) relative to the written orientation.
    pub rotation: Vec3,
    /// Mosaic domain tilt vectors (radians).
    pub tilts: Vec<Vec3>,
    /// Domain size in unit cells along a, b, c.
    pub n_cells: Vec3,
    /// Plane background coefficients (offset, fast slope, slow slope), photons.
    pub background: [f64; 3],
}

/// Expected photons of one image's shoeboxes: (spot + background, spot alone).
pub fn expected_counts(
    structure: StructureFactorOp,
    fp_fdp: (&[f64], &[f64]),
    template: &SpotModel,
    latents: &ImageLatents,
    regions: &[Region],
) -> Result<(Vec<f64>, Vec<f64>), SimulateError> {
    let fail = |e: String| SimulateError::Model(e);
    let mut t = Tape::new();
    let row = |t: &mut Tape, v: &[f64]| -> Result<NodeId, SimulateError> {
        let a = ArrayD::from_shape_vec(IxDyn(&[1, v.len()]), v.to_vec())
            .map_err(|e| fail(e.to_string()))?;
        Ok(t.constant_real(a))
    };
    let fp = row(&mut t, fp_fdp.0)?;
    let fdp = row(&mut t, fp_fdp.1)?;
    let fsq = t
        .fused(Arc::new(structure), &[fp, fdp])
        .map_err(|e| fail(e.to_string()))?;
    let spot_op = BraggSpotOp::new(template.clone(), regions.to_vec(), MosaicInput::Tilts)?;
    let vec_node = |t: &mut Tape, v: Vec<f64>, shape: &[usize]| -> Result<NodeId, SimulateError> {
        let a = ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| fail(e.to_string()))?;
        Ok(t.constant_real(a))
    };
    let scale = t.scalar(latents.scale);
    let rotation = vec_node(&mut t, latents.rotation.to_vec(), &[3])?;
    let n_cells = vec_node(&mut t, latents.n_cells.to_vec(), &[3])?;
    let flat: Vec<f64> = latents.tilts.iter().flatten().copied().collect();
    let tilts = vec_node(&mut t, flat, &[latents.tilts.len(), 3])?;
    let spot = t
        .fused(Arc::new(spot_op), &[fsq, scale, rotation, n_cells, tilts])
        .map_err(|e| fail(e.to_string()))?;
    let coeffs: Vec<f64> = regions.iter().flat_map(|_| latents.background).collect();
    let coeffs = vec_node(&mut t, coeffs, &[regions.len(), 3])?;
    let background = t
        .fused(
            Arc::new(PlaneBackgroundOp::new(regions.to_vec())?),
            &[coeffs],
        )
        .map_err(|e| fail(e.to_string()))?;
    let total = t.add(spot, background).map_err(|e| fail(e.to_string()))?;
    let values = |id: NodeId| match t.value(id) {
        Value::Real(a) => Ok(a.iter().copied().collect::<Vec<f64>>()),
        Value::Complex(_) => Err(fail("expected photons came out complex".into())),
    };
    Ok((values(total)?, values(spot)?))
}
