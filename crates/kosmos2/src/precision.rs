//! How a checkpoint's weights are held in memory: a float dtype, or int8 text linears.

use std::fmt;
use std::str::FromStr;

use kosmos_tensor::DType;

/// The weight precision a model is loaded at.
///
/// `F32`/`BF16`/`F16` convert every weight to that dtype (activations stay f32). `Int8` is
/// weight-only int8 quantisation of the text decoder's linear layers and of `lm_head`
/// (per-output-channel symmetric, [`kosmos_tensor::quant::Int8Weight`]) with every other weight
/// in f32: quantised at load time from a float checkpoint, or read as is from a checkpoint written
/// by [`crate::quantize_checkpoint`] (`kosmos2 quantize`). Such a checkpoint loads its int8
/// weights as int8 at any precision. `Int8Bf16` quantises the same weights to the same int8 values
/// and holds every other weight in bf16: the vision tower and the projection then run as at
/// `BF16` (the packed bf16 GEMM on an AVX512_BF16 CPU), so the image encode costs what it costs at
/// `BF16` instead of at `F32`.
///
/// A [`DType`] converts into the matching precision, so `load(dir, &device, DType::BF16)` works.
///
/// ```
/// use kosmos2::{DType, Precision};
/// let p: Precision = "int8".parse()?;
/// assert_eq!(p, Precision::Int8);
/// assert_eq!(p.dtype(), DType::F32); // the non-quantised weights
/// let q: Precision = "int8-bf16".parse()?;
/// assert_eq!((q.dtype(), q.quantizes_int8()), (DType::BF16, true));
/// assert_eq!(Precision::from(DType::BF16).to_string(), "bf16");
/// assert!("int4".parse::<Precision>().is_err());
/// # Ok::<(), kosmos2::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// Every weight in f32.
    #[default]
    F32,
    /// Every weight in bf16.
    BF16,
    /// Every weight in f16.
    F16,
    /// Text linears and `lm_head` in int8 with f32 scales; everything else in f32.
    Int8,
    /// Text linears and `lm_head` in int8 with f32 scales (the same values as `Int8`); everything
    /// else in bf16.
    Int8Bf16,
}

impl Precision {
    /// The dtype of the weights that are not quantised.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 | Precision::Int8 => DType::F32,
            Precision::BF16 | Precision::Int8Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    /// Whether float text linears are quantised to int8 on load.
    pub fn quantizes_int8(self) -> bool {
        matches!(self, Precision::Int8 | Precision::Int8Bf16)
    }

    /// The lowercase name (`f32`, `bf16`, `f16`, `int8`, `int8-bf16`).
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::BF16 => "bf16",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
            Precision::Int8Bf16 => "int8-bf16",
        }
    }
}

impl From<DType> for Precision {
    fn from(d: DType) -> Self {
        match d {
            DType::F32 => Precision::F32,
            DType::BF16 => Precision::BF16,
            DType::F16 => Precision::F16,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "int8" | "i8" => Ok(Precision::Int8),
            "int8-bf16" | "int8_bf16" => Ok(Precision::Int8Bf16),
            other => other.parse::<DType>().map(Precision::from).map_err(|_| {
                crate::Error::InvalidInput(format!(
                    "unknown precision {s:?} (expected f32, bf16, f16, int8 or int8-bf16)"
                ))
            }),
        }
    }
}
