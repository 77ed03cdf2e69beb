//! A JPEG decoder that reproduces libjpeg-turbo's output as Pillow 13 gets it: baseline and
//! progressive Huffman JPEGs, accurate integer IDCT (`JDCT_ISLOW`), fancy upsampling and
//! libjpeg's YCbCr→RGB tables; CMYK/YCCK as Pillow converts them.
//!
//! The `image` crate's JPEG decoder (zune-jpeg) uses a different IDCT and upsampler, which
//! changes a few pixel values by 1–5 and so breaks bit-exactness after resizing; hence
//! this module. Arithmetic-coded, lossless, hierarchical and 12-bit JPEGs are rejected
//! (Pillow also rejects 12-bit ones).

mod color;
mod entropy;
mod idct;

use image::RgbImage;

use crate::image::ImageError;
use color::{ColorSpace, Plane};
use entropy::{BitReader, HuffTable};

/// A JPEG-specific failure, mapped to [`ImageError::Decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JpegError {
    /// The data ends inside the image.
    Truncated,
    /// The stream is malformed.
    Corrupt(String),
    /// A valid JPEG feature this decoder does not implement.
    Unsupported(String),
}

impl JpegError {
    fn into_image_error(self) -> ImageError {
        let message = match self {
            JpegError::Truncated => "image file is truncated".to_string(),
            JpegError::Corrupt(m) => m,
            JpegError::Unsupported(m) => format!("unsupported: {m}"),
        };
        ImageError::Decode {
            format: "Jpeg".into(),
            message,
        }
    }
}

#[derive(Debug, Clone)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// Blocks per row / column holding real samples.
    width_in_blocks: usize,
    height_in_blocks: usize,
    /// Coefficient grid (whole MCUs), in blocks.
    grid_w: usize,
    grid_h: usize,
    coefs: Vec<i16>,
    /// The quantisation table latched at the component's first scan.
    quant: Option<[u16; 64]>,
}

#[derive(Debug, Default)]
struct Decoder {
    width: usize,
    height: usize,
    progressive: bool,
    comps: Vec<Component>,
    qtables: [Option<[u16; 64]>; 4],
    dc_tables: [Option<HuffTable>; 4],
    ac_tables: [Option<HuffTable>; 4],
    restart_interval: usize,
    jfif: bool,
    adobe_transform: Option<u8>,
    max_h: usize,
    max_v: usize,
    mcux: usize,
    mcuy: usize,
    frame_seen: bool,
    scans: usize,
}

/// The entropy-coding mode of one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanKind {
    Baseline,
    DcFirst,
    DcRefine,
    AcFirst,
    AcRefine,
}

/// What the MCU walk of one scan needs.
#[derive(Debug)]
struct Scan<'a> {
    /// Frame component index of each scan component.
    idx: &'a [usize],
    /// `(scan component, dy, dx)` of every block of an MCU, in coding order.
    layout: &'a [(usize, usize, usize)],
    mcus: (usize, usize),
    interleaved: bool,
    restart_interval: usize,
}

/// Predictors and EOB run, reset at every restart marker.
#[derive(Debug, Default)]
struct ScanState {
    last_dc: [i32; 4],
    eobrun: u32,
}

/// Walks the MCUs of a scan, calling `f(reader, block, scan component, state)` for every
/// block in coding order; `f` is monomorphised per scan kind.
fn run_scan<F>(
    comps: &mut [Component],
    scan: &Scan<'_>,
    r: &mut BitReader<'_>,
    mut f: F,
) -> Result<(), JpegError>
where
    F: FnMut(&mut BitReader<'_>, &mut [i16; 64], usize, &mut ScanState) -> Result<(), JpegError>,
{
    let mut st = ScanState::default();
    let (mcus_x, mcus_y) = scan.mcus;
    let mut todo = scan.restart_interval;
    for my in 0..mcus_y {
        for mx in 0..mcus_x {
            if scan.restart_interval > 0 {
                if todo == 0 {
                    r.restart();
                    st = ScanState::default();
                    todo = scan.restart_interval;
                }
                todo -= 1;
            }
            for &(k, dy, dx) in scan.layout {
                let c = &mut comps[scan.idx[k]];
                let (col, row) = if scan.interleaved {
                    (mx * c.h + dx, my * c.v + dy)
                } else {
                    (mx, my)
                };
                let off = (row * c.grid_w + col) * 64;
                let block: &mut [i16; 64] = (&mut c.coefs[off..off + 64])
                    .try_into()
                    .map_err(|_| JpegError::Corrupt("block outside the coefficient grid".into()))?;
                f(r, block, k, &mut st)?;
            }
        }
    }
    Ok(())
}

fn be16(d: &[u8], i: usize) -> Result<usize, JpegError> {
    match (d.get(i), d.get(i + 1)) {
        (Some(&a), Some(&b)) => Ok(usize::from(a) << 8 | usize::from(b)),
        _ => Err(JpegError::Truncated),
    }
}

/// Decodes a JPEG to RGB as Pillow 13 + HF's `convert_to_rgb` would see it.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageError> {
    decode(bytes, max_pixels)
}

fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageError> {
    let mut d = Decoder::default();
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err(JpegError::Corrupt("not a JPEG (no SOI marker)".into()).into_image_error());
    }
    let mut pos = 2;
    loop {
        // Find the next marker, skipping fill bytes and stray data like libjpeg does.
        while pos < bytes.len() && bytes[pos] != 0xFF {
            pos += 1;
        }
        while pos < bytes.len() && bytes[pos] == 0xFF {
            pos += 1;
        }
        let Some(&marker) = bytes.get(pos) else {
            if d.scans > 0 {
                break; // missing EOI after data: output what was decoded
            }
            return Err(JpegError::Truncated.into_image_error());
        };
        pos += 1;
        match marker {
            0xD8 | 0x01 | 0xD0..=0xD7 => continue, // standalone markers
            0xD9 => break,                         // EOI
            _ => {}
        }
        let len = be16(bytes, pos).map_err(JpegError::into_image_error)?;
        if len < 2 || pos + len > bytes.len() {
            return Err(JpegError::Truncated.into_image_error());
        }
        let seg = &bytes[pos + 2..pos + len];
        match marker {
            0xC0..=0xC2 => {
                d.frame(seg, marker == 0xC2, max_pixels)?;
                pos += len;
            }
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(JpegError::Unsupported(format!(
                    "SOF{} (lossless, hierarchical or arithmetic coding)",
                    marker - 0xC0
                ))
                .into_image_error())
            }
            0xC4 => {
                d.dht(seg).map_err(JpegError::into_image_error)?;
                pos += len;
            }
            0xDB => {
                d.dqt(seg).map_err(JpegError::into_image_error)?;
                pos += len;
            }
            0xDD => {
                d.restart_interval = be16(seg, 0).map_err(JpegError::into_image_error)?;
                pos += len;
            }
            0xE0 => {
                if seg.len() >= 14 && seg.starts_with(b"JFIF\0") {
                    d.jfif = true;
                }
                pos += len;
            }
            0xEE => {
                if seg.len() >= 12 && seg.starts_with(b"Adobe") {
                    d.adobe_transform = Some(seg[11]);
                }
                pos += len;
            }
            0xDA => {
                pos = d
                    .scan(seg, bytes, pos + len)
                    .map_err(JpegError::into_image_error)?;
            }
            _ => pos += len,
        }
    }
    d.finish().map_err(JpegError::into_image_error)
}

impl Decoder {
    fn frame(&mut self, s: &[u8], progressive: bool, max_pixels: u64) -> Result<(), ImageError> {
        let err = |m: &str| JpegError::Corrupt(m.into()).into_image_error();
        if self.frame_seen {
            return Err(err("more than one SOF marker"));
        }
        self.frame_seen = true;
        if s.len() < 6 {
            return Err(err("short SOF segment"));
        }
        if s[0] != 8 {
            return Err(JpegError::Unsupported(format!("{}-bit samples", s[0])).into_image_error());
        }
        self.height = be16(s, 1).map_err(JpegError::into_image_error)?;
        self.width = be16(s, 3).map_err(JpegError::into_image_error)?;
        let n = usize::from(s[5]);
        if self.width == 0 || self.height == 0 {
            return Err(ImageError::Empty);
        }
        if (self.width as u64) * (self.height as u64) > max_pixels {
            return Err(ImageError::TooLarge {
                width: self.width as u64,
                height: self.height as u64,
                max_pixels,
            });
        }
        if !matches!(n, 1 | 3 | 4) || s.len() < 6 + 3 * n {
            return Err(JpegError::Unsupported(format!("{n}-component images")).into_image_error());
        }
        self.progressive = progressive;
        for i in 0..n {
            let c = &s[6 + 3 * i..9 + 3 * i];
            let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) || c[2] > 3 {
                return Err(err("bad sampling factors or quantisation table"));
            }
            self.comps.push(Component {
                id: c[0],
                h,
                v,
                tq: usize::from(c[2]),
                width_in_blocks: 0,
                height_in_blocks: 0,
                grid_w: 0,
                grid_h: 0,
                coefs: Vec::new(),
                quant: None,
            });
        }
        self.max_h = self.comps.iter().map(|c| c.h).max().unwrap_or(1);
        self.max_v = self.comps.iter().map(|c| c.v).max().unwrap_or(1);
        self.mcux = self.width.div_ceil(8 * self.max_h);
        self.mcuy = self.height.div_ceil(8 * self.max_v);
        let single = n == 1;
        for c in &mut self.comps {
            c.width_in_blocks = (self.width * c.h).div_ceil(self.max_h * 8);
            c.height_in_blocks = (self.height * c.v).div_ceil(self.max_v * 8);
            (c.grid_w, c.grid_h) = if single {
                (c.width_in_blocks, c.height_in_blocks)
            } else {
                (self.mcux * c.h, self.mcuy * c.v)
            };
            c.coefs = crate::scratch::take_i16(c.grid_w * c.grid_h * 64);
        }
        Ok(())
    }

    fn dht(&mut self, mut s: &[u8]) -> Result<(), JpegError> {
        while !s.is_empty() {
            if s.len() < 17 {
                return Err(JpegError::Corrupt("short DHT segment".into()));
            }
            let (class, id) = (s[0] >> 4, usize::from(s[0] & 15));
            if class > 1 || id > 3 {
                return Err(JpegError::Corrupt("bad DHT table id".into()));
            }
            let mut bits = [0u8; 17];
            bits[1..].copy_from_slice(&s[1..17]);
            let total: usize = bits.iter().map(|&b| usize::from(b)).sum();
            if s.len() < 17 + total {
                return Err(JpegError::Corrupt("short DHT segment".into()));
            }
            let table = HuffTable::new(&bits, &s[17..17 + total], class == 0)?;
            if class == 0 {
                self.dc_tables[id] = Some(table);
            } else {
                self.ac_tables[id] = Some(table);
            }
            s = &s[17 + total..];
        }
        Ok(())
    }

    fn dqt(&mut self, mut s: &[u8]) -> Result<(), JpegError> {
        while !s.is_empty() {
            let (prec, id) = (s[0] >> 4, usize::from(s[0] & 15));
            let size = if prec == 0 { 64 } else { 128 };
            if id > 3 || prec > 1 || s.len() < 1 + size {
                return Err(JpegError::Corrupt("bad DQT segment".into()));
            }
            let mut q = [0u16; 64];
            for (k, &nat) in entropy::NATURAL_ORDER[..64].iter().enumerate() {
                q[nat] = if prec == 0 {
                    u16::from(s[1 + k])
                } else {
                    u16::from(s[1 + 2 * k]) << 8 | u16::from(s[2 + 2 * k])
                };
            }
            self.qtables[id] = Some(q);
            s = &s[1 + size..];
        }
        Ok(())
    }

    /// Decodes one scan; returns the byte position after its entropy-coded data.
    fn scan(&mut self, s: &[u8], data: &[u8], start: usize) -> Result<usize, JpegError> {
        if !self.frame_seen {
            return Err(JpegError::Corrupt("SOS before SOF".into()));
        }
        let ns = usize::from(*s.first().ok_or(JpegError::Truncated)?);
        if ns == 0 || ns > 4 || s.len() < 1 + 2 * ns + 3 {
            return Err(JpegError::Corrupt("bad SOS segment".into()));
        }
        let mut idx = Vec::with_capacity(ns);
        let mut tables = Vec::with_capacity(ns);
        for i in 0..ns {
            let id = s[1 + 2 * i];
            let ci = self
                .comps
                .iter()
                .position(|c| c.id == id)
                .ok_or_else(|| JpegError::Corrupt("SOS names an unknown component".into()))?;
            if idx.contains(&ci) {
                return Err(JpegError::Corrupt("duplicate component in SOS".into()));
            }
            idx.push(ci);
            let t = s[2 + 2 * i];
            tables.push((usize::from(t >> 4) & 3, usize::from(t & 15) & 3));
        }
        let p = 1 + 2 * ns;
        let (ss, se, ah, al) = (
            usize::from(s[p]),
            usize::from(s[p + 1]),
            u32::from(s[p + 2] >> 4),
            u32::from(s[p + 2] & 15),
        );
        if self.progressive {
            let bad = if ss == 0 {
                se != 0
            } else {
                se < ss || se > 63 || ns != 1
            };
            if bad || (ah != 0 && ah != al + 1) || al > 13 {
                return Err(JpegError::Corrupt("invalid progressive parameters".into()));
            }
        } else if ss != 0 || se != 63 || ah != 0 || al != 0 {
            // libjpeg only warns for sequential files and decodes the full block.
        }
        let blocks_in_mcu: usize = idx
            .iter()
            .map(|&ci| self.comps[ci].h * self.comps[ci].v)
            .sum();
        if ns > 1 && blocks_in_mcu > 10 {
            return Err(JpegError::Corrupt("too many blocks in an MCU".into()));
        }
        for &ci in &idx {
            let c = &mut self.comps[ci];
            if c.quant.is_none() {
                c.quant = self.qtables[c.tq];
            }
        }
        // Check the Huffman tables this scan needs.
        let need_dc = !self.progressive || (ss == 0 && ah == 0);
        let need_ac = !self.progressive || ss != 0;
        for &(td, ta) in &tables {
            if need_dc && self.dc_tables[td].is_none() {
                return Err(JpegError::Corrupt("missing DC Huffman table".into()));
            }
            if need_ac && self.ac_tables[ta].is_none() {
                return Err(JpegError::Corrupt("missing AC Huffman table".into()));
            }
        }
        self.scans += 1;

        let kind = match (self.progressive, ss, ah) {
            (false, _, _) => ScanKind::Baseline,
            (true, 0, 0) => ScanKind::DcFirst,
            (true, 0, _) => ScanKind::DcRefine,
            (true, _, 0) => ScanKind::AcFirst,
            (true, _, _) => ScanKind::AcRefine,
        };
        let (mcus_x, mcus_y) = if ns == 1 {
            let c = &self.comps[idx[0]];
            (c.width_in_blocks, c.height_in_blocks)
        } else {
            (self.mcux, self.mcuy)
        };
        // `(scan component, dy, dx)` of every block of one MCU, in coding order.
        let mut layout: Vec<(usize, usize, usize)> = Vec::new();
        for (k, &ci) in idx.iter().enumerate() {
            let (h, v) = if ns == 1 {
                (1, 1)
            } else {
                (self.comps[ci].h, self.comps[ci].v)
            };
            for dy in 0..v {
                for dx in 0..h {
                    layout.push((k, dy, dx));
                }
            }
        }
        let scan = Scan {
            idx: &idx,
            layout: &layout,
            mcus: (mcus_x, mcus_y),
            interleaved: ns > 1,
            restart_interval: self.restart_interval,
        };
        let comps = &mut self.comps;
        let missing = || JpegError::Corrupt("missing Huffman table".into());
        let dc: Vec<Option<&HuffTable>> = tables
            .iter()
            .map(|&(td, _)| self.dc_tables[td].as_ref())
            .collect();
        let ac: Vec<Option<&HuffTable>> = tables
            .iter()
            .map(|&(_, ta)| self.ac_tables[ta].as_ref())
            .collect();
        let mut r = BitReader::new(data, start);
        match kind {
            ScanKind::Baseline => run_scan(comps, &scan, &mut r, |r, b, k, st| {
                let (dc, ac) = (dc[k].ok_or_else(missing)?, ac[k].ok_or_else(missing)?);
                entropy::decode_block_baseline(r, b, dc, ac, &mut st.last_dc[k])
            }),
            ScanKind::DcFirst => run_scan(comps, &scan, &mut r, |r, b, k, st| {
                let dc = dc[k].ok_or_else(missing)?;
                entropy::decode_dc_first(r, b, dc, &mut st.last_dc[k], al)
            }),
            ScanKind::DcRefine => run_scan(comps, &scan, &mut r, |r, b, _, _| {
                entropy::decode_dc_refine(r, b, al)
            }),
            ScanKind::AcFirst => {
                let ac = ac[0].ok_or_else(missing)?;
                run_scan(comps, &scan, &mut r, |r, b, _, st| {
                    entropy::decode_ac_first(r, b, ac, (ss, se, al), &mut st.eobrun)
                })
            }
            ScanKind::AcRefine => {
                let ac = ac[0].ok_or_else(missing)?;
                run_scan(comps, &scan, &mut r, |r, b, _, st| {
                    entropy::decode_ac_refine(r, b, ac, (ss, se, al), &mut st.eobrun)
                })
            }
        }?;
        // Continue marker parsing where the entropy data stopped.
        Ok(r.position())
    }

    fn color_space(&self) -> ColorSpace {
        match self.comps.len() {
            1 => ColorSpace::Gray,
            3 => {
                if self.jfif {
                    ColorSpace::YCbCr
                } else if let Some(t) = self.adobe_transform {
                    if t == 0 {
                        ColorSpace::Rgb
                    } else {
                        ColorSpace::YCbCr
                    }
                } else {
                    let ids: Vec<u8> = self.comps.iter().map(|c| c.id).collect();
                    if ids == [82, 71, 66] {
                        ColorSpace::Rgb
                    } else {
                        ColorSpace::YCbCr
                    }
                }
            }
            _ => match self.adobe_transform {
                Some(0) | None => ColorSpace::Cmyk,
                Some(_) => ColorSpace::Ycck,
            },
        }
    }

    fn finish(mut self) -> Result<RgbImage, JpegError> {
        if !self.frame_seen || self.scans == 0 {
            return Err(JpegError::Corrupt("no image data".into()));
        }
        let (w, h) = (self.width, self.height);
        let mut planes = Vec::with_capacity(self.comps.len());
        for c in &mut self.comps {
            let quant = c.quant.unwrap_or([0; 64]);
            let stride = c.width_in_blocks * 8;
            // Every byte is written by the IDCT: no need to zero it.
            let mut data = crate::scratch::take_u8_dirty(stride * c.height_in_blocks * 8);
            for by in 0..c.height_in_blocks {
                for bx in 0..c.width_in_blocks {
                    let off = (by * c.grid_w + bx) * 64;
                    let blk: &[i16; 64] = c.coefs[off..off + 64]
                        .try_into()
                        .map_err(|_| JpegError::Corrupt("block size".into()))?;
                    let o = by * 8 * stride + bx * 8;
                    idct::idct_block(blk, &quant, &mut data[o..], stride);
                }
            }
            crate::scratch::give_i16(std::mem::take(&mut c.coefs));
            planes.push(Plane {
                data,
                stride,
                width: (w * c.h).div_ceil(self.max_h),
                height: (h * c.v).div_ceil(self.max_v),
                h: c.h,
                v: c.v,
            });
        }
        let methods = planes
            .iter()
            .map(|p| color::Method::choose(p, self.max_h, self.max_v))
            .collect::<Result<Vec<_>, _>>()?;
        let conv = color::Converter::new(self.color_space());
        let mut rows = vec![vec![0u8; w]; planes.len()];
        let mut tmp = vec![0u8; 2 * planes.iter().map(|p| p.width).max().unwrap_or(0) + 2];
        let mut rgb = crate::scratch::take_u8_dirty(w * h * 3);
        for (y, out) in rgb.chunks_exact_mut(w * 3).enumerate() {
            for ((p, &m), row) in planes.iter().zip(&methods).zip(rows.iter_mut()) {
                if m != color::Method::Full {
                    color::upsample_row(p, m, y, row, &mut tmp);
                }
            }
            // Full-size components are read straight from their planes.
            let refs: Vec<&[u8]> = planes
                .iter()
                .zip(&methods)
                .zip(&rows)
                .map(|((p, &m), row)| {
                    if m == color::Method::Full {
                        &p.data[y * p.stride..y * p.stride + w]
                    } else {
                        row.as_slice()
                    }
                })
                .collect();
            conv.convert(&refs, out);
        }
        for p in planes {
            crate::scratch::give_u8(p.data);
        }
        RgbImage::from_raw(w as u32, h as u32, rgb)
            .ok_or_else(|| JpegError::Corrupt("inconsistent image size".into()))
    }
}
