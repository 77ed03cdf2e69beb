// Shared helpers for every kosmos2-rs kernel: element types, conversions, reductions and the
// per-dtype instantiation macro.
//
// The kernels are compiled to PTX (compute_80, PTX ISA 9.0) by `cargo xtask kernels` and, when the
// driver rejects that PTX, compiled again at run time by NVRTC from the same sources (the runtime
// inlines this header in place of the include line). So this header includes nothing: bf16 and f16 are
// plain 16-bit structs converted with PTX `cvt` instructions, which both compilers accept.
// `KOSMOS_EMU` (never set for nvcc or NVRTC) swaps the `cvt`s for host code so that kernels/emu can
// run the kernels on a CPU, thread by thread.
#pragma once

// ---- element types -------------------------------------------------------------------------------

/// bfloat16 storage (1 sign, 8 exponent, 7 mantissa bits), as `half::bf16` on the host.
struct bf16_t {
    unsigned short bits;
};

/// IEEE binary16 storage, as `half::f16` on the host.
struct f16_t {
    unsigned short bits;
};

__device__ __forceinline__ float to_f32(float x) { return x; }

__device__ __forceinline__ float to_f32(bf16_t x) {
    return __uint_as_float(((unsigned int)x.bits) << 16);
}

__device__ __forceinline__ float to_f32(f16_t x) {
#ifdef KOSMOS_EMU
    return kosmos_emu_f16_to_f32(x.bits);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
#endif
}

template <typename T>
__device__ __forceinline__ T from_f32(float x);

template <>
__device__ __forceinline__ float from_f32<float>(float x) {
    return x;
}

/// Round to nearest even (NaN stays NaN), as `half::bf16::from_f32`.
template <>
__device__ __forceinline__ bf16_t from_f32<bf16_t>(float x) {
    bf16_t r;
#ifdef KOSMOS_EMU
    r.bits = kosmos_emu_f32_to_bf16(x);
#else
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
#endif
    return r;
}

/// Round to nearest even, overflow to infinity, as `half::f16::from_f32`.
template <>
__device__ __forceinline__ f16_t from_f32<f16_t>(float x) {
    f16_t r;
#ifdef KOSMOS_EMU
    r.bits = kosmos_emu_f32_to_f16(x);
#else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
#endif
    return r;
}

/// `float(value)` rounded through `T`: what storing in `T` and reading back gives.
template <typename T>
__device__ __forceinline__ float round_through(float x) {
    return to_f32(from_f32<T>(x));
}

// ---- constants -----------------------------------------------------------------------------------

/// torch.finfo(torch.float32).min, the additive mask value HF uses.
#define KOSMOS_NEG_MIN (-3.4028234663852886e38f)
#define KOSMOS_INF (__int_as_float(0x7f800000))

// ---- reductions ----------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/// Sum over the block (blockDim.x a multiple of 32, at most 1024). Every thread gets the result.
/// `scratch` is 32 floats of shared memory; the call synchronises the block twice.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous reduction
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

/// Max over the block; same contract as `block_sum`.
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : -KOSMOS_INF;
    return warp_max(v);
}

/// Total-order key of an f32, as Rust's `f32::total_cmp` after adding +0.0 (so -0.0 == +0.0):
/// larger key = larger value, NaN above +inf. Used by argmax and top-k.
__device__ __forceinline__ unsigned int order_key(float v) {
    // -0.0 -> +0.0; NaN keeps its sign bit (GPU arithmetic would canonicalise it, so no `v + 0.0f`).
    unsigned int b = (v == 0.0f) ? 0u : __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

/// Inverse of `order_key`.
__device__ __forceinline__ float key_value(unsigned int k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// ---- instantiation ------------------------------------------------------------------------------

/// `M(suffix, type)` once per element type. Kernels are `extern "C"` and named `<op>_<suffix>`.
#define KOSMOS_FOR_EACH_DTYPE(M) M(f32, float) M(bf16, bf16_t) M(f16, f16_t)
