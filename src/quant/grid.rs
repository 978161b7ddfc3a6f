//! How a weight tensor is cut into quantization groups.
//!
//! A tensor is seen as a row-major matrix `rows × cols` (its flat layout).
//! Element `(r, c)` belongs to group `(r / block_rows, c / block_cols)`;
//! groups are numbered row-major. Every shape the encoder emits is also an
//! ONNX `DequantizeLinear` layout (per-tensor, per-axis, or blocked), and
//! [`Grid::from_dequantize`] is the exact inverse of [`Grid::dequantize_layout`].

use crate::error::{Error, Result};

/// Group structure of one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    /// Rows of the flat matrix view.
    pub rows: usize,
    /// Columns of the flat matrix view (contiguous in memory).
    pub cols: usize,
    /// Rows per group.
    pub block_rows: usize,
    /// Columns per group.
    pub block_cols: usize,
}

/// A `DequantizeLinear` description: scale tensor shape plus attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DequantizeLayout {
    /// Shape of the scale (and zero-point) tensor.
    pub scale_dims: Vec<usize>,
    /// `axis` attribute (`None` for per-tensor).
    pub axis: Option<usize>,
    /// `block_size` attribute (0 = not blocked).
    pub block_size: usize,
}

/// One contiguous stretch of a tensor with its group numbers.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Flat index of the first element.
    pub start: usize,
    /// Number of elements.
    pub len: usize,
    /// Group of the first element.
    pub group: usize,
    /// True if each element has its own consecutive group (`block_cols == 1`).
    pub per_element: bool,
}

impl Grid {
    /// Chooses the grid for a tensor of `dims` quantized along `channel_axis`,
    /// optionally in blocks of `block` along the reduction direction.
    /// Falls back to coarser grids where ONNX could not express the request.
    pub fn choose(dims: &[usize], channel_axis: usize, block: usize) -> Grid {
        let n: usize = dims.iter().product();
        let outer: usize = dims[..channel_axis].iter().product();
        let d = dims[channel_axis];
        let inner: usize = dims[channel_axis + 1..].iter().product();
        let blocked = |len: usize| block > 0 && block < len;
        if d == n {
            // 1-D (or all other axes are 1): per-tensor or blocked.
            let bc = if blocked(n) { block } else { n };
            return Grid { rows: 1, cols: n, block_rows: 1, block_cols: bc };
        }
        if outer == 1 {
            // channels are rows; blocks along axis+1 only when it is the only non-1 axis after.
            let next = dims.get(channel_axis + 1).copied().unwrap_or(1);
            let bc = if blocked(inner) && next == inner { block } else { inner };
            return Grid { rows: d, cols: inner, block_rows: 1, block_cols: bc };
        }
        if inner == 1 {
            // channels are columns (e.g. MatMul weights [K, N]); blocks along rows.
            let prev = dims[channel_axis - 1];
            let br = if blocked(outer) && prev == outer { block } else { outer };
            return Grid { rows: outer, cols: d, block_rows: br, block_cols: 1 };
        }
        // Channel axis in the middle: no per-axis layout fits, use per-tensor.
        Grid { rows: 1, cols: n, block_rows: 1, block_cols: n }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// True for an empty tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Group rows × group columns.
    pub fn group_dims(&self) -> (usize, usize) {
        (self.rows.div_ceil(self.block_rows), self.cols.div_ceil(self.block_cols))
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        let (a, b) = self.group_dims();
        a * b
    }

    /// Group of flat element `i`.
    pub fn group_of(&self, i: usize) -> usize {
        let (r, c) = (i / self.cols, i % self.cols);
        (r / self.block_rows) * self.group_dims().1 + c / self.block_cols
    }

    /// Flat indices of group `g`'s elements, row by row.
    pub fn members(&self, g: usize) -> impl Iterator<Item = usize> + '_ {
        let gc = self.group_dims().1;
        let (r0, c0) = ((g / gc) * self.block_rows, (g % gc) * self.block_cols);
        let (r1, c1) = ((r0 + self.block_rows).min(self.rows), (c0 + self.block_cols).min(self.cols));
        (r0..r1).flat_map(move |r| (c0..c1).map(move |c| r * self.cols + c))
    }

    /// The tensor as contiguous runs: per row, one run per column block,
    /// or the whole row when every column is its own group.
    pub fn runs(&self) -> impl Iterator<Item = Run> + '_ {
        let gc = self.group_dims().1;
        (0..self.rows).flat_map(move |r| {
            let row_group = (r / self.block_rows) * gc;
            let per_element = self.block_cols == 1 && self.cols > 1;
            let nblocks = if per_element { 1 } else { gc };
            (0..nblocks).map(move |j| {
                let c0 = j * self.block_cols;
                let len = if per_element { self.cols } else { self.block_cols.min(self.cols - c0) };
                Run { start: r * self.cols + c0, len, group: row_group + j, per_element }
            })
        })
    }

    /// `(flat index, group)` of every element in flat order, walking the
    /// runs (no division per element).
    pub fn element_groups(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.element_groups_from(0)
    }

    /// [`Self::element_groups`] starting at flat index `start` (whole runs
    /// before it are skipped without visiting their elements).
    pub fn element_groups_from(&self, start: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.runs().filter(move |run| run.start + run.len > start).flat_map(move |run| {
            (run.start.max(start) - run.start..run.len)
                .map(move |k| (run.start + k, if run.per_element { run.group + k } else { run.group }))
        })
    }

    /// The ONNX `DequantizeLinear` layout for a tensor of `dims`.
    pub fn dequantize_layout(&self, dims: &[usize]) -> DequantizeLayout {
        let n: usize = dims.iter().product();
        if self.groups() == 1 {
            return DequantizeLayout { scale_dims: vec![], axis: None, block_size: 0 };
        }
        if self.rows == 1 {
            // blocked along the single non-1 axis
            let axis = dims.iter().position(|&d| d == n).unwrap_or(0);
            let mut s = dims.to_vec();
            s[axis] = n.div_ceil(self.block_cols);
            return DequantizeLayout { scale_dims: s, axis: Some(axis), block_size: self.block_cols };
        }
        if self.block_rows == 1 {
            let axis = leading_axis(dims, self.rows);
            if self.block_cols == self.cols {
                return DequantizeLayout { scale_dims: vec![self.rows], axis: Some(axis), block_size: 0 };
            }
            let mut s = dims.to_vec();
            s[axis + 1] = self.cols.div_ceil(self.block_cols);
            return DequantizeLayout { scale_dims: s, axis: Some(axis + 1), block_size: self.block_cols };
        }
        let axis = trailing_axis(dims, self.cols);
        if self.block_rows == self.rows {
            return DequantizeLayout { scale_dims: vec![self.cols], axis: Some(axis), block_size: 0 };
        }
        let mut s = dims.to_vec();
        s[axis - 1] = self.rows.div_ceil(self.block_rows);
        DequantizeLayout { scale_dims: s, axis: Some(axis - 1), block_size: self.block_rows }
    }

    /// Rebuilds the grid from a `DequantizeLinear` node (inverse of
    /// [`Grid::dequantize_layout`]); other layouts are rejected.
    pub fn from_dequantize(dims: &[usize], layout: &DequantizeLayout) -> Result<Grid> {
        let n: usize = dims.iter().product();
        let bad = || Error::Unsupported(format!("DequantizeLinear layout {layout:?} for shape {dims:?} is not one p2u produces"));
        let scale_n: usize = layout.scale_dims.iter().product();
        if scale_n == 1 {
            return Ok(Grid { rows: 1, cols: n, block_rows: 1, block_cols: n.max(1) });
        }
        let axis = layout.axis.ok_or_else(bad)?;
        if axis >= dims.len() {
            return Err(bad());
        }
        let candidates = (0..dims.len()).flat_map(|ch| {
            let mut v = vec![Grid::choose(dims, ch, 0)];
            if layout.block_size > 0 {
                v.push(Grid::choose(dims, ch, layout.block_size));
            }
            v
        });
        for g in candidates {
            if g.dequantize_layout(dims) == *layout {
                return Ok(g);
            }
        }
        Err(bad())
    }
}

fn leading_axis(dims: &[usize], rows: usize) -> usize {
    dims.iter().position(|&d| d == rows).unwrap_or(0)
}

fn trailing_axis(dims: &[usize], cols: usize) -> usize {
    dims.iter().rposition(|&d| d == cols).unwrap_or(dims.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_round_trip() {
        let cases: &[(&[usize], usize, usize)] = &[
            (&[32, 16, 3, 3], 0, 0),
            (&[32, 1, 3, 3], 0, 0),
            (&[64, 128, 1, 1], 0, 32),
            (&[64, 128], 0, 32),
            (&[128, 10], 1, 0),
            (&[128, 10], 1, 32),
            (&[1, 64, 1, 1], 1, 0),
            (&[5000], 0, 0),
            (&[5000], 0, 128),
            (&[64, 128, 3, 3], 0, 32),
        ];
        for &(dims, axis, block) in cases {
            let g = Grid::choose(dims, axis, block);
            let l = g.dequantize_layout(dims);
            assert_eq!(Grid::from_dequantize(dims, &l).unwrap(), g, "{dims:?} axis {axis} block {block}");
            let covered: usize = g.runs().map(|r| r.len).sum();
            assert_eq!(covered, g.len());
            let sn: usize = l.scale_dims.iter().product();
            assert_eq!(sn.max(1), g.groups());
            let mut next = 0;
            for (i, group) in g.element_groups() {
                assert_eq!((i, group), (next, g.group_of(i)));
                next += 1;
            }
            assert_eq!(next, g.len());
        }
    }

    #[test]
    fn blocked_conv_with_spatial_kernel_falls_back_to_per_channel() {
        let g = Grid::choose(&[64, 128, 3, 3], 0, 32);
        assert_eq!(g.block_cols, 128 * 9);
    }
}
