//! Element-at-a-time reference implementation of the kernel.

use super::Scales;

/// Reads code `index` from an LSB-first bit-packed buffer.
#[inline]
pub fn code_at(packed: &[u8], bits: u8, index: usize) -> u8 {
    let bit = index * bits as usize;
    let lo = packed[bit / 8] as u16;
    let hi = if bit % 8 + bits as usize > 8 { packed[bit / 8 + 1] as u16 } else { 0 };
    (((lo | (hi << 8)) >> (bit % 8)) & ((1u16 << bits) - 1)) as u8
}

pub fn unpack(packed: &[u8], bits: u8, start: usize, out: &mut [u8]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = code_at(packed, bits, start + i);
    }
}

/// The rule itself: `w + f32(q − z) · s`, multiply then add.
#[inline(always)]
pub fn step(w: f32, q: u8, zero: i32, scale: f32) -> f32 {
    step_by(w, q as i32 - zero, scale)
}

/// The rule with the integer `q − z` given directly.
#[inline(always)]
pub fn step_by(w: f32, steps: i32, scale: f32) -> f32 {
    let t = steps as f32 * scale;
    w + t
}

pub fn dequant_add(dst: &mut [f32], packed: &[u8], bits: u8, start: usize, scales: Scales<'_>) {
    match scales {
        Scales::Uniform { scale, zero } => {
            for (i, w) in dst.iter_mut().enumerate() {
                *w = step(*w, code_at(packed, bits, start + i), zero, scale);
            }
        }
        Scales::PerElement { scales, zeros } => {
            for (i, w) in dst.iter_mut().enumerate() {
                *w = step(*w, code_at(packed, bits, start + i), zeros[i], scales[i]);
            }
        }
    }
}

pub fn mul_add_uniform(dst: &mut [f32], codes: &[u8], zero: i32, scale: f32) {
    for (w, &q) in dst.iter_mut().zip(codes) {
        *w = step(*w, q, zero, scale);
    }
}

pub fn mul_add_vector(dst: &mut [f32], codes: &[u8], zeros: &[i32], scales: &[f32]) {
    for i in 0..dst.len() {
        dst[i] = step(dst[i], codes[i], zeros[i], scales[i]);
    }
}
