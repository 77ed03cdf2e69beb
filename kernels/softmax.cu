// Row-wise softmax and log-softmax over the last dim (max-subtracted, f32 accumulation), and the
// attention-probabilities form softmax(x * scale + mask). A row that is entirely -inf gives zeros
// (softmax) or is left as it is (log-softmax), as the CPU backend. One block per row.
#include "common.cuh"

/// y = softmax(x * scale + mask_row) for this block's row of `cols`; `mask_row` (f32, may be null)
/// is the additive mask row for it (see `scale_mask_softmax_*`). Plain softmax: scale 1, no mask.
template <typename T>
__device__ __forceinline__ void softmax_impl(const T* __restrict__ x, T* __restrict__ y,
                                             const float* __restrict__ mask_row, int cols,
                                             float scale) {
    __shared__ float scratch[32];
    const long long off = (long long)blockIdx.x * cols;
    float m = -KOSMOS_INF;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float v = to_f32(x[off + i]) * scale;
        if (mask_row) v += mask_row[i];
        m = fmaxf(m, v);
    }
    m = block_max(m, scratch);
    if (m == -KOSMOS_INF) {
        for (int i = threadIdx.x; i < cols; i += blockDim.x) y[off + i] = from_f32<T>(0.0f);
        return;
    }
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float v = to_f32(x[off + i]) * scale;
        if (mask_row) v += mask_row[i];
        s += expf(v - m);
    }
    const float inv = 1.0f / block_sum(s, scratch);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float v = to_f32(x[off + i]) * scale;
        if (mask_row) v += mask_row[i];
        y[off + i] = from_f32<T>(expf(v - m) * inv);
    }
}

/// y = x - max - ln(sum(exp(x - max))).
template <typename T>
__device__ __forceinline__ void log_softmax_impl(const T* __restrict__ x, T* __restrict__ y,
                                                 int cols) {
    __shared__ float scratch[32];
    const long long off = (long long)blockIdx.x * cols;
    float m = -KOSMOS_INF;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, to_f32(x[off + i]));
    m = block_max(m, scratch);
    if (m == -KOSMOS_INF) {
        for (int i = threadIdx.x; i < cols; i += blockDim.x) y[off + i] = x[off + i];
        return;
    }
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) s += expf(to_f32(x[off + i]) - m);
    const float lse = logf(block_sum(s, scratch));
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        y[off + i] = from_f32<T>(to_f32(x[off + i]) - m - lse);
    }
}

// scale_mask_softmax: x is [B, H, Tq, Tk] viewed as rows of Tk; the mask is [Bm, 1, Tq, Tk] with
// Bm = 1 (mask_batch_stride = 0) or B (mask_batch_stride = Tq * Tk); rows_per_batch = H * Tq.
#define KOSMOS_SOFTMAX_KERNELS(S, T)                                                           \
    extern "C" __global__ void softmax_##S(const T* x, T* y, int cols) {                       \
        softmax_impl<T>(x, y, nullptr, cols, 1.0f);                                            \
    }                                                                                          \
    extern "C" __global__ void log_softmax_##S(const T* x, T* y, int cols) {                   \
        log_softmax_impl<T>(x, y, cols);                                                       \
    }                                                                                          \
    extern "C" __global__ void scale_mask_softmax_##S(const T* x, T* y, const float* mask,     \
                                                      int cols, float scale, int q_len,        \
                                                      int rows_per_batch,                      \
                                                      long long mask_batch_stride) {           \
        const float* mask_row = nullptr;                                                       \
        if (mask) {                                                                            \
            const long long row = blockIdx.x;                                                  \
            mask_row = mask + (row / rows_per_batch) * mask_batch_stride +                     \
                       (row % q_len) * (long long)cols;                                        \
        }                                                                                      \
        softmax_impl<T>(x, y, mask_row, cols, scale);                                          \
    }

KOSMOS_FOR_EACH_DTYPE(KOSMOS_SOFTMAX_KERNELS)
