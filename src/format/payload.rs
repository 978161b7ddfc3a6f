//! Chunk payload layouts (see `docs/FORMAT.md`), written by the encoder and
//! read by the runtime through these functions only.
//!
//! * refine: `groups × f32` scales · packed codes · `u32` escape count ·
//!   `(u32 index, i32 steps)` escapes, strictly increasing indices;
//! * exact: `groups × f32` bounds · coded values.

use crate::error::{Error, Result};
use crate::kernels::packed_len;
use crate::quant::Grid;

/// Largest escape step count accepted (keeps `f32(steps)` meaningful).
pub const MAX_ESCAPE_STEPS: u32 = 1 << 30;

/// A parsed refinement payload.
pub struct Refine<'a> {
    /// One scale per group.
    pub scales: Vec<f32>,
    /// Bit-packed codes.
    pub codes: &'a [u8],
    /// `(index, steps)` pairs applied after the codes.
    pub escapes: Vec<(u32, i32)>,
}

/// A parsed exact-stage payload.
pub struct Exact<'a> {
    /// One bound per group.
    pub bounds: Vec<f32>,
    /// The coded values.
    pub coded: &'a [u8],
}

fn put_f32s(out: &mut Vec<u8>, values: &[f32]) {
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
}

/// Reads the per-group f32 parameters; each must be finite and ≥ 0.
fn group_params<'a>(payload: &'a [u8], grid: &Grid, what: &str) -> Result<(Vec<f32>, &'a [u8])> {
    let n = grid.groups() * 4;
    let head = payload.get(..n).ok_or_else(|| Error::Corrupt(format!("payload shorter than its {what}")))?;
    let params: Vec<f32> = head.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect();
    if let Some(p) = params.iter().find(|p| !(p.is_finite() && **p >= 0.0)) {
        return Err(Error::Corrupt(format!("{what} {p} is negative or not finite")));
    }
    Ok((params, &payload[n..]))
}

/// Writes a refinement payload.
pub fn write_refine(scales: &[f32], packed: &[u8], escapes: &[(u32, i32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(scales.len() * 4 + packed.len() + 4 + escapes.len() * 8);
    put_f32s(&mut out, scales);
    out.extend_from_slice(packed);
    out.extend_from_slice(&(escapes.len() as u32).to_le_bytes());
    for (i, d) in escapes {
        out.extend_from_slice(&i.to_le_bytes());
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// Parses and validates a refinement payload for a tensor of `grid` with
/// `bits`-bit codes.
pub fn read_refine<'a>(payload: &'a [u8], grid: &Grid, bits: u8) -> Result<Refine<'a>> {
    let (scales, rest) = group_params(payload, grid, "scale")?;
    let n = grid.len();
    let codes_len = packed_len(n, bits);
    let codes = rest.get(..codes_len).ok_or_else(|| Error::Corrupt("payload shorter than its codes".into()))?;
    let tail = &rest[codes_len..];
    let count = tail.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize);
    let count = count.ok_or_else(|| Error::Corrupt("escape count missing".into()))?;
    if count > n || tail.len() != 4 + 8 * count {
        return Err(Error::Corrupt(format!("{count} escapes do not fit {} bytes", tail.len())));
    }
    let mut escapes = Vec::with_capacity(count);
    for e in tail[4..].chunks_exact(8) {
        let i = u32::from_le_bytes(e[..4].try_into().expect("4"));
        let d = i32::from_le_bytes(e[4..].try_into().expect("4"));
        let ordered = escapes.last().is_none_or(|&(p, _)| p < i);
        if i as usize >= n || !ordered || d == 0 || d.unsigned_abs() > MAX_ESCAPE_STEPS {
            return Err(Error::Corrupt(format!("escape ({i}, {d}) is out of range or out of order")));
        }
        escapes.push((i, d));
    }
    Ok(Refine { scales, codes, escapes })
}

/// Writes an exact-stage payload.
pub fn write_exact(bounds: &[f32], coded: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bounds.len() * 4 + coded.len());
    put_f32s(&mut out, bounds);
    out.extend_from_slice(coded);
    out
}

/// Parses an exact-stage payload (the coded values are checked while decoding).
pub fn read_exact<'a>(payload: &'a [u8], grid: &Grid) -> Result<Exact<'a>> {
    let (bounds, coded) = group_params(payload, grid, "bound")?;
    Ok(Exact { bounds, coded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refine_round_trip_and_bad_escapes() {
        let grid = Grid::choose(&[4, 8], 0, 0);
        let packed = crate::kernels::pack(&[3u8; 32], 4);
        let bytes = write_refine(&[0.5; 4], &packed, &[(2, 7), (9, -3)]);
        let r = read_refine(&bytes, &grid, 4).unwrap();
        assert_eq!((r.scales, r.codes, r.escapes), (vec![0.5; 4], &packed[..], vec![(2, 7), (9, -3)]));
        for bad in [vec![(9, 1), (2, 1)], vec![(40, 1)], vec![(1, 0)], vec![(1, i32::MIN)]] {
            assert!(read_refine(&write_refine(&[0.5; 4], &packed, &bad), &grid, 4).is_err(), "{bad:?}");
        }
        assert!(read_refine(&write_refine(&[-1.0; 4], &packed, &[]), &grid, 4).is_err());
    }
}
