//! Synthetic work for measuring the dequantize-and-add kernel, so that the
//! native benchmark (`p2u-bench`) and the browser one (`KernelBench`) time
//! exactly the same data: `n` weights in rows of 1024 with one scale and
//! zero point per row, and a fixed pattern of `bits`-bit codes.

use p2u::error::{Error, Result};
use p2u::kernels::{pack, Path, MAX_BITS};
use p2u::quant::{apply_codes_with, Grid};

/// Weights, codes and scales ready for repeated kernel passes.
pub struct Workload {
    grid: Grid,
    bits: u8,
    packed: Vec<u8>,
    scales: Vec<f32>,
    zeros: Vec<i32>,
    weights: Vec<f32>,
}

impl Workload {
    /// `n` (a positive multiple of 1024) weights with `bits`-bit codes (1..=8).
    pub fn new(bits: u8, n: usize) -> Result<Self> {
        if !(1..=MAX_BITS).contains(&bits) || n == 0 || !n.is_multiple_of(1024) {
            return Err(Error::Invalid(format!("kernel workload needs 1..=8 bits and a multiple of 1024 weights, got {bits}, {n}")));
        }
        let grid = Grid::choose(&[n / 1024, 1024], 0, 0);
        let codes: Vec<u8> = (0..n).map(|i| ((i * 7 + i / 13) % (1 << bits)) as u8).collect();
        Ok(Workload {
            grid,
            bits,
            packed: pack(&codes, bits),
            scales: vec![1e-3; grid.groups()],
            zeros: vec![1 << (bits - 1); grid.groups()],
            weights: vec![0.5; n],
        })
    }

    /// One dequantize-and-add pass over all weights with `path`.
    pub fn run(&mut self, path: Path) {
        apply_codes_with(path, &mut self.weights, &self.grid, self.bits, &self.packed, &self.scales, &self.zeros);
    }

    /// Bytes of f32 weights one pass updates (for GB/s figures).
    pub fn bytes(&self) -> usize {
        self.weights.len() * 4
    }
}
