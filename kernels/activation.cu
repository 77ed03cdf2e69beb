// Elementwise kernels in f32 arithmetic: exact GELU (torch nn.GELU(), erf form), CLIP's quick GELU,
// the GEMM epilogues (bias, bias + activation, bias + residual), and the tensor-level binary ops
// (add / mul with the right operand broadcast over leading dims, scale by an f32).
// Grid-stride loops over `n` elements.
#include "common.cuh"

#define KOSMOS_ACT_NONE 0
#define KOSMOS_ACT_GELU_ERF 1
#define KOSMOS_ACT_QUICK_GELU 2

/// 0.5 x (1 + erf(x / sqrt 2)), in the CPU backend's operation order.
__device__ __forceinline__ float gelu_erf_f(float v) {
    return v * 0.5f * (1.0f + erff(v * 0.70710678118654752440f));
}

/// x * sigmoid(1.702 x), in the CPU backend's operation order.
__device__ __forceinline__ float quick_gelu_f(float v) {
    return v * (1.0f / (1.0f + expf(-1.702f * v)));
}

__device__ __forceinline__ float apply_act(float v, int act) {
    if (act == KOSMOS_ACT_GELU_ERF) return gelu_erf_f(v);
    if (act == KOSMOS_ACT_QUICK_GELU) return quick_gelu_f(v);
    return v;
}

#define KOSMOS_GRID_STRIDE(i, n)                                                               \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);              \
         i += (long long)gridDim.x * blockDim.x)

#define KOSMOS_ACT_KERNELS(S, T)                                                               \
    extern "C" __global__ void gelu_erf_##S(const T* x, T* y, long long n) {                   \
        KOSMOS_GRID_STRIDE(i, n) y[i] = from_f32<T>(gelu_erf_f(to_f32(x[i])));                 \
    }                                                                                          \
    extern "C" __global__ void quick_gelu_##S(const T* x, T* y, long long n) {                 \
        KOSMOS_GRID_STRIDE(i, n) y[i] = from_f32<T>(quick_gelu_f(to_f32(x[i])));               \
    }                                                                                          \
    /* y = act(x + bias[i % cols]); x is [rows, cols]; y may alias x. */                        \
    extern "C" __global__ void bias_act_##S(const T* x, const T* bias, T* y, long long n,      \
                                            int cols, int act) {                               \
        KOSMOS_GRID_STRIDE(i, n) {                                                             \
            y[i] = from_f32<T>(apply_act(to_f32(x[i]) + to_f32(bias[i % cols]), act));         \
        }                                                                                      \
    }                                                                                          \
    /* y = residual + (x + bias[i % cols]); bias may be null; y may alias x or residual. */     \
    extern "C" __global__ void bias_residual_##S(const T* x, const T* bias, const T* residual,  \
                                                 T* y, long long n, int cols) {                \
        KOSMOS_GRID_STRIDE(i, n) {                                                             \
            const float t = bias ? round_through<T>(to_f32(x[i]) + to_f32(bias[i % cols]))     \
                                 : to_f32(x[i]);                                               \
            y[i] = from_f32<T>(to_f32(residual[i]) + t);                                       \
        }                                                                                      \
    }                                                                                          \
    /* y = a + b[i % b_len] (b_len divides n). */                                              \
    extern "C" __global__ void add_##S(const T* a, const T* b, T* y, long long n,              \
                                       long long b_len) {                                      \
        KOSMOS_GRID_STRIDE(i, n) y[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i % b_len]));      \
    }                                                                                          \
    /* y = a * b[i % b_len]. */                                                                \
    extern "C" __global__ void mul_##S(const T* a, const T* b, T* y, long long n,              \
                                       long long b_len) {                                      \
        KOSMOS_GRID_STRIDE(i, n) y[i] = from_f32<T>(to_f32(a[i]) * to_f32(b[i % b_len]));      \
    }                                                                                          \
    /* y = x * s (one f32 multiply). */                                                        \
    extern "C" __global__ void scale_##S(const T* x, T* y, long long n, float s) {             \
        KOSMOS_GRID_STRIDE(i, n) y[i] = from_f32<T>(to_f32(x[i]) * s);                         \
    }

KOSMOS_FOR_EACH_DTYPE(KOSMOS_ACT_KERNELS)
