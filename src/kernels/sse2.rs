//! x86_64 SSE2 path (SSE2 is part of the x86_64 baseline: no detection needed).

use core::arch::x86_64::*;

use super::scalar;

pub fn mul_add_uniform(dst: &mut [f32], codes: &[u8], zero: i32, scale: f32) {
    let n = dst.len() / 16 * 16;
    // SAFETY: SSE2 is always available on x86_64; all loads/stores are
    // unaligned and stay inside `dst[..n]` / `codes[..n]`.
    unsafe {
        let z = _mm_set1_epi32(zero);
        let s = _mm_set1_ps(scale);
        let zero128 = _mm_setzero_si128();
        let mut i = 0;
        while i < n {
            let q = _mm_loadu_si128(codes.as_ptr().add(i) as *const __m128i);
            let lo16 = _mm_unpacklo_epi8(q, zero128);
            let hi16 = _mm_unpackhi_epi8(q, zero128);
            let parts = [
                _mm_unpacklo_epi16(lo16, zero128),
                _mm_unpackhi_epi16(lo16, zero128),
                _mm_unpacklo_epi16(hi16, zero128),
                _mm_unpackhi_epi16(hi16, zero128),
            ];
            for (k, p) in parts.into_iter().enumerate() {
                let ptr = dst.as_mut_ptr().add(i + 4 * k);
                let t = _mm_mul_ps(_mm_cvtepi32_ps(_mm_sub_epi32(p, z)), s);
                _mm_storeu_ps(ptr, _mm_add_ps(_mm_loadu_ps(ptr), t));
            }
            i += 16;
        }
    }
    scalar::mul_add_uniform(&mut dst[n..], &codes[n..], zero, scale);
}

pub fn mul_add_vector(dst: &mut [f32], codes: &[u8], zeros: &[i32], scales: &[f32]) {
    let n = dst.len() / 4 * 4;
    // SAFETY: as above; every index stays below `n`, and all slices have
    // the same length (checked by the caller).
    unsafe {
        let zero128 = _mm_setzero_si128();
        let mut i = 0;
        while i < n {
            let q4 = i32::from_le_bytes([codes[i], codes[i + 1], codes[i + 2], codes[i + 3]]);
            let q = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(q4), zero128), zero128);
            let z = _mm_loadu_si128(zeros.as_ptr().add(i) as *const __m128i);
            let s = _mm_loadu_ps(scales.as_ptr().add(i));
            let ptr = dst.as_mut_ptr().add(i);
            let t = _mm_mul_ps(_mm_cvtepi32_ps(_mm_sub_epi32(q, z)), s);
            _mm_storeu_ps(ptr, _mm_add_ps(_mm_loadu_ps(ptr), t));
            i += 4;
        }
    }
    scalar::mul_add_vector(&mut dst[n..], &codes[n..], &zeros[n..], &scales[n..]);
}

/// Unpacks 2-bit codes (LSB first) from `bytes` into `out`, 16 at a time.
pub fn unpack_crumbs(bytes: &[u8], out: &mut [u8]) -> usize {
    let n = out.len() / 16 * 16;
    // SAFETY: SSE2 is baseline on x86_64; each step reads 4 bytes of
    // `bytes[..n / 4]` and writes 16 bytes of `out[..n]`.
    unsafe {
        let three = _mm_set1_epi8(3);
        let mut i = 0;
        while i < n {
            let word = i32::from_le_bytes(bytes[i / 4..i / 4 + 4].try_into().expect("4 bytes"));
            let b = _mm_cvtsi32_si128(word);
            let c0 = _mm_and_si128(b, three);
            let c1 = _mm_and_si128(_mm_srli_epi16(b, 2), three);
            let c2 = _mm_and_si128(_mm_srli_epi16(b, 4), three);
            let c3 = _mm_and_si128(_mm_srli_epi16(b, 6), three);
            let codes = _mm_unpacklo_epi16(_mm_unpacklo_epi8(c0, c1), _mm_unpacklo_epi8(c2, c3));
            _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut __m128i, codes);
            i += 16;
        }
    }
    n
}
