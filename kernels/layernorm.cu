// Row-wise normalisations over the last dim: LayerNorm (torch.nn.LayerNorm: biased variance, two
// passes, f32 accumulation), LayerNorm fused with the residual add, and L2 normalisation
// (torch.nn.functional.normalize). One block per row; any row length.
#include "common.cuh"

/// y = (x - mean) / sqrt(var + eps) * w + b over rows of `cols`.
template <typename T>
__device__ __forceinline__ void layer_norm_impl(const T* __restrict__ x, const T* __restrict__ w,
                                                const T* __restrict__ b, T* __restrict__ y,
                                                int cols, float eps) {
    __shared__ float scratch[32];
    const long long row = blockIdx.x;
    const T* xr = x + row * cols;
    T* yr = y + row * cols;
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) s += to_f32(xr[i]);
    const float mean = block_sum(s, scratch) / (float)cols;
    float q = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float d = to_f32(xr[i]) - mean;
        q += d * d;
    }
    const float var = block_sum(q, scratch) / (float)cols;
    const float rstd = 1.0f / sqrtf(var + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        yr[i] = from_f32<T>((to_f32(xr[i]) - mean) * rstd * to_f32(w[i]) + to_f32(b[i]));
    }
}

/// sum = x + residual (rounded to T and written), y = layer_norm(sum). `sum` may alias `x` or
/// `residual` (each element is read before it is written, by the same thread).
template <typename T>
__device__ __forceinline__ void add_layer_norm_impl(const T* x, const T* residual,
                                                    const T* __restrict__ w,
                                                    const T* __restrict__ b, T* sum,
                                                    T* __restrict__ y, int cols, float eps) {
    __shared__ float scratch[32];
    const long long off = (long long)blockIdx.x * cols;
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const T v = from_f32<T>(to_f32(x[off + i]) + to_f32(residual[off + i]));
        sum[off + i] = v;
        s += to_f32(v);
    }
    const float mean = block_sum(s, scratch) / (float)cols;
    float q = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float d = to_f32(sum[off + i]) - mean;
        q += d * d;
    }
    const float var = block_sum(q, scratch) / (float)cols;
    const float rstd = 1.0f / sqrtf(var + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        y[off + i] =
            from_f32<T>((to_f32(sum[off + i]) - mean) * rstd * to_f32(w[i]) + to_f32(b[i]));
    }
}

/// y = x / max(||x||_2, eps).
template <typename T>
__device__ __forceinline__ void l2_normalize_impl(const T* __restrict__ x, T* __restrict__ y,
                                                  int cols, float eps) {
    __shared__ float scratch[32];
    const long long off = (long long)blockIdx.x * cols;
    float q = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float v = to_f32(x[off + i]);
        q += v * v;
    }
    const float norm = fmaxf(sqrtf(block_sum(q, scratch)), eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        y[off + i] = from_f32<T>(to_f32(x[off + i]) / norm);
    }
}

#define KOSMOS_NORM_KERNELS(S, T)                                                              \
    extern "C" __global__ void layer_norm_##S(const T* x, const T* w, const T* b, T* y,        \
                                              int cols, float eps) {                           \
        layer_norm_impl<T>(x, w, b, y, cols, eps);                                             \
    }                                                                                          \
    extern "C" __global__ void add_layer_norm_##S(const T* x, const T* residual, const T* w,   \
                                                  const T* b, T* sum, T* y, int cols,          \
                                                  float eps) {                                 \
        add_layer_norm_impl<T>(x, residual, w, b, sum, y, cols, eps);                          \
    }                                                                                          \
    extern "C" __global__ void l2_normalize_##S(const T* x, T* y, int cols, float eps) {       \
        l2_normalize_impl<T>(x, y, cols, eps);                                                 \
    }

KOSMOS_FOR_EACH_DTYPE(KOSMOS_NORM_KERNELS)
