//! libjpeg-turbo's upsampling (`jdsample.c`, fancy upsampling on, as Pillow decodes) and
//! color conversion (`jdcolor.c`), plus Pillow's CMYK handling.

use super::JpegError;

/// One decoded component plane before upsampling.
#[derive(Debug)]
pub(crate) struct Plane {
    /// Samples, `stride × rows` (whole blocks).
    pub data: Vec<u8>,
    pub stride: usize,
    /// `downsampled_width` / `downsampled_height`: the real samples.
    pub width: usize,
    pub height: usize,
    /// Sampling factors.
    pub h: usize,
    pub v: usize,
}

impl Plane {
    #[inline(always)]
    fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.stride..r * self.stride + self.stride]
    }
}

/// How one component is brought to full size (libjpeg-turbo `jinit_upsampler` choice,
/// with `do_fancy_upsampling` on as Pillow decodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Full,
    H2v1Fancy,
    H1v2Fancy,
    H2v2Fancy,
    /// `h2v1_upsample`, `h2v2_upsample` and `int_upsample`: replication.
    Replicate {
        hx: usize,
        vx: usize,
    },
}

impl Method {
    pub(crate) fn choose(p: &Plane, max_h: usize, max_v: usize) -> Result<Self, JpegError> {
        if !max_h.is_multiple_of(p.h) || !max_v.is_multiple_of(p.v) {
            return Err(JpegError::Unsupported("fractional sampling factors".into()));
        }
        let (hx, vx) = (max_h / p.h, max_v / p.v);
        Ok(match (hx, vx) {
            (1, 1) => Method::Full,
            (2, 1) if p.width > 2 => Method::H2v1Fancy,
            (1, 2) => Method::H1v2Fancy,
            (2, 2) if p.width > 2 => Method::H2v2Fancy,
            (hx, vx) => Method::Replicate { hx, vx },
        })
    }
}

/// Writes output row `y` of the upsampled component into `out` (`out.len()` = image
/// width). `tmp` is scratch of at least `2 × p.width` bytes.
pub(crate) fn upsample_row(p: &Plane, m: Method, y: usize, out: &mut [u8], tmp: &mut [u8]) {
    let w = out.len();
    let last = p.height.saturating_sub(1);
    match m {
        Method::Full => out.copy_from_slice(&p.row(y)[..w]),
        Method::H2v1Fancy => {
            h2v1_fancy(&p.row(y)[..p.width], &mut tmp[..2 * p.width]);
            out.copy_from_slice(&tmp[..w]);
        }
        Method::H1v2Fancy => {
            let r = y / 2;
            let (near, bias) = if y.is_multiple_of(2) {
                (r.saturating_sub(1), 1)
            } else {
                ((r + 1).min(last), 2)
            };
            let (a, b) = (p.row(r), p.row(near));
            for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                *o = ((u32::from(a) * 3 + u32::from(b) + bias) >> 2) as u8;
            }
        }
        Method::H2v2Fancy => {
            let r = y / 2;
            let near = if y.is_multiple_of(2) {
                r.saturating_sub(1)
            } else {
                (r + 1).min(last)
            };
            h2v2_fancy(
                &p.row(r)[..p.width],
                &p.row(near)[..p.width],
                &mut tmp[..2 * p.width],
            );
            out.copy_from_slice(&tmp[..w]);
        }
        Method::Replicate { hx, vx } => {
            let src = p.row(y / vx);
            for (x, o) in out.iter_mut().enumerate() {
                *o = src[x / hx];
            }
        }
    }
}

/// `h2v1_fancy_upsample`: triangle filter, 3/4 nearer + 1/4 further sample.
fn h2v1_fancy(src: &[u8], out: &mut [u8]) {
    let n = src.len();
    let s = |i: usize| u32::from(src[i]);
    out[0] = src[0];
    out[1] = ((s(0) * 3 + s(1) + 2) >> 2) as u8;
    for i in 1..n - 1 {
        let v = s(i) * 3;
        out[2 * i] = ((v + s(i - 1) + 1) >> 2) as u8;
        out[2 * i + 1] = ((v + s(i + 1) + 2) >> 2) as u8;
    }
    out[2 * n - 2] = ((s(n - 1) * 3 + s(n - 2) + 1) >> 2) as u8;
    out[2 * n - 1] = src[n - 1];
}

/// `h2v2_fancy_upsample` for one output row: `near` is the input row, `far` the row above
/// (even output rows) or below (odd ones); biases 8 and 7 alternate as in libjpeg-turbo.
fn h2v2_fancy(near: &[u8], far: &[u8], out: &mut [u8]) {
    let n = near.len();
    let col = |i: usize| u32::from(near[i]) * 3 + u32::from(far[i]);
    let mut this = col(0);
    let mut next = col(1);
    out[0] = ((this * 4 + 8) >> 4) as u8;
    out[1] = ((this * 3 + next + 7) >> 4) as u8;
    let mut lastc = this;
    this = next;
    for i in 1..n - 1 {
        next = col(i + 1);
        out[2 * i] = ((this * 3 + lastc + 8) >> 4) as u8;
        out[2 * i + 1] = ((this * 3 + next + 7) >> 4) as u8;
        lastc = this;
        this = next;
    }
    out[2 * n - 2] = ((this * 3 + lastc + 8) >> 4) as u8;
    out[2 * n - 1] = ((this * 4 + 7) >> 4) as u8;
}

const SCALEBITS: u32 = 16;
const ONE_HALF: i32 = 1 << (SCALEBITS - 1);

/// `build_ycc_rgb_table` of `jdcolor.c`.
struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i32; 256],
    cb_g: [i32; 256],
}

impl YccTables {
    fn new() -> Self {
        const FIX_1_40200: i32 = 91881;
        const FIX_1_77200: i32 = 116130;
        const FIX_0_71414: i32 = 46802;
        const FIX_0_34414: i32 = 22554;
        let mut t = Self {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256usize {
            let x = i as i32 - 128;
            t.cr_r[i] = (FIX_1_40200 * x + ONE_HALF) >> SCALEBITS;
            t.cb_b[i] = (FIX_1_77200 * x + ONE_HALF) >> SCALEBITS;
            t.cr_g[i] = -FIX_0_71414 * x;
            t.cb_g[i] = -FIX_0_34414 * x + ONE_HALF;
        }
        t
    }

    /// `ycc_rgb_convert` for one pixel, before range limiting.
    #[inline(always)]
    fn rgb(&self, y: u8, cb: u8, cr: u8) -> [i32; 3] {
        let y = i32::from(y);
        let (cb, cr) = (usize::from(cb), usize::from(cr));
        [
            y + self.cr_r[cr],
            y + ((self.cb_g[cb] + self.cr_g[cr]) >> SCALEBITS),
            y + self.cb_b[cb],
        ]
    }
}

#[inline(always)]
fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// The colour transform of the JPEG's components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColorSpace {
    Gray,
    YCbCr,
    Rgb,
    Cmyk,
    Ycck,
}

/// Converts one row of full-size components to interleaved RGB as Pillow ends up with
/// after `convert("RGB")`: grey is replicated; CMYK goes through Pillow's inverted
/// `CMYK;I` raw mode and `cmyk2rgb`.
pub(crate) struct Converter {
    cs: ColorSpace,
    t: YccTables,
}

impl Converter {
    pub(crate) fn new(cs: ColorSpace) -> Self {
        Self {
            cs,
            t: YccTables::new(),
        }
    }

    /// `rows[c]` are the component rows; `out` is `3 × width` bytes.
    pub(crate) fn convert(&self, rows: &[&[u8]], out: &mut [u8]) {
        let px = out.chunks_exact_mut(3);
        match (self.cs, rows) {
            (ColorSpace::Gray, [g, ..]) => {
                for (o, &v) in px.zip(g.iter()) {
                    o.fill(v);
                }
            }
            (ColorSpace::Rgb, [r, g, b, ..]) => {
                for (o, ((&r, &g), &b)) in px.zip(r.iter().zip(g.iter()).zip(b.iter())) {
                    o.copy_from_slice(&[r, g, b]);
                }
            }
            (ColorSpace::YCbCr, [y, cb, cr, ..]) => ycc_rows(y, cb, cr, out),
            (ColorSpace::Cmyk | ColorSpace::Ycck, [p0, p1, p2, p3]) => {
                let it = p0.iter().zip(p1.iter()).zip(p2.iter()).zip(p3.iter());
                for (o, (((&a, &b), &c), &k)) in px.zip(it) {
                    let (c, m, y) = if self.cs == ColorSpace::Ycck {
                        // ycck_cmyk_convert: C = 255 − R, etc., range-limited.
                        let [r, g, bl] = self.t.rgb(a, b, c);
                        (clamp8(255 - r), clamp8(255 - g), clamp8(255 - bl))
                    } else {
                        (a, b, c)
                    };
                    // Pillow reads CMYK JPEGs as "CMYK;I" (inverted, Adobe convention).
                    o.copy_from_slice(&cmyk2rgb(255 - c, 255 - m, 255 - y, 255 - k));
                }
            }
            // The frame parser only admits 1, 3 or 4 components.
            _ => {}
        }
    }
}

/// `ycc_rgb_convert` for one row, with the table entries computed arithmetically (they
/// are defined by exactly these formulas), so the loop vectorises.
fn ycc_rows(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { ycc_rows_avx2(y, cb, cr, out) };
    }
    ycc_rows_impl(y, cb, cr, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn ycc_rows_avx2(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    ycc_rows_impl(y, cb, cr, out)
}

#[inline(always)]
fn ycc_rows_impl(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    const FIX_1_40200: i32 = 91881;
    const FIX_1_77200: i32 = 116130;
    const FIX_0_71414: i32 = 46802;
    const FIX_0_34414: i32 = 22554;
    for (o, ((&y, &cb), &cr)) in out
        .chunks_exact_mut(3)
        .zip(y.iter().zip(cb.iter()).zip(cr.iter()))
    {
        let (y, cb, cr) = (i32::from(y), i32::from(cb) - 128, i32::from(cr) - 128);
        let r = y + ((FIX_1_40200 * cr + ONE_HALF) >> SCALEBITS);
        let g = y + ((-FIX_0_34414 * cb + ONE_HALF - FIX_0_71414 * cr) >> SCALEBITS);
        let b = y + ((FIX_1_77200 * cb + ONE_HALF) >> SCALEBITS);
        o[0] = clamp8(r);
        o[1] = clamp8(g);
        o[2] = clamp8(b);
    }
}

/// Pillow's `cmyk2rgb` (`Convert.c`).
pub(crate) fn cmyk2rgb(c: u8, m: u8, y: u8, k: u8) -> [u8; 3] {
    let nk = 255 - i32::from(k);
    let muldiv = |a: u8| {
        let t = i32::from(a) * nk + 128;
        ((t >> 8) + t) >> 8
    };
    [
        clamp8(nk - muldiv(c)),
        clamp8(nk - muldiv(m)),
        clamp8(nk - muldiv(y)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ycc_tables_grey_axis() {
        let t = YccTables::new();
        for y in [0u8, 77, 255] {
            assert_eq!(t.rgb(y, 128, 128), [i32::from(y); 3]);
        }
    }

    #[test]
    fn arithmetic_ycc_matches_tables() {
        let t = YccTables::new();
        for cb in 0..=255u8 {
            for cr in (0..=255u8).step_by(3) {
                for y in [0u8, 1, 100, 254, 255] {
                    let mut o = [0u8; 3];
                    ycc_rows_impl(&[y], &[cb], &[cr], &mut o);
                    let [r, g, b] = t.rgb(y, cb, cr);
                    assert_eq!(o, [clamp8(r), clamp8(g), clamp8(b)]);
                }
            }
        }
    }

    #[test]
    fn fancy_rows() {
        let mut out = [0u8; 6];
        h2v1_fancy(&[0, 100, 200], &mut out);
        assert_eq!(out, [0, 25, 75, 125, 175, 200]);
        let mut out = [0u8; 6];
        h2v2_fancy(&[16, 16, 16], &[16, 16, 16], &mut out);
        assert_eq!(out, [16; 6]);
        assert_eq!(cmyk2rgb(0, 0, 0, 0), [255, 255, 255]);
        assert_eq!(cmyk2rgb(255, 0, 0, 0), [0, 255, 255]);
    }
}
