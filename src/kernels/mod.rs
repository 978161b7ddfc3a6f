//! The dequantize-and-add kernel: `w ← w + f32(q − z) · s`.
//!
//! This is the one arithmetic rule of every p2u stage; the encoder calls the
//! same functions to simulate the client, so both sides agree bit for bit.
//! The rule is two IEEE-754 roundings in this order: `t = f32(q − z) · s`,
//! then `w + t`. Nothing is fused (Rust never contracts `a + b * c` into an
//! FMA, and the SIMD paths use separate multiply and add instructions), so
//! the scalar path, the x86 SSE2 path and the wasm simd128 path give
//! identical bits.
//!
//! Codes arrive bit-packed, LSB first (element `i` occupies bits
//! `[i·b, (i+1)·b)`; for 4 bits this is ONNX's INT4 layout, low nibble
//! first). [`dequant_add`] unpacks a tile of codes into bytes, then runs the
//! multiply-add over the tile.

mod scalar;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;
#[cfg(target_arch = "x86_64")]
mod sse2;

/// Largest code width supported by the packed format.
pub const MAX_BITS: u8 = 8;

/// Elements processed per tile (fits L1 with room to spare).
const TILE: usize = 1024;

/// How the scale and zero point vary along a run of elements.
#[derive(Clone, Copy, Debug)]
pub enum Scales<'a> {
    /// One scale and zero point for the whole run.
    Uniform {
        /// Step size.
        scale: f32,
        /// Zero point (the code that means 0.0).
        zero: i32,
    },
    /// One scale and zero point per element of the run.
    PerElement {
        /// Step size per element; same length as the run.
        scales: &'a [f32],
        /// Zero point per element; same length as the run.
        zeros: &'a [i32],
    },
}

/// Which implementation to use (for benchmarks and cross-checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Element-at-a-time reference implementation.
    Scalar,
    /// The best SIMD path compiled in (SSE2 on x86_64, simd128 on wasm32);
    /// falls back to scalar where neither exists.
    Simd,
}

/// Name of the SIMD implementation compiled into this build.
pub fn simd_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        "sse2"
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        "simd128"
    }
    #[cfg(not(any(target_arch = "x86_64", all(target_arch = "wasm32", target_feature = "simd128"))))]
    {
        "scalar"
    }
}

/// `dst[i] += f32(code(start + i) − z) · s` for every `i`, with codes read
/// from the LSB-first bit-packed `packed` at element offset `start`.
///
/// Panics if `packed` is too short or `bits` is 0 or above [`MAX_BITS`];
/// callers validate lengths when parsing chunks.
pub fn dequant_add(dst: &mut [f32], packed: &[u8], bits: u8, start: usize, scales: Scales<'_>) {
    dequant_add_with(Path::Simd, dst, packed, bits, start, scales)
}

/// [`dequant_add`] with an explicit implementation choice.
pub fn dequant_add_with(path: Path, dst: &mut [f32], packed: &[u8], bits: u8, start: usize, scales: Scales<'_>) {
    assert!((1..=MAX_BITS).contains(&bits), "code width {bits} out of range");
    assert!(packed_len(start + dst.len(), bits) <= packed.len(), "packed codes too short");
    if let Scales::PerElement { scales, zeros } = scales {
        assert!(scales.len() == dst.len() && zeros.len() == dst.len());
    }
    if path == Path::Scalar {
        scalar::dequant_add(dst, packed, bits, start, scales);
        return;
    }
    if bits == 8 {
        // byte codes need no unpacking: read them in place
        let codes = &packed[start..start + dst.len()];
        match scales {
            Scales::Uniform { scale, zero } => mul_add_uniform(dst, codes, zero, scale),
            Scales::PerElement { scales, zeros } => mul_add_vector(dst, codes, zeros, scales),
        }
        return;
    }
    let mut codes = [0u8; TILE];
    let mut done = 0;
    while done < dst.len() {
        let n = (dst.len() - done).min(TILE);
        unpack(packed, bits, start + done, &mut codes[..n]);
        let d = &mut dst[done..done + n];
        match scales {
            Scales::Uniform { scale, zero } => mul_add_uniform(d, &codes[..n], zero, scale),
            Scales::PerElement { scales, zeros } => mul_add_vector(d, &codes[..n], &zeros[done..done + n], &scales[done..done + n]),
        }
        done += n;
    }
}

/// The rule on one element: `w + f32(q − z) · s` (multiply, then add).
#[inline]
pub fn scalar_step(w: f32, q: u8, zero: i32, scale: f32) -> f32 {
    scalar::step(w, q, zero, scale)
}

/// The rule with the integer `q − z` given directly (escapes): `w + f32(d) · s`.
#[inline]
pub fn scalar_step_by(w: f32, steps: i32, scale: f32) -> f32 {
    scalar::step_by(w, steps, scale)
}

/// Bytes needed to hold `count` codes of `bits` bits.
pub fn packed_len(count: usize, bits: u8) -> usize {
    (count * bits as usize).div_ceil(8)
}

/// Unpacks `out.len()` codes starting at element `start` into one byte each.
pub fn unpack(packed: &[u8], bits: u8, start: usize, out: &mut [u8]) {
    let bit0 = start * bits as usize;
    if bit0.is_multiple_of(8) && matches!(bits, 2 | 4 | 8) {
        let bytes = &packed[bit0 / 8..];
        match bits {
            8 => out.copy_from_slice(&bytes[..out.len()]),
            4 => unpack_nibbles(bytes, out),
            _ => unpack_crumbs(bytes, out),
        }
    } else {
        scalar::unpack(packed, bits, start, out)
    }
}

/// Byte → its four 2-bit codes, LSB first.
const CRUMBS: [[u8; 4]; 256] = {
    let mut t = [[0u8; 4]; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = [(b & 3) as u8, ((b >> 2) & 3) as u8, ((b >> 4) & 3) as u8, (b >> 6) as u8];
        b += 1;
    }
    t
};

fn unpack_nibbles(bytes: &[u8], out: &mut [u8]) {
    let half = out.len() / 2;
    let mut pairs = out.chunks_exact_mut(2);
    for (pair, b) in (&mut pairs).zip(bytes) {
        pair[0] = b & 15;
        pair[1] = b >> 4;
    }
    if let [last] = pairs.into_remainder() {
        *last = bytes[half] & 15;
    }
}

fn unpack_crumbs(bytes: &[u8], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    let done = sse2::unpack_crumbs(bytes, out);
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    let (bytes, out) = (&bytes[done / 4..], &mut out[done..]);
    let full = out.len() / 4;
    let mut quads = out.chunks_exact_mut(4);
    for (quad, &b) in (&mut quads).zip(bytes) {
        quad.copy_from_slice(&CRUMBS[b as usize]);
    }
    for (k, o) in quads.into_remainder().iter_mut().enumerate() {
        *o = CRUMBS[bytes[full] as usize][k];
    }
}

fn mul_add_uniform(dst: &mut [f32], codes: &[u8], zero: i32, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    return sse2::mul_add_uniform(dst, codes, zero, scale);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return simd128::mul_add_uniform(dst, codes, zero, scale);
    #[allow(unreachable_code)]
    scalar::mul_add_uniform(dst, codes, zero, scale)
}

fn mul_add_vector(dst: &mut [f32], codes: &[u8], zeros: &[i32], scales: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    return sse2::mul_add_vector(dst, codes, zeros, scales);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return simd128::mul_add_vector(dst, codes, zeros, scales);
    #[allow(unreachable_code)]
    scalar::mul_add_vector(dst, codes, zeros, scales)
}

/// Packs codes (each `< 2^bits`) LSB first; the inverse of [`unpack`].
pub fn pack(codes: &[u8], bits: u8) -> Vec<u8> {
    let mut out = vec![0u8; packed_len(codes.len(), bits)];
    let mut bit = 0usize;
    for &c in codes {
        debug_assert!((c as u32) < (1u32 << bits));
        let v = (c as u16) << (bit % 8);
        out[bit / 8] |= v as u8;
        if bit % 8 + bits as usize > 8 {
            out[bit / 8 + 1] |= (v >> 8) as u8;
        }
        bit += bits as usize;
    }
    out
}

#[cfg(test)]
mod tests {
    //! Also run in wasm (Node and Chromium) by wasm-bindgen-test, where
    //! `Path::Simd` is the simd128 kernel.
    use super::*;

    fn lcg(seed: &mut u64) -> u32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn simd_matches_scalar_bit_for_bit() {
        let mut seed = 7;
        for bits in 1..=8u8 {
            for &(len, start) in &[(1usize, 0usize), (3, 1), (17, 5), (1000, 3), (4099, 8)] {
                let codes: Vec<u8> = (0..start + len).map(|_| (lcg(&mut seed) % (1 << bits)) as u8).collect();
                let packed = pack(&codes, bits);
                let base: Vec<f32> = (0..len).map(|_| f32::from_bits(lcg(&mut seed) >> 2) - 1.0).collect();
                let scales: Vec<f32> = (0..len).map(|i| 1e-3 * (i % 7 + 1) as f32).collect();
                let zeros: Vec<i32> = (0..len).map(|i| (i % (1 << bits)) as i32).collect();
                for sc in [Scales::Uniform { scale: 0.0123, zero: 1 << (bits - 1) }, Scales::PerElement { scales: &scales, zeros: &zeros }]
                {
                    let mut a = base.clone();
                    let mut b = base.clone();
                    dequant_add_with(Path::Scalar, &mut a, &packed, bits, start, sc);
                    dequant_add_with(Path::Simd, &mut b, &packed, bits, start, sc);
                    let a: Vec<u32> = a.iter().map(|x| x.to_bits()).collect();
                    let b: Vec<u32> = b.iter().map(|x| x.to_bits()).collect();
                    assert_eq!(a, b, "bits {bits} len {len} start {start}");
                }
            }
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn pack_unpack_roundtrip() {
        let mut seed = 1;
        for bits in 1..=8u8 {
            let codes: Vec<u8> = (0..333).map(|_| (lcg(&mut seed) % (1 << bits)) as u8).collect();
            let packed = pack(&codes, bits);
            assert_eq!(packed.len(), packed_len(333, bits));
            for start in [0usize, 1, 7, 100] {
                let mut out = vec![0u8; 333 - start];
                unpack(&packed, bits, start, &mut out);
                assert_eq!(out, &codes[start..]);
            }
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn four_bit_packing_is_onnx_int4_layout() {
        assert_eq!(pack(&[0x3, 0xA, 0x1], 4), vec![0xA3, 0x01]);
    }
}
