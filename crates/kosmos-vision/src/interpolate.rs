//! Torch-style bicubic resampling of the position-embedding grid.
//!
//! This reproduces `torch.nn.functional.interpolate(x, size, mode="bicubic",
//! align_corners=False)` on CPU (no antialias, a = −0.75, border taps clamped), in f32 and
//! in torch's order of operations, which is what HF's `interpolate_pos_encoding` calls.
//! It is NOT Pillow's antialiased bicubic (that one lives in the processor).

/// The cubic-convolution constant torch uses.
const A: f32 = -0.75;

/// `cubic_convolution1` in ATen: the kernel for |x| <= 1.
fn cubic1(x: f32) -> f32 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}

/// `cubic_convolution2` in ATen: the kernel for 1 < |x| < 2.
fn cubic2(x: f32) -> f32 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

/// The four source indices (clamped to the border) and weights of one output index.
fn taps(out_index: usize, in_size: usize, out_size: usize) -> ([usize; 4], [f32; 4]) {
    // area_pixel_compute_scale (no explicit scale factor) and
    // area_pixel_compute_source_index(cubic = true): no clamping at 0.
    let scale = in_size as f32 / out_size as f32;
    let real = scale * (out_index as f32 + 0.5) - 0.5;
    // guard_index_and_lambda
    let floor = real.floor() as i64;
    let index = floor.min(in_size as i64 - 1);
    let t = (real - index as f32).clamp(0.0, 1.0);
    let weights = [
        cubic2(t + 1.0),
        cubic1(t),
        cubic1(1.0 - t),
        cubic2(1.0 - t + 1.0),
    ];
    let mut idx = [0usize; 4];
    for (j, slot) in idx.iter_mut().enumerate() {
        *slot = (index - 1 + j as i64).clamp(0, in_size as i64 - 1) as usize;
    }
    (idx, weights)
}

/// Resizes a channels-last grid `[in_h, in_w, channels]` (row-major) to `[out_h, out_w, channels]`.
///
/// `data.len()` must be `in_h * in_w * channels`; the caller checks it.
pub(crate) fn bicubic_resize_hwc(
    data: &[f32],
    (in_h, in_w): (usize, usize),
    channels: usize,
    (out_h, out_w): (usize, usize),
) -> Vec<f32> {
    debug_assert_eq!(data.len(), in_h * in_w * channels);
    let ys: Vec<_> = (0..out_h).map(|o| taps(o, in_h, out_h)).collect();
    let xs: Vec<_> = (0..out_w).map(|o| taps(o, in_w, out_w)).collect();
    let mut out = vec![0f32; out_h * out_w * channels];
    for (oy, (iy, wy)) in ys.iter().enumerate() {
        for (ox, (ix, wx)) in xs.iter().enumerate() {
            let dst = &mut out[(oy * out_w + ox) * channels..][..channels];
            for (c, slot) in dst.iter_mut().enumerate() {
                let at = |y: usize, x: usize| data[(iy[y] * in_w + ix[x]) * channels + c];
                // Outer sum over rows, inner over columns, each accumulated left to right.
                let row = |j: usize| {
                    let mut r = at(j, 0) * wx[0];
                    for (i, w) in wx.iter().enumerate().skip(1) {
                        r += at(j, i) * w;
                    }
                    r
                };
                let mut acc = row(0) * wy[0];
                for (j, w) in wy.iter().enumerate().skip(1) {
                    acc += row(j) * w;
                }
                *slot = acc;
            }
        }
    }
    out
}

#[cfg(test)]
// The goldens are written exactly as torch printed them.
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;

    // Golden values from torch 2.15 (CPU, f32):
    //   x = (torch.sin(torch.arange(18.).reshape(1, 2, 3, 3) * 1.3) * 2.0)
    //   F.interpolate(x, size=(5, 4), mode="bicubic", align_corners=False)
    //   F.interpolate(x, size=(2, 2), mode="bicubic", align_corners=False)
    // The input is given as torch printed it (channels-first).
    const INPUT_CHW: [f32; 18] = [
        0.0,
        1.927_116_4,
        1.031_002_9,
        -1.375_532_2,
        -1.766_909_5,
        0.430_239_98,
        1.997_086_6,
        0.638_197_84,
        -1.655_652_5,
        -1.523_967_4,
        0.840_334_06,
        1.973_544_1,
        0.215_508_45,
        -1.858_247_8,
        -1.209_667_4,
        1.211_079_7,
        1.857_591,
        -0.217_270_15,
    ];
    const UP_5X4_CHW: [f32; 40] = [
        -0.022_248_151,
        1.638_172_4,
        2.087_991_7,
        1.003_041_1,
        -0.855_288_8,
        -0.143_642_77,
        0.667_301_5,
        0.993_125_4,
        -1.347_440_1,
        -1.867_262_1,
        -1.018_161_3,
        0.587_945_6,
        0.672_047_1,
        -0.110_291_02,
        -0.805_764_1,
        -0.913_169_2,
        2.425_062_4,
        1.691_611_6,
        -0.272_361_28,
        -2.051_490_5,
        -1.891_241_4,
        -0.035_720_47,
        1.831_074_7,
        2.363_810_8,
        -0.952_778,
        -0.760_526_66,
        -0.013_949_753,
        0.748_921_45,
        0.364_357_17,
        -1.182_221_5,
        -1.852_360_6,
        -1.163_114_1,
        1.002_329_3,
        0.599_754_1,
        -0.237_957_62,
        -0.907_096_6,
        1.241_505_6,
        2.143_910_9,
        1.472_136_4,
        -0.289_694_34,
    ];
    const DOWN_2X2_CHW: [f32; 8] = [
        -0.103_588_42,
        1.027_179_2,
        0.948_990_6,
        -0.982_583_94,
        -0.918_026_45,
        1.008_308,
        1.070_017_8,
        -0.224_293_38,
    ];

    fn chw_to_hwc(x: &[f32], c: usize, hw: usize) -> Vec<f32> {
        (0..hw * c).map(|i| x[(i % c) * hw + i / c]).collect()
    }

    fn check(out: &[f32], want_chw: &[f32], c: usize, hw: usize) {
        let want = chw_to_hwc(want_chw, c, hw);
        for (g, w) in out.iter().zip(&want) {
            assert!((g - w).abs() <= 2e-6 * w.abs().max(1.0), "{g} vs {w}");
        }
    }

    #[test]
    fn matches_torch_bicubic_upsampling() {
        let x = chw_to_hwc(&INPUT_CHW, 2, 9);
        let out = bicubic_resize_hwc(&x, (3, 3), 2, (5, 4));
        assert_eq!(out.len(), 40);
        check(&out, &UP_5X4_CHW, 2, 20);
    }

    #[test]
    fn matches_torch_bicubic_downsampling() {
        let x = chw_to_hwc(&INPUT_CHW, 2, 9);
        let out = bicubic_resize_hwc(&x, (3, 3), 2, (2, 2));
        check(&out, &DOWN_2X2_CHW, 2, 4);
    }

    #[test]
    fn same_size_is_identity() {
        let x: Vec<f32> = (0..2 * 16).map(|i| (i as f32 * 0.37).cos()).collect();
        let out = bicubic_resize_hwc(&x, (4, 4), 2, (4, 4));
        for (g, w) in out.iter().zip(&x) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
}
