//! Element types: f32, bf16 and f16.

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// bfloat16 (8-bit exponent, 7-bit mantissa).
    BF16,
    /// IEEE half precision.
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// The lowercase name ("f32", "bf16", "f16").
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
        }
    }

    /// The safetensors spelling ("F32", "BF16", "F16").
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::BF16 => "BF16",
            DType::F16 => "F16",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(DType::F32),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "f16" | "float16" => Ok(DType::F16),
            other => Err(format!(
                "unknown dtype {other:?} (expected f32, bf16 or f16)"
            )),
        }
    }
}

/// A Rust element type that a tensor can hold.
pub trait WithDType: Copy + Send + Sync + bytemuck::Pod + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Convert from f32 (round to nearest even).
    fn from_f32(v: f32) -> Self;
    /// Convert to f32 (exact).
    fn to_f32(self) -> f32;
}

impl WithDType for f32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl WithDType for bf16 {
    const DTYPE: DType = DType::BF16;
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl WithDType for f16 {
    const DTYPE: DType = DType::F16;
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_are_lowercase() {
        assert_eq!(serde_json::to_string(&DType::BF16).unwrap(), "\"bf16\"");
        let d: DType = serde_json::from_str("\"f16\"").unwrap();
        assert_eq!(d, DType::F16);
        assert_eq!("F32".parse::<DType>().unwrap(), DType::F32);
        assert!("int8".parse::<DType>().is_err());
    }
}
