//! Coding integers drawn uniformly from known ranges with almost no overhead
//! (a fraction of a percent over `log2(range)` bits).
//!
//! A value in `[0, R)` is split into its top bits (at most 16 significant
//! ones, coded by a byte-oriented range coder of LZMA's carry-propagating
//! design) and its low `k` bits, which are uniform and written raw into a
//! separate LSB-first bit stream — one division per value on decode.
//! The coded form is `rc_len u32 · range-coded bytes · raw bits`.

use crate::error::{Error, Result};

const TOP: u32 = 1 << 24;
/// Largest total a single coding step accepts.
const MAX_TOTAL_BITS: u32 = 16;

/// Range encoder writing into a `Vec<u8>`.
struct Encoder {
    low: u64,
    range: u32,
    cache: u8,
    cache_size: u64,
    out: Vec<u8>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder { low: 0, range: u32::MAX, cache: 0, cache_size: 1, out: Vec::new() }
    }
}

impl Encoder {
    fn shift_low(&mut self) {
        if (self.low as u32) < 0xFF00_0000 || (self.low >> 32) != 0 {
            let carry = (self.low >> 32) as u8;
            let mut byte = self.cache;
            loop {
                self.out.push(byte.wrapping_add(carry));
                byte = 0xFF;
                self.cache_size -= 1;
                if self.cache_size == 0 {
                    break;
                }
            }
            self.cache = ((self.low >> 24) & 0xFF) as u8;
        }
        self.cache_size += 1;
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }

    fn encode(&mut self, value: u32, total: u32) {
        debug_assert!(value < total && total <= 1 << MAX_TOTAL_BITS);
        self.range /= total;
        self.low += value as u64 * self.range as u64;
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    /// Flushes and returns the coded bytes.
    fn finish(mut self) -> Vec<u8> {
        for _ in 0..5 {
            self.shift_low();
        }
        self.out
    }
}

/// How many low bits of a value in `[0, range)` go to the raw stream.
fn low_bits(range: u64) -> u32 {
    (64 - (range - 1).leading_zeros()).saturating_sub(MAX_TOTAL_BITS)
}

/// Encoder for values from known uniform ranges.
#[derive(Default)]
pub struct UniformEncoder {
    rc: Encoder,
    raw: Vec<u8>,
    acc: u64,
    acc_bits: u32,
}

impl UniformEncoder {
    /// Codes `value`, known to lie in `[0, range)`; `range` up to 2^48.
    pub fn encode(&mut self, value: u64, range: u64) {
        debug_assert!(value < range);
        if range <= 1 {
            return;
        }
        let k = low_bits(range);
        self.rc.encode((value >> k) as u32, (((range - 1) >> k) + 1) as u32);
        if k > 0 {
            self.acc |= (value & ((1 << k) - 1)) << self.acc_bits;
            self.acc_bits += k;
            while self.acc_bits >= 8 {
                self.raw.push(self.acc as u8);
                self.acc >>= 8;
                self.acc_bits -= 8;
            }
        }
    }

    /// Flushes and returns `rc_len · range-coded bytes · raw bits`.
    pub fn finish(mut self) -> Vec<u8> {
        if self.acc_bits > 0 {
            self.raw.push(self.acc as u8);
        }
        let rc = self.rc.finish();
        let mut out = Vec::with_capacity(4 + rc.len() + self.raw.len());
        out.extend_from_slice(&(rc.len() as u32).to_le_bytes());
        out.extend_from_slice(&rc);
        out.extend_from_slice(&self.raw);
        out
    }
}

/// Where a [`UniformDecoder`] stands, so decoding can pause and resume
/// later over the same input (for work split into short tasks).
#[derive(Clone, Copy, Debug)]
pub struct DecoderState {
    code: u32,
    range: u32,
    rc_pos: usize,
    raw_pos: usize,
    acc: u64,
    acc_bits: u32,
}

/// Decoder matching [`UniformEncoder`]; reading past the end is an error.
pub struct UniformDecoder<'a> {
    rc: Decoder<'a>,
    raw: &'a [u8],
    raw_pos: usize,
    acc: u64,
    acc_bits: u32,
}

impl<'a> UniformDecoder<'a> {
    /// Starts decoding the output of [`UniformEncoder::finish`].
    pub fn new(input: &'a [u8]) -> Result<Self> {
        let rc_len = input
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize)
            .ok_or_else(|| Error::Truncated("coded values shorter than their length field".into()))?;
        let rc = input
            .get(4..4usize.saturating_add(rc_len))
            .ok_or_else(|| Error::Truncated(format!("range-coded part claims {rc_len} bytes, only {} follow", input.len() - 4)))?;
        Ok(UniformDecoder { rc: Decoder::new(rc)?, raw: &input[4 + rc_len..], raw_pos: 0, acc: 0, acc_bits: 0 })
    }

    /// Continues decoding `input` from a state taken with [`Self::state`]
    /// on a decoder over the same input.
    pub fn resume(input: &'a [u8], state: DecoderState) -> Result<Self> {
        let mut d = Self::new(input)?;
        d.rc.code = state.code;
        d.rc.range = state.range;
        d.rc.pos = state.rc_pos;
        d.raw_pos = state.raw_pos;
        d.acc = state.acc;
        d.acc_bits = state.acc_bits;
        Ok(d)
    }

    /// The decoder's position, for [`Self::resume`].
    pub fn state(&self) -> DecoderState {
        DecoderState {
            code: self.rc.code,
            range: self.rc.range,
            rc_pos: self.rc.pos,
            raw_pos: self.raw_pos,
            acc: self.acc,
            acc_bits: self.acc_bits,
        }
    }

    /// Inverse of [`UniformEncoder::encode`]; fails on corrupt data.
    #[inline]
    pub fn decode(&mut self, range: u64) -> Result<u64> {
        if range <= 1 {
            return Ok(0);
        }
        let k = low_bits(range);
        let mut v = (self.rc.decode((((range - 1) >> k) + 1) as u32)? as u64) << k;
        if k > 0 {
            while self.acc_bits < k {
                let b = *self.raw.get(self.raw_pos).ok_or_else(|| Error::Truncated("raw bits ended early".into()))?;
                self.acc |= (b as u64) << self.acc_bits;
                self.acc_bits += 8;
                self.raw_pos += 1;
            }
            v |= self.acc & ((1 << k) - 1);
            self.acc >>= k;
            self.acc_bits -= k;
        }
        if v >= range {
            return Err(Error::Corrupt("coded value out of range (corrupt data)".into()));
        }
        Ok(v)
    }

    /// Checks that both parts were consumed exactly.
    pub fn finish(&self) -> Result<()> {
        if self.rc.pos != self.rc.input.len() || self.raw_pos != self.raw.len() || self.acc_bits >= 8 {
            return Err(Error::Corrupt(format!(
                "coded values have trailing bytes (range part {}/{}, raw part {}/{})",
                self.rc.pos,
                self.rc.input.len(),
                self.raw_pos,
                self.raw.len()
            )));
        }
        Ok(())
    }
}

/// Range decoder over a byte slice; reading past the end is an error.
struct Decoder<'a> {
    code: u32,
    range: u32,
    input: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Starts decoding `input` (as produced by [`Encoder::finish`]).
    fn new(input: &'a [u8]) -> Result<Self> {
        let mut d = Decoder { code: 0, range: u32::MAX, input, pos: 0 };
        for _ in 0..5 {
            d.code = (d.code << 8) | d.next_byte()? as u32;
        }
        Ok(d)
    }

    fn next_byte(&mut self) -> Result<u8> {
        let b =
            *self.input.get(self.pos).ok_or_else(|| Error::Truncated(format!("range-coded data ends after {} bytes", self.input.len())))?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    fn decode(&mut self, total: u32) -> Result<u32> {
        self.range /= total;
        let v = self.code / self.range;
        if v >= total {
            return Err(Error::Corrupt("range-coded value out of range (corrupt data)".into()));
        }
        self.code -= v * self.range;
        while self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | self.next_byte()? as u32;
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_near_optimal_size() {
        let mut s = 99u64;
        let mut items = vec![];
        let mut ideal = 0f64;
        for i in 0..20000u64 {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            let range = match i % 4 {
                0 => 1 + (s >> 60),
                1 => 1 + (s >> 44),
                2 => 1 + (s >> 30),
                _ => 1 + (s >> 24),
            };
            let v = (s >> 7) % range;
            ideal += (range as f64).log2();
            items.push((v, range));
        }
        let mut e = UniformEncoder::default();
        for &(v, r) in &items {
            e.encode(v, r);
        }
        let bytes = e.finish();
        assert!((bytes.len() as f64) < ideal / 8.0 * 1.01 + 16.0, "{} vs {}", bytes.len(), ideal / 8.0);
        let mut d = UniformDecoder::new(&bytes).unwrap();
        for &(v, r) in &items {
            assert_eq!(d.decode(r).unwrap(), v);
        }
        d.finish().unwrap();
    }

    #[test]
    fn truncated_input_is_an_error() {
        let mut e = UniformEncoder::default();
        for i in 0..1000 {
            e.encode(i % 1000, 1 << 20);
        }
        let bytes = e.finish();
        let cut = &bytes[..bytes.len() / 2];
        let r = UniformDecoder::new(cut).and_then(|mut d| (0..1000).map(|_| d.decode(1 << 20)).collect::<Result<Vec<u64>>>());
        assert!(r.is_err());
    }
}
