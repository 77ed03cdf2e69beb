//! Bounding boxes ↔ `<patch_index_XXXX>` tokens on the 32 × 32 grid
//! (HF `coordinate_to_patch_index`, `patch_index_to_coordinate`).

use crate::tokenizer::{patch_index_token, NUM_PATCH_INDEX_TOKENS};

/// Patches per side of the real model's grid (√1024).
pub const NUM_PATCHES_PER_SIDE: usize = 32;

/// One box given to the processor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BoxSpec {
    /// Normalised `(x1, y1, x2, y2)`: upper-left and lower-right corners in `[0, 1]`,
    /// with `x2 > x1` and `y2 > y1` (HF: a tuple of 4 floats).
    Normalized([f64; 4]),
    /// Already computed `(upper_left, lower_right)` patch indices, each below 1024
    /// (HF: a tuple of 2 ints).
    PatchIndices(u32, u32),
}

impl From<[f64; 4]> for BoxSpec {
    fn from(b: [f64; 4]) -> Self {
        BoxSpec::Normalized(b)
    }
}

impl From<(u32, u32)> for BoxSpec {
    fn from((a, b): (u32, u32)) -> Self {
        BoxSpec::PatchIndices(a, b)
    }
}

/// A box that cannot be encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BoxError {
    /// The number of box entries differs from the number of `<phrase>…</phrase>` pairs.
    #[error(
        "the text has {phrases} <phrase>...</phrase> pairs but {boxes} box entries were given"
    )]
    CountMismatch {
        /// Phrases found with `<phrase>.+?</phrase>`.
        phrases: usize,
        /// Box entries given.
        boxes: usize,
    },
    /// `x2 <= x1` or `y2 <= y1` (or a NaN). HF raises this one too.
    #[error("box {bbox:?} must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1")]
    NotIncreasing {
        /// The box.
        bbox: [f64; 4],
    },
    /// A coordinate outside `[0, 1]`.
    #[error("box {bbox:?} has a coordinate outside [0, 1]")]
    OutOfRange {
        /// The box.
        bbox: [f64; 4],
    },
    /// A patch index of 1024 or more.
    #[error("patch index {index} is out of range (the grid has {num_patches} patches)")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// Number of patch-index tokens.
        num_patches: usize,
    },
}

/// HF `coordinate_to_patch_index`: the patches holding the upper-left and lower-right
/// corners, `floor(x1·n)`, `floor(y1·n)`, `ceil(x2·n − 1)`, `ceil(y2·n − 1)`, as `y·n + x`.
///
/// ```
/// use kosmos_processor::boxes::coordinate_to_patch_index;
/// assert_eq!(coordinate_to_patch_index([0.0, 0.0, 1.0, 1.0], 32).unwrap(), (0, 1023));
/// assert_eq!(coordinate_to_patch_index([0.1, 0.2, 0.3, 0.4], 32).unwrap(), (195, 393));
/// assert!(coordinate_to_patch_index([0.5, 0.0, 0.5, 1.0], 32).is_err());
/// ```
pub fn coordinate_to_patch_index(
    bbox: [f64; 4],
    num_patches_per_side: usize,
) -> Result<(usize, usize), BoxError> {
    let [x1, y1, x2, y2] = bbox;
    if !(x2 > x1 && y2 > y1) {
        return Err(BoxError::NotIncreasing { bbox });
    }
    if !bbox.iter().all(|v| (0.0..=1.0).contains(v)) {
        return Err(BoxError::OutOfRange { bbox });
    }
    let n = num_patches_per_side as f64;
    // In range, all four values are in [0, n − 1].
    let ul_x = (x1 * n).floor() as usize;
    let ul_y = (y1 * n).floor() as usize;
    let lr_x = (x2 * n - 1.0).ceil() as usize;
    let lr_y = (y2 * n - 1.0).ceil() as usize;
    Ok((
        ul_y * num_patches_per_side + ul_x,
        lr_y * num_patches_per_side + lr_x,
    ))
}

/// HF `patch_index_to_coordinate`: the normalised box of a patch pair. Cell edges when the
/// indices are equal or share a row or column, cell centres otherwise.
///
/// ```
/// use kosmos_processor::boxes::patch_index_to_coordinate;
/// assert_eq!(patch_index_to_coordinate(44, 863, 32), [0.390625, 0.046875, 0.984375, 0.828125]);
/// assert_eq!(patch_index_to_coordinate(5, 5, 32), [0.15625, 0.0, 0.1875, 0.03125]);
/// ```
pub fn patch_index_to_coordinate(
    ul_idx: u64,
    lr_idx: u64,
    num_patches_per_side: usize,
) -> [f64; 4] {
    let n = num_patches_per_side as u64;
    let cell = 1.0 / num_patches_per_side as f64;
    let (ul_x, ul_y) = ((ul_idx % n) as f64, (ul_idx / n) as f64);
    let (lr_x, lr_y) = ((lr_idx % n) as f64, (lr_idx / n) as f64);
    cell_box(
        ul_idx == lr_idx,
        ul_idx % n == lr_idx % n,
        ul_idx / n == lr_idx / n,
        [ul_x, ul_y, lr_x, lr_y],
        cell,
    )
}

/// The shared arithmetic of `patch_index_to_coordinate`, in Python's operation order.
pub(crate) fn cell_box(
    same_idx: bool,
    same_x: bool,
    same_y: bool,
    [ul_x, ul_y, lr_x, lr_y]: [f64; 4],
    cell: f64,
) -> [f64; 4] {
    if same_idx || same_x || same_y {
        [
            ul_x * cell,
            ul_y * cell,
            lr_x * cell + cell,
            lr_y * cell + cell,
        ]
    } else {
        let h = cell / 2.0;
        [
            ul_x * cell + h,
            ul_y * cell + h,
            lr_x * cell + h,
            lr_y * cell + h,
        ]
    }
}

/// The pair of patch indices for a box spec, validated.
pub fn box_to_patch_indices(spec: &BoxSpec) -> Result<(usize, usize), BoxError> {
    match *spec {
        BoxSpec::Normalized(b) => coordinate_to_patch_index(b, NUM_PATCHES_PER_SIDE),
        BoxSpec::PatchIndices(a, b) => {
            for idx in [a, b] {
                if idx as usize >= NUM_PATCH_INDEX_TOKENS {
                    return Err(BoxError::IndexOutOfRange {
                        index: u64::from(idx),
                        num_patches: NUM_PATCH_INDEX_TOKENS,
                    });
                }
            }
            Ok((a as usize, b as usize))
        }
    }
}

/// The two `<patch_index_XXXX>` tokens of a box (HF `_convert_bbox_to_patch_index_tokens`).
///
/// ```
/// use kosmos_processor::boxes::{box_to_patch_tokens, BoxSpec};
/// let (a, b) = box_to_patch_tokens(&BoxSpec::Normalized([0.390625, 0.046875, 0.984375, 0.828125])).unwrap();
/// assert_eq!((a.as_str(), b.as_str()), ("<patch_index_0044>", "<patch_index_0863>"));
/// ```
pub fn box_to_patch_tokens(spec: &BoxSpec) -> Result<(String, String), BoxError> {
    let (a, b) = box_to_patch_indices(spec)?;
    Ok((patch_index_token(a), patch_index_token(b)))
}

/// Parses `<patch_index_XXXX>` (any number of ASCII digits) to its index, if below 1024.
pub fn parse_patch_index_token(token: &str) -> Option<usize> {
    let digits = token.strip_prefix("<patch_index_")?.strip_suffix('>')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: usize = digits.parse().ok()?;
    (v < NUM_PATCH_INDEX_TOKENS).then_some(v)
}

/// The normalised box of two `<patch_index_XXXX>` tokens (upper-left, lower-right).
///
/// ```
/// use kosmos_processor::boxes::patch_tokens_to_box;
/// let b = patch_tokens_to_box("<patch_index_0005>", "<patch_index_0911>").unwrap();
/// assert_eq!(b, [0.171875, 0.015625, 0.484375, 0.890625]);
/// ```
pub fn patch_tokens_to_box(upper_left: &str, lower_right: &str) -> Option<[f64; 4]> {
    let a = parse_patch_index_token(upper_left)?;
    let b = parse_patch_index_token(lower_right)?;
    Some(patch_index_to_coordinate(
        a as u64,
        b as u64,
        NUM_PATCHES_PER_SIDE,
    ))
}

/// A box in pixels of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PixelBox {
    /// Left edge.
    pub x1: u32,
    /// Top edge.
    pub y1: u32,
    /// Right edge.
    pub x2: u32,
    /// Bottom edge.
    pub y2: u32,
}

/// Scales a normalised box to a `width × height` image as the HF and Microsoft demos do
/// (`int(x · width)`, truncation), clamping to the image.
///
/// ```
/// use kosmos_processor::boxes::{to_pixel_box, PixelBox};
/// let b = to_pixel_box([0.390625, 0.046875, 0.984375, 0.828125], 1024, 768);
/// assert_eq!(b, PixelBox { x1: 400, y1: 36, x2: 1008, y2: 636 });
/// ```
pub fn to_pixel_box(bbox: [f64; 4], width: u32, height: u32) -> PixelBox {
    let scale = |v: f64, size: u32| -> u32 {
        let p = v * f64::from(size);
        if p.is_nan() {
            0
        } else {
            p.clamp(0.0, f64::from(size)) as u32
        }
    };
    PixelBox {
        x1: scale(bbox[0], width),
        y1: scale(bbox[1], height),
        x2: scale(bbox[2], width),
        y2: scale(bbox[3], height),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_examples() {
        let n = NUM_PATCHES_PER_SIDE;
        assert_eq!(
            coordinate_to_patch_index([0.390625, 0.046875, 0.984375, 0.828125], n),
            Ok((44, 863))
        );
        assert_eq!(
            patch_index_to_coordinate(5, 911, n),
            [0.171875, 0.015625, 0.484375, 0.890625]
        );
        assert_eq!(
            patch_index_to_coordinate(1, 40, n),
            [0.046875, 0.015625, 0.265625, 0.046875]
        );
        assert_eq!(
            patch_index_to_coordinate(500, 500, n),
            [0.625, 0.46875, 0.65625, 0.5]
        );
    }

    #[test]
    fn validation() {
        let n = NUM_PATCHES_PER_SIDE;
        assert!(matches!(
            coordinate_to_patch_index([0.2, 0.1, 0.1, 0.5], n),
            Err(BoxError::NotIncreasing { .. })
        ));
        assert!(matches!(
            coordinate_to_patch_index([0.0, 0.0, f64::NAN, 0.5], n),
            Err(BoxError::NotIncreasing { .. })
        ));
        assert!(matches!(
            coordinate_to_patch_index([-0.1, 0.0, 0.5, 0.5], n),
            Err(BoxError::OutOfRange { .. })
        ));
        assert!(matches!(
            coordinate_to_patch_index([0.1, 0.0, 1.5, 0.5], n),
            Err(BoxError::OutOfRange { .. })
        ));
        assert!(matches!(
            box_to_patch_indices(&BoxSpec::PatchIndices(3, 1024)),
            Err(BoxError::IndexOutOfRange { index: 1024, .. })
        ));
        assert_eq!(
            box_to_patch_indices(&BoxSpec::PatchIndices(79, 1016)),
            Ok((79, 1016))
        );
    }

    #[test]
    fn token_parsing() {
        assert_eq!(parse_patch_index_token("<patch_index_0044>"), Some(44));
        assert_eq!(parse_patch_index_token("<patch_index_1024>"), None);
        assert_eq!(parse_patch_index_token("<patch_index_>"), None);
        assert_eq!(parse_patch_index_token("<patch_index_+1>"), None);
        assert_eq!(patch_tokens_to_box("<phrase>", "<patch_index_0001>"), None);
    }
}
