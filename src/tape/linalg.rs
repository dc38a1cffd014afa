//! Matrix products and dense (fully connected) layers for encoders and flows.
//!
//! `matmul` takes an (m×k) matrix and a (k×n) matrix or a length-k vector; its VJP is
//! (G Bᵀ, Aᵀ G). A dense layer is x W + b followed by an activation, recorded as a few nodes.

use super::graph::{NodeId, Tape, TapeError};
use super::op::{Op, OpError};
use ndarray::{ArrayD, ArrayView1, ArrayView2, Ix1, Ix2};

fn as2<'a>(x: &'a ArrayD<f64>, what: &str) -> Result<ArrayView2<'a, f64>, OpError> {
    x.view().into_dimensionality::<Ix2>().map_err(|_| {
        OpError::new(
            "matmul",
            format!("{what} must be 2-d, has shape {:?}", x.shape()),
        )
    })
}

fn as1(x: &ArrayD<f64>) -> Option<ArrayView1<'_, f64>> {
    x.view().into_dimensionality::<Ix1>().ok()
}

fn check_inner(k1: usize, k2: usize) -> Result<(), OpError> {
    if k1 == k2 {
        Ok(())
    } else {
        Err(OpError::new(
            "matmul",
            format!("inner sizes differ: {k1} vs {k2}"),
        ))
    }
}

/// A B for 2-d A and 2-d or 1-d B.
pub fn matmul(a: &ArrayD<f64>, b: &ArrayD<f64>) -> Result<ArrayD<f64>, OpError> {
    let a2 = as2(a, "left operand")?;
    if let Some(b1) = as1(b) {
        check_inner(a2.ncols(), b1.len())?;
        return Ok(a2.dot(&b1).into_dyn());
    }
    let b2 = as2(b, "right operand")?;
    check_inner(a2.ncols(), b2.nrows())?;
    Ok(a2.dot(&b2).into_dyn())
}

/// Gradients (G Bᵀ, Aᵀ G) of the matrix product.
pub fn matmul_vjp(
    a: &ArrayD<f64>,
    b: &ArrayD<f64>,
    g: &ArrayD<f64>,
) -> Result<(ArrayD<f64>, ArrayD<f64>), OpError> {
    let a2 = as2(a, "left operand")?;
    if let (Some(b1), Some(g1)) = (as1(b), as1(g)) {
        let ga = g1
            .view()
            .insert_axis(ndarray::Axis(1))
            .dot(&b1.view().insert_axis(ndarray::Axis(0)));
        return Ok((ga.into_dyn(), a2.t().dot(&g1).into_dyn()));
    }
    let (b2, g2) = (as2(b, "right operand")?, as2(g, "gradient")?);
    Ok((g2.dot(&b2.t()).into_dyn(), a2.t().dot(&g2).into_dyn()))
}

/// Activation applied after a dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// No activation.
    Identity,
    /// max(x, 0)
    Relu,
    /// tanh(x)
    Tanh,
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// ln(1 + e^x)
    Softplus,
}

impl Tape {
    /// Matrix product.
    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, TapeError> {
        self.apply(Op::MatMul, &[a, b])
    }

    /// Applies an activation.
    pub fn activate(&mut self, x: NodeId, act: Activation) -> Result<NodeId, TapeError> {
        match act {
            Activation::Identity => Ok(x),
            Activation::Relu => self.relu(x),
            Activation::Tanh => self.tanh(x),
            Activation::Sigmoid => self.sigmoid(x),
            Activation::Softplus => self.softplus(x),
        }
    }

    /// act(x W + b) for a batch x (n×i), weights W (i×o) and bias b (o).
    pub fn dense(
        &mut self,
        x: NodeId,
        w: NodeId,
        b: NodeId,
        act: Activation,
    ) -> Result<NodeId, TapeError> {
        let xw = self.matmul(x, w)?;
        let z = self.add(xw, b)?;
        self.activate(z, act)
    }
}
