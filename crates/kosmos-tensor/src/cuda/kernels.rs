//! The embedded kernels: PTX compiled by `cargo xtask kernels` from `kernels/*.cu` (compute_80,
//! PTX ISA 9.0), and the sources themselves for the NVRTC fallback. One module per `.cu` file,
//! loaded lazily by [`super::CudaBackend`]; kernels are named `<op>_<dtype suffix>`.

/// One compiled `.cu` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelModule {
    /// `kernels/activation.cu`: GELU, quick GELU, bias epilogues, add/mul/scale.
    Activation,
    /// `kernels/attention.cu`: flash prefill, decode over the KV cache, KV append.
    Attention,
    /// `kernels/convert.cu`: dtype conversion, strided copy, fill.
    Convert,
    /// `kernels/embedding.cu`: token embedding with image insertion, scale and positions.
    Embedding,
    /// `kernels/layernorm.cu`: LayerNorm, residual + LayerNorm, L2 normalisation.
    LayerNorm,
    /// `kernels/sampling.cu`: argmax, top-k, top-k/top-p sampling.
    Sampling,
    /// `kernels/softmax.cu`: softmax, log-softmax, scale + mask + softmax.
    Softmax,
}

/// The shared header every source includes.
pub const COMMON_HEADER: &str = include_str!("../../../../kernels/common.cuh");

impl KernelModule {
    /// Every module, in index order.
    pub const ALL: [KernelModule; 7] = [
        KernelModule::Activation,
        KernelModule::Attention,
        KernelModule::Convert,
        KernelModule::Embedding,
        KernelModule::LayerNorm,
        KernelModule::Sampling,
        KernelModule::Softmax,
    ];

    /// Position in [`KernelModule::ALL`] (the module cache index).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The file stem (`kernels/<name>.cu`).
    pub fn name(self) -> &'static str {
        match self {
            KernelModule::Activation => "activation",
            KernelModule::Attention => "attention",
            KernelModule::Convert => "convert",
            KernelModule::Embedding => "embedding",
            KernelModule::LayerNorm => "layernorm",
            KernelModule::Sampling => "sampling",
            KernelModule::Softmax => "softmax",
        }
    }

    /// The committed PTX.
    pub fn ptx(self) -> &'static str {
        match self {
            KernelModule::Activation => include_str!("../../../../kernels/ptx/activation.ptx"),
            KernelModule::Attention => include_str!("../../../../kernels/ptx/attention.ptx"),
            KernelModule::Convert => include_str!("../../../../kernels/ptx/convert.ptx"),
            KernelModule::Embedding => include_str!("../../../../kernels/ptx/embedding.ptx"),
            KernelModule::LayerNorm => include_str!("../../../../kernels/ptx/layernorm.ptx"),
            KernelModule::Sampling => include_str!("../../../../kernels/ptx/sampling.ptx"),
            KernelModule::Softmax => include_str!("../../../../kernels/ptx/softmax.ptx"),
        }
    }

    /// The CUDA source, as in `kernels/`.
    pub fn source(self) -> &'static str {
        match self {
            KernelModule::Activation => include_str!("../../../../kernels/activation.cu"),
            KernelModule::Attention => include_str!("../../../../kernels/attention.cu"),
            KernelModule::Convert => include_str!("../../../../kernels/convert.cu"),
            KernelModule::Embedding => include_str!("../../../../kernels/embedding.cu"),
            KernelModule::LayerNorm => include_str!("../../../../kernels/layernorm.cu"),
            KernelModule::Sampling => include_str!("../../../../kernels/sampling.cu"),
            KernelModule::Softmax => include_str!("../../../../kernels/softmax.cu"),
        }
    }

    /// The source with the header inlined in place of `#include "common.cuh"` (NVRTC gets one
    /// self-contained string and needs no include path).
    pub fn nvrtc_source(self) -> String {
        self.source()
            .replace("#include \"common.cuh\"", COMMON_HEADER)
    }
}

/// A kernel: its module and its base name (the dtype suffix is appended for typed kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    /// The module holding it.
    pub module: KernelModule,
    /// The `extern "C"` name without the dtype suffix.
    pub name: &'static str,
    /// Whether there is one instance per dtype (`<name>_f32`, `_bf16`, `_f16`).
    pub typed: bool,
}

const fn typed(module: KernelModule, name: &'static str) -> Kernel {
    Kernel {
        module,
        name,
        typed: true,
    }
}

/// Every kernel the Rust side launches (checked against the PTX by a unit test).
pub mod names {
    use super::{typed, Kernel, KernelModule as M};

    pub const GELU_ERF: Kernel = typed(M::Activation, "gelu_erf");
    pub const QUICK_GELU: Kernel = typed(M::Activation, "quick_gelu");
    pub const BIAS_ACT: Kernel = typed(M::Activation, "bias_act");
    pub const BIAS_RESIDUAL: Kernel = typed(M::Activation, "bias_residual");
    pub const ADD: Kernel = typed(M::Activation, "add");
    pub const MUL: Kernel = typed(M::Activation, "mul");
    pub const SCALE: Kernel = typed(M::Activation, "scale");
    pub const FLASH_ATTN: Kernel = typed(M::Attention, "flash_attn");
    pub const DECODE_ATTN: Kernel = typed(M::Attention, "decode_attn");
    pub const KV_APPEND: Kernel = typed(M::Attention, "kv_append");
    pub const COPY_STRIDED: Kernel = typed(M::Convert, "copy_strided");
    pub const FILL: Kernel = typed(M::Convert, "fill");
    /// `convert_<from>_<to>`: typed by the source; the launcher appends the target suffix.
    pub const CONVERT: Kernel = typed(M::Convert, "convert");
    pub const EMBED_TOKENS: Kernel = typed(M::Embedding, "embed_tokens");
    pub const COUNTER_ADD: Kernel = Kernel {
        module: M::Embedding,
        name: "counter_add",
        typed: false,
    };
    pub const LAYER_NORM: Kernel = typed(M::LayerNorm, "layer_norm");
    pub const ADD_LAYER_NORM: Kernel = typed(M::LayerNorm, "add_layer_norm");
    pub const L2_NORMALIZE: Kernel = typed(M::LayerNorm, "l2_normalize");
    pub const ARGMAX: Kernel = typed(M::Sampling, "argmax");
    pub const TOP_K: Kernel = typed(M::Sampling, "top_k");
    pub const SAMPLE_TOP_K: Kernel = typed(M::Sampling, "sample_top_k");
    pub const SOFTMAX: Kernel = typed(M::Softmax, "softmax");
    pub const LOG_SOFTMAX: Kernel = typed(M::Softmax, "log_softmax");
    pub const SCALE_MASK_SOFTMAX: Kernel = typed(M::Softmax, "scale_mask_softmax");

    /// All of the above.
    pub const ALL: &[Kernel] = &[
        GELU_ERF,
        QUICK_GELU,
        BIAS_ACT,
        BIAS_RESIDUAL,
        ADD,
        MUL,
        SCALE,
        FLASH_ATTN,
        DECODE_ATTN,
        KV_APPEND,
        COPY_STRIDED,
        FILL,
        CONVERT,
        EMBED_TOKENS,
        COUNTER_ADD,
        LAYER_NORM,
        ADD_LAYER_NORM,
        L2_NORMALIZE,
        ARGMAX,
        TOP_K,
        SAMPLE_TOP_K,
        SOFTMAX,
        LOG_SOFTMAX,
        SCALE_MASK_SOFTMAX,
    ];
}

/// The dtype suffixes of typed kernels.
pub const SUFFIXES: [&str; 3] = ["f32", "bf16", "f16"];

#[cfg(test)]
mod tests {
    use super::*;

    /// `.entry <name>(` lines of a PTX module.
    fn entries(ptx: &str) -> Vec<String> {
        ptx.lines()
            .filter_map(|l| {
                let rest = l.trim().strip_prefix(".visible .entry ")?;
                Some(rest.split('(').next()?.trim().to_string())
            })
            .collect()
    }

    #[test]
    fn every_launched_kernel_is_in_its_ptx() {
        for k in names::ALL {
            let have = entries(k.module.ptx());
            let wanted: Vec<String> = if k.name == "convert" {
                SUFFIXES
                    .iter()
                    .flat_map(|a| SUFFIXES.iter().map(move |b| format!("convert_{a}_{b}")))
                    .collect()
            } else if k.typed {
                SUFFIXES.iter().map(|s| format!("{}_{s}", k.name)).collect()
            } else {
                vec![k.name.to_string()]
            };
            for w in wanted {
                assert!(
                    have.contains(&w),
                    "{w} missing from {}.ptx",
                    k.module.name()
                );
            }
        }
    }

    #[test]
    fn ptx_is_isa_9_0_for_sm_80() {
        for m in KernelModule::ALL {
            let ptx = m.ptx();
            assert!(
                ptx.lines().any(|l| l.trim() == ".version 9.0"),
                "{}",
                m.name()
            );
            assert!(
                ptx.lines().any(|l| l.trim() == ".target sm_80"),
                "{}",
                m.name()
            );
        }
    }

    #[test]
    fn nvrtc_sources_are_self_contained() {
        for (i, m) in KernelModule::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
            let src = m.nvrtc_source();
            assert!(
                !src.contains("#include"),
                "{} still includes a file",
                m.name()
            );
            assert!(src.contains("KOSMOS_FOR_EACH_DTYPE"), "{}", m.name());
        }
    }
}
