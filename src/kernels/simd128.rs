//! wasm32 simd128 path (compiled with `-C target-feature=+simd128`).

use core::arch::wasm32::*;

use super::scalar;

pub fn mul_add_uniform(dst: &mut [f32], codes: &[u8], zero: i32, scale: f32) {
    let n = dst.len() / 16 * 16;
    let z = i32x4_splat(zero);
    let s = f32x4_splat(scale);
    let mut i = 0;
    while i < n {
        // SAFETY: all accesses stay inside `dst[..n]` and `codes[..n]`;
        // v128 loads and stores are unaligned-safe.
        unsafe {
            let q = v128_load(codes.as_ptr().add(i) as *const v128);
            let lo16 = u16x8_extend_low_u8x16(q);
            let hi16 = u16x8_extend_high_u8x16(q);
            let parts =
                [u32x4_extend_low_u16x8(lo16), u32x4_extend_high_u16x8(lo16), u32x4_extend_low_u16x8(hi16), u32x4_extend_high_u16x8(hi16)];
            for (k, p) in parts.into_iter().enumerate() {
                let ptr = dst.as_mut_ptr().add(i + 4 * k) as *mut v128;
                let t = f32x4_mul(f32x4_convert_i32x4(i32x4_sub(p, z)), s);
                v128_store(ptr, f32x4_add(v128_load(ptr), t));
            }
        }
        i += 16;
    }
    scalar::mul_add_uniform(&mut dst[n..], &codes[n..], zero, scale);
}

pub fn mul_add_vector(dst: &mut [f32], codes: &[u8], zeros: &[i32], scales: &[f32]) {
    let n = dst.len() / 4 * 4;
    let mut i = 0;
    while i < n {
        // SAFETY: as above; all slices have the same length (checked by the caller).
        unsafe {
            let q = u32x4(codes[i] as u32, codes[i + 1] as u32, codes[i + 2] as u32, codes[i + 3] as u32);
            let z = v128_load(zeros.as_ptr().add(i) as *const v128);
            let s = v128_load(scales.as_ptr().add(i) as *const v128);
            let ptr = dst.as_mut_ptr().add(i) as *mut v128;
            let t = f32x4_mul(f32x4_convert_i32x4(i32x4_sub(q, z)), s);
            v128_store(ptr, f32x4_add(v128_load(ptr), t));
        }
        i += 4;
    }
    scalar::mul_add_vector(&mut dst[n..], &codes[n..], &zeros[n..], &scales[n..]);
}
