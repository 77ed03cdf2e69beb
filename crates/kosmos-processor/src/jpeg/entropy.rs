//! Huffman entropy decoding (libjpeg `jdhuff.c` and `jdphuff.c`): baseline and progressive
//! scans into per-component coefficient buffers. Entropy decoding is lossless, so any
//! correct decoder gives libjpeg's coefficients; corrupt-data behaviour follows libjpeg
//! (zeros after an unexpected marker, a zero symbol for an invalid code).

use super::JpegError;

/// Zig-zag position → natural (row-major) index, with libjpeg-turbo's 16 extra entries
/// that keep corrupt run lengths inside the block.
pub(crate) const NATURAL_ORDER: [usize; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    63, 63, 63, 63, 63, 63,
];

/// A decoding Huffman table (`jpeg_make_d_derived_tbl`).
#[derive(Debug, Clone)]
pub(crate) struct HuffTable {
    /// For each code length 1..=16: largest code of that length (−1 if none).
    maxcode: [i32; 18],
    /// For each length: index into `values` of the first code minus that code.
    valoffset: [i32; 18],
    values: Vec<u8>,
    /// 9-bit lookahead: `(length << 8) | value`, 0 when the code is longer.
    lookup: Vec<u16>,
}

const LOOKAHEAD: u32 = 9;

impl HuffTable {
    /// Builds a table from the DHT counts (`bits[1..=16]`) and symbols.
    pub(crate) fn new(bits: &[u8; 17], values: &[u8], is_dc: bool) -> Result<Self, JpegError> {
        let total: usize = bits[1..].iter().map(|&b| usize::from(b)).sum();
        if total > 256 || total > values.len() {
            return Err(JpegError::Corrupt("bad Huffman table".into()));
        }
        let values = values[..total].to_vec();
        if is_dc && values.iter().any(|&v| v > 15) {
            return Err(JpegError::Corrupt("bad DC Huffman table".into()));
        }
        let mut maxcode = [-1i32; 18];
        let mut valoffset = [0i32; 18];
        let mut lookup = vec![0u16; 1 << LOOKAHEAD];
        let mut code: i32 = 0;
        let mut k = 0usize;
        for len in 1..=16usize {
            let n = usize::from(bits[len]);
            if n > 0 {
                valoffset[len] = k as i32 - code;
                for _ in 0..n {
                    if len as u32 <= LOOKAHEAD {
                        let shift = LOOKAHEAD - len as u32;
                        let base = (code as usize) << shift;
                        for e in lookup.iter_mut().skip(base).take(1 << shift) {
                            *e = ((len as u16) << 8) | u16::from(values[k]);
                        }
                    }
                    code += 1;
                    k += 1;
                }
                maxcode[len] = code - 1;
            }
            // Codes of this length must fit in `len` bits.
            if code > (1 << len) {
                return Err(JpegError::Corrupt("bad Huffman table".into()));
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX; // sentinel: ends the slow search
        Ok(Self {
            maxcode,
            valoffset,
            values,
            lookup,
        })
    }
}

/// The data ended inside a scan (a zero-sized error keeps the hot results in registers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Truncated;

impl From<Truncated> for JpegError {
    fn from(_: Truncated) -> Self {
        JpegError::Truncated
    }
}

/// The entropy-coded segment reader (libjpeg `jpeg_fill_bit_buffer`).
#[derive(Debug)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    nbits: u32,
    /// A marker met inside the data: from then on zeros are supplied.
    pub(crate) marker: Option<u8>,
    /// The data ended without a marker.
    eof: bool,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8], pos: usize) -> Self {
        Self {
            data,
            pos,
            acc: 0,
            nbits: 0,
            marker: None,
            eof: false,
        }
    }

    /// Byte position just after the consumed entropy data (at a marker, or the end).
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Loads bytes into the accumulator; stops early at the end of the data.
    #[inline(never)]
    fn fill(&mut self) {
        // Fast path: the next 8 bytes hold no 0xFF (no stuffing, no marker).
        if self.marker.is_none() {
            if let Some(b) = self.data.get(self.pos..self.pos + 8) {
                let chunk = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                let x = !chunk; // 0xFF bytes become zero bytes
                let has_ff = x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080;
                if has_ff == 0 {
                    let k = (64 - self.nbits) / 8; // whole bytes that fit
                    if k > 0 {
                        let take = chunk >> (64 - 8 * k);
                        self.acc |= take << (64 - self.nbits - 8 * k);
                        self.nbits += 8 * k;
                        self.pos += k as usize;
                    }
                    return;
                }
            }
        }
        while self.nbits <= 56 {
            let byte = if self.marker.is_some() {
                0
            } else {
                let Some(&b) = self.data.get(self.pos) else {
                    self.eof = true;
                    return;
                };
                if b == 0xFF {
                    // Skip fill bytes, then 0xFF00 is a data 0xFF; anything else a marker.
                    let mut p = self.pos + 1;
                    while self.data.get(p) == Some(&0xFF) {
                        p += 1;
                    }
                    match self.data.get(p) {
                        None => {
                            self.eof = true;
                            return;
                        }
                        Some(0) => {
                            self.pos = p + 1;
                            0xFF
                        }
                        Some(&m) => {
                            self.marker = Some(m);
                            self.pos = p - 1; // points at the 0xFF of the marker
                            0
                        }
                    }
                } else {
                    self.pos += 1;
                    b
                }
            };
            self.acc |= u64::from(byte) << (56 - self.nbits);
            self.nbits += 8;
        }
    }

    #[inline(always)]
    pub(crate) fn bits(&mut self, n: u32) -> Result<u32, Truncated> {
        if n == 0 {
            return Ok(0);
        }
        if self.nbits < n {
            self.fill();
            if self.nbits < n {
                return Err(Truncated);
            }
        }
        let v = (self.acc >> (64 - n)) as u32;
        self.acc <<= n;
        self.nbits -= n;
        Ok(v)
    }

    #[inline(always)]
    pub(crate) fn bit(&mut self) -> Result<bool, Truncated> {
        Ok(self.bits(1)? != 0)
    }

    /// Decodes one Huffman symbol; an invalid code yields 0 like libjpeg.
    #[inline(always)]
    pub(crate) fn decode(&mut self, t: &HuffTable) -> Result<u8, Truncated> {
        if self.nbits < 16 {
            self.fill();
        }
        let peek = (self.acc >> (64 - LOOKAHEAD)) as usize;
        let e = t.lookup[peek];
        let len = u32::from(e >> 8);
        if e != 0 && len <= self.nbits {
            self.acc <<= len;
            self.nbits -= len;
            return Ok(e as u8);
        }
        self.decode_slow(t)
    }

    /// Codes longer than the lookahead, bit by bit.
    #[cold]
    #[inline(never)]
    fn decode_slow(&mut self, t: &HuffTable) -> Result<u8, Truncated> {
        let mut code = 0i32;
        for len in 1..=16usize {
            code = (code << 1) | self.bits(1)? as i32;
            if code <= t.maxcode[len] {
                let idx = (code + t.valoffset[len]) as usize;
                return Ok(t.values.get(idx).copied().unwrap_or(0));
            }
        }
        Ok(0)
    }

    /// Discards buffered bits and consumes the expected restart marker (libjpeg
    /// `process_restart`; a missing marker is tolerated like its resync default).
    pub(crate) fn restart(&mut self) {
        self.acc = 0;
        self.nbits = 0;
        match self.marker.take() {
            Some(m) if (0xD0..=0xD7).contains(&m) => self.pos += 2,
            Some(m) => self.marker = Some(m),
            None => {
                // Scan to the next marker; skip it if it is an RSTn.
                while self.pos + 1 < self.data.len() {
                    if self.data[self.pos] == 0xFF && self.data[self.pos + 1] != 0 {
                        let m = self.data[self.pos + 1];
                        if m == 0xFF {
                            self.pos += 1;
                            continue;
                        }
                        if (0xD0..=0xD7).contains(&m) {
                            self.pos += 2;
                        } else {
                            self.marker = Some(m);
                        }
                        return;
                    }
                    self.pos += 1;
                }
            }
        }
    }
}

/// `HUFF_EXTEND`: the signed value of an `s`-bit magnitude category.
#[inline(always)]
pub(crate) fn extend(r: u32, s: u32) -> i32 {
    if s == 0 {
        0
    } else if (r as i32) < (1 << (s - 1)) {
        r as i32 + ((-1i32) << s) + 1
    } else {
        r as i32
    }
}

/// Baseline (sequential) block: DC difference and AC run-lengths (`decode_mcu_slow`).
pub(crate) fn decode_block_baseline(
    r: &mut BitReader<'_>,
    block: &mut [i16; 64],
    dc: &HuffTable,
    ac: &HuffTable,
    last_dc: &mut i32,
) -> Result<(), JpegError> {
    let s = u32::from(r.decode(dc)?);
    let diff = extend(r.bits(s)?, s);
    *last_dc = last_dc.wrapping_add(diff);
    block[0] = *last_dc as i16;
    let mut k = 1usize;
    while k < 64 {
        let rs = r.decode(ac)?;
        let run = usize::from(rs >> 4);
        let s = u32::from(rs & 15);
        if s != 0 {
            k += run;
            let v = extend(r.bits(s)?, s);
            block[NATURAL_ORDER[k]] = v as i16;
        } else {
            if run != 15 {
                break;
            }
            k += 15;
        }
        k += 1;
    }
    Ok(())
}

/// Progressive DC scan, first pass (`decode_mcu_DC_first`).
pub(crate) fn decode_dc_first(
    r: &mut BitReader<'_>,
    block: &mut [i16; 64],
    dc: &HuffTable,
    last_dc: &mut i32,
    al: u32,
) -> Result<(), JpegError> {
    let s = u32::from(r.decode(dc)?);
    let diff = extend(r.bits(s)?, s);
    *last_dc = last_dc.wrapping_add(diff);
    block[0] = last_dc.wrapping_shl(al) as i16;
    Ok(())
}

/// Progressive DC scan, refinement (`decode_mcu_DC_refine`).
pub(crate) fn decode_dc_refine(
    r: &mut BitReader<'_>,
    block: &mut [i16; 64],
    al: u32,
) -> Result<(), JpegError> {
    if r.bit()? {
        block[0] |= (1i32 << al) as i16;
    }
    Ok(())
}

/// Progressive AC scan, first pass (`decode_mcu_AC_first`).
pub(crate) fn decode_ac_first(
    r: &mut BitReader<'_>,
    block: &mut [i16; 64],
    ac: &HuffTable,
    (ss, se, al): (usize, usize, u32),
    eobrun: &mut u32,
) -> Result<(), JpegError> {
    if *eobrun > 0 {
        *eobrun -= 1;
        return Ok(());
    }
    let mut k = ss;
    while k <= se {
        let rs = r.decode(ac)?;
        let run = u32::from(rs >> 4);
        let s = u32::from(rs & 15);
        if s != 0 {
            k += run as usize;
            let v = extend(r.bits(s)?, s);
            block[NATURAL_ORDER[k]] = v.wrapping_shl(al) as i16;
        } else if run == 15 {
            k += 15;
        } else {
            *eobrun = 1 << run;
            if run != 0 {
                *eobrun += r.bits(run)?;
            }
            *eobrun -= 1;
            break;
        }
        k += 1;
    }
    Ok(())
}

/// Bit `i` set when `block[i] != 0`.
#[inline(always)]
fn nonzero_mask(block: &[i16; 64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        let mut mask = 0u64;
        for j in 0..8 {
            // SAFETY: SSE2 is part of x86_64; `block` holds 64 i16, so the 8 loads of
            // 8 lanes at `8 * j` stay inside it.
            let m = unsafe {
                let v = _mm_loadu_si128(block.as_ptr().add(8 * j).cast());
                let z = _mm_cmpeq_epi16(v, _mm_setzero_si128());
                _mm_movemask_epi8(_mm_packs_epi16(z, z)) as u64 & 0xFF
            };
            mask |= (!m & 0xFF) << (8 * j);
        }
        mask
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut mask = 0u64;
        for (i, &c) in block.iter().enumerate() {
            mask |= u64::from(c != 0) << i;
        }
        mask
    }
}

/// `ZIGZAG_BITS[row][byte]`: the zig-zag positions (as bits) of the non-zero flags `byte`
/// of natural-order row `row`. Turns a natural-order mask into a zig-zag-order one.
static ZIGZAG_BITS: std::sync::LazyLock<Box<[[u64; 256]; 8]>> = std::sync::LazyLock::new(|| {
    let mut zz_of = [0usize; 64];
    for (k, &n) in NATURAL_ORDER[..64].iter().enumerate() {
        zz_of[n] = k;
    }
    let mut t = Box::new([[0u64; 256]; 8]);
    for (row, table) in t.iter_mut().enumerate() {
        for (byte, out) in table.iter_mut().enumerate() {
            for col in 0..8 {
                if byte & (1 << col) != 0 {
                    *out |= 1 << zz_of[row * 8 + col];
                }
            }
        }
    }
    t
});

/// Progressive AC scan, refinement (`decode_mcu_AC_refine`).
pub(crate) fn decode_ac_refine(
    r: &mut BitReader<'_>,
    block: &mut [i16; 64],
    ac: &HuffTable,
    (ss, se, al): (usize, usize, u32),
    eobrun: &mut u32,
) -> Result<(), JpegError> {
    let p1 = (1i32 << al) as i16;
    let m1 = ((-1i32) << al) as i16;
    let refine = |c: &mut i16, r: &mut BitReader<'_>| -> Result<(), Truncated> {
        if r.bit()? && (*c & p1) == 0 {
            *c = if *c >= 0 {
                c.wrapping_add(p1)
            } else {
                c.wrapping_add(m1)
            };
        }
        Ok(())
    };
    let se = se.min(63);
    let mut k = ss;
    if *eobrun == 0 {
        while k <= se {
            let rs = r.decode(ac)?;
            let mut run = i32::from(rs >> 4);
            let s = rs & 15;
            let mut value = 0i16;
            if s != 0 {
                // The size of a newly non-zero coefficient is always 1.
                value = if r.bit()? { p1 } else { m1 };
            } else if run != 15 {
                *eobrun = 1 << run;
                if run != 0 {
                    *eobrun += r.bits(run as u32)?;
                }
                break;
            }
            // Skip already-nonzero coefficients (refining them) and `run` zero ones.
            while k <= se {
                let pos = NATURAL_ORDER[k];
                if block[pos] != 0 {
                    refine(&mut block[pos], r)?;
                } else {
                    run -= 1;
                    if run < 0 {
                        break;
                    }
                }
                k += 1;
            }
            if value != 0 {
                block[NATURAL_ORDER[k]] = value;
            }
            k += 1;
        }
    }
    if *eobrun > 0 {
        // Only the already-nonzero coefficients of the band take a correction bit, in
        // zig-zag order: build the band's non-zero mask in zig-zag bit order.
        let natural = nonzero_mask(block);
        let tables = &**ZIGZAG_BITS;
        let mut mask = 0u64;
        for (row, table) in tables.iter().enumerate() {
            mask |= table[((natural >> (8 * row)) & 0xFF) as usize];
        }
        let below_k = if k >= 64 { u64::MAX } else { (1u64 << k) - 1 };
        let upto_se = if se >= 63 {
            u64::MAX
        } else {
            (1u64 << (se + 1)) - 1
        };
        mask &= upto_se & !below_k;
        while mask != 0 {
            let k = mask.trailing_zeros() as usize;
            refine(&mut block[NATURAL_ORDER[k]], r)?;
            mask &= mask - 1;
        }
        *eobrun -= 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_tables_map_every_position() {
        for (k, &n) in NATURAL_ORDER[..64].iter().enumerate() {
            let natural = 1u64 << n;
            let row = n / 8;
            assert_eq!(
                ZIGZAG_BITS[row][((natural >> (8 * row)) & 0xFF) as usize],
                1 << k
            );
        }
    }

    #[test]
    fn nonzero_mask_bits() {
        let mut b = [0i16; 64];
        for i in [0, 7, 8, 31, 63] {
            b[i] = -3;
        }
        assert_eq!(
            nonzero_mask(&b),
            (1 << 0) | (1 << 7) | (1 << 8) | (1 << 31) | (1 << 63)
        );
    }

    #[test]
    fn extend_values() {
        assert_eq!(extend(0, 1), -1);
        assert_eq!(extend(1, 1), 1);
        assert_eq!(extend(2, 3), -5);
        assert_eq!(extend(5, 3), 5);
    }

    #[test]
    fn huffman_roundtrip() {
        // Codes: a=0 (len 1), b=10, c=110, d=111.
        let mut bits = [0u8; 17];
        bits[1] = 1;
        bits[2] = 1;
        bits[3] = 2;
        let t = HuffTable::new(&bits, b"abcd", false).unwrap();
        // 0 10 110 111 0 + padding 1s: 0101_1011_1011_1111
        let data = [0b0101_1011, 0b1011_1111, 0xFF, 0xD9];
        let mut r = BitReader::new(&data, 0);
        let got: Vec<u8> = (0..5).map(|_| r.decode(&t).unwrap()).collect();
        assert_eq!(got, b"abcda");
        let mut bad = [0u8; 17];
        bad[1] = 3;
        assert!(HuffTable::new(&bad, &[1, 2, 3], false).is_err());
    }
}
