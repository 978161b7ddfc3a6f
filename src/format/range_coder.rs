//! A byte-oriented range coder (LZMA's carry-propagating design) used to code
//! integers drawn uniformly from known ranges with almost no overhead
//! (a fraction of a percent over `log2(range)` bits).

use crate::error::{Error, Result};

const TOP: u32 = 1 << 24;
/// Largest total a single coding step accepts.
const MAX_TOTAL_BITS: u32 = 16;

/// Range encoder writing into a `Vec<u8>`.
pub struct Encoder {
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

    /// Codes `value`, known to lie in `[0, range)`; `range` up to 2^40.
    pub fn encode_uniform(&mut self, value: u64, range: u64) {
        debug_assert!(value < range);
        if range <= 1 {
            return;
        }
        let bits = 64 - (range - 1).leading_zeros();
        let low_bits = bits.saturating_sub(MAX_TOTAL_BITS);
        self.encode((value >> low_bits) as u32, (((range - 1) >> low_bits) + 1) as u32);
        let mut done = 0;
        while done < low_bits {
            let n = (low_bits - done).min(MAX_TOTAL_BITS);
            self.encode(((value >> done) & ((1 << n) - 1)) as u32, 1 << n);
            done += n;
        }
    }

    /// Flushes and returns the coded bytes.
    pub fn finish(mut self) -> Vec<u8> {
        for _ in 0..5 {
            self.shift_low();
        }
        self.out
    }
}

/// Range decoder over a byte slice; reading past the end is an error.
pub struct Decoder<'a> {
    code: u32,
    range: u32,
    input: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Starts decoding `input` (as produced by [`Encoder::finish`]).
    pub fn new(input: &'a [u8]) -> Result<Self> {
        let mut d = Decoder { code: 0, range: u32::MAX, input, pos: 0 };
        for _ in 0..5 {
            d.code = (d.code << 8) | d.next_byte()? as u32;
        }
        Ok(d)
    }

    fn next_byte(&mut self) -> Result<u8> {
        let b = *self.input.get(self.pos).ok_or_else(|| {
            Error::Truncated(format!("range-coded data ends after {} bytes", self.input.len()))
        })?;
        self.pos += 1;
        Ok(b)
    }

    fn decode(&mut self, total: u32) -> Result<u32> {
        self.range /= total;
        let v = self.code / self.range;
        if v >= total {
            return Err(Error::Invalid("range-coded value out of range (corrupt data)".into()));
        }
        self.code -= v * self.range;
        while self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | self.next_byte()? as u32;
        }
        Ok(v)
    }

    /// Inverse of [`Encoder::encode_uniform`]; fails on corrupt data.
    pub fn decode_uniform(&mut self, range: u64) -> Result<u64> {
        if range <= 1 {
            return Ok(0);
        }
        let bits = 64 - (range - 1).leading_zeros();
        let low_bits = bits.saturating_sub(MAX_TOTAL_BITS);
        let mut v = (self.decode((((range - 1) >> low_bits) + 1) as u32)? as u64) << low_bits;
        let mut done = 0;
        while done < low_bits {
            let n = (low_bits - done).min(MAX_TOTAL_BITS);
            v |= (self.decode(1 << n)? as u64) << done;
            done += n;
        }
        if v >= range {
            return Err(Error::Invalid("range-coded value out of range (corrupt data)".into()));
        }
        Ok(v)
    }

    /// Bytes consumed so far.
    pub fn consumed(&self) -> usize {
        self.pos
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
        let mut e = Encoder::default();
        for &(v, r) in &items {
            e.encode_uniform(v, r);
        }
        let bytes = e.finish();
        assert!((bytes.len() as f64) < ideal / 8.0 * 1.01 + 16.0, "{} vs {}", bytes.len(), ideal / 8.0);
        let mut d = Decoder::new(&bytes).unwrap();
        for &(v, r) in &items {
            assert_eq!(d.decode_uniform(r).unwrap(), v);
        }
        assert_eq!(d.consumed(), bytes.len());
    }

    #[test]
    fn truncated_input_is_an_error() {
        let mut e = Encoder::default();
        for i in 0..1000 {
            e.encode_uniform(i % 1000, 1 << 20);
        }
        let bytes = e.finish();
        let mut d = Decoder::new(&bytes[..bytes.len() / 2]).unwrap();
        let r: Result<Vec<u64>> = (0..1000).map(|_| d.decode_uniform(1 << 20)).collect();
        assert!(r.is_err());
    }
}
