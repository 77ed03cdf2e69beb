//! Runtime SIMD selection.
//!
//! The level is detected once per process. `KOSMOS_SIMD=scalar|avx2|avx512|avx512bf16` caps it (a level
//! the CPU lacks falls back to the best one it has), and [`with_isa`] overrides it for one closure on the
//! calling thread, which is how the tests run every path on one machine. Ops read [`Isa::current`] on the
//! calling thread and pass it down to their rayon workers.

pub(crate) mod dot;
pub(crate) mod erf;
pub(crate) mod exp;
pub(crate) mod int8;
#[cfg(target_arch = "x86_64")]
pub(crate) mod panel_gemm;

use std::cell::Cell;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// A SIMD instruction-set level, from the slowest to the fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust (the compiler may still use SSE2).
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW/VL (+ F16C).
    Avx512,
    /// AVX-512 plus the BF16 dot-product instructions (`vdpbf16ps`).
    Avx512Bf16,
}

thread_local! {
    static OVERRIDE: Cell<Option<Isa>> = const { Cell::new(None) };
}

impl Isa {
    /// Every level, slowest first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16];

    /// The level's name as accepted by `KOSMOS_SIMD`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
        }
    }

    /// Whether this CPU can run the level.
    pub fn is_supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            // POPCNT: every AVX-512 CPU has it; checked because the erf GELU's range sort uses it.
            let avx512 = avx2
                && is_x86_feature_detected!("popcnt")
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl");
            match self {
                Isa::Scalar => true,
                Isa::Avx2 => avx2,
                Isa::Avx512 => avx512,
                Isa::Avx512Bf16 => avx512 && is_x86_feature_detected!("avx512bf16"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Scalar
        }
    }

    /// The best level this CPU supports.
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            Isa::ALL
                .iter()
                .rev()
                .copied()
                .find(|i| i.is_supported())
                .unwrap_or(Isa::Scalar)
        })
    }

    /// Every level this CPU supports, slowest first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .iter()
            .copied()
            .filter(|i| i.is_supported())
            .collect()
    }

    /// The level ops use now on this thread: the [`with_isa`] override, else `KOSMOS_SIMD` (capped to
    /// what the CPU supports), else [`Isa::detect`].
    pub fn current() -> Isa {
        if let Some(isa) = OVERRIDE.with(|o| o.get()) {
            return isa;
        }
        static FROM_ENV: OnceLock<Isa> = OnceLock::new();
        *FROM_ENV.get_or_init(|| {
            let best = Isa::detect();
            match std::env::var("KOSMOS_SIMD") {
                Ok(v) => match v.parse::<Isa>() {
                    Ok(req) if req.is_supported() => req,
                    _ => best,
                },
                Err(_) => best,
            }
        })
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = Error;
    fn from_str(s: &str) -> Result<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(Isa::Scalar),
            "avx2" => Ok(Isa::Avx2),
            "avx512" => Ok(Isa::Avx512),
            "avx512bf16" | "avx512_bf16" => Ok(Isa::Avx512Bf16),
            _ => Err(Error::UnknownSimd {
                name: s.to_string(),
            }),
        }
    }
}

/// Run `f` with ops on this thread using `isa`. Errors if the CPU does not support it.
///
/// ```
/// use kosmos_tensor::simd::{with_isa, Isa};
/// let level = with_isa(Isa::Scalar, Isa::current)?;
/// assert_eq!(level, Isa::Scalar);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn with_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> Result<R> {
    if !isa.is_supported() {
        return Err(Error::UnsupportedSimd { name: isa.name() });
    }
    struct Restore(Option<Isa>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(OVERRIDE.with(|o| o.replace(Some(isa))));
    Ok(f())
}

/// A xorshift64 generator from `seed` (non-zero), for the unit tests' inputs.
#[cfg(test)]
pub(crate) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_override_nests() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>().unwrap(), isa);
        }
        assert!(matches!(
            "sse9".parse::<Isa>(),
            Err(Error::UnknownSimd { .. })
        ));
        assert!(Isa::available().contains(&Isa::Scalar));
        assert!(Isa::detect().is_supported());
        let outer = Isa::current();
        let seen = with_isa(Isa::Scalar, || {
            let inner = with_isa(Isa::detect(), Isa::current).unwrap();
            (Isa::current(), inner)
        })
        .unwrap();
        assert_eq!(seen, (Isa::Scalar, Isa::detect()));
        assert_eq!(Isa::current(), outer);
        for isa in Isa::ALL {
            if !isa.is_supported() {
                assert!(matches!(
                    with_isa(isa, || ()),
                    Err(Error::UnsupportedSimd { .. })
                ));
            }
        }
    }
}
