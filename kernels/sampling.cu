// Token selection over logits rows [rows, cols], one block per row (blockDim.x a multiple of 32):
// - argmax (first index wins ties; the order is Rust's f32::total_cmp with -0.0 == +0.0);
// - top-k (values descending, ties by lower index first), as the CPU backend;
// - top-k / top-p sampling with temperature from a host-drawn uniform per row (HF's warper order:
//   temperature, then top-k, then top-p, then a draw from the renormalised softmax).
// Candidates are ranked by a 64-bit key (order key << 32 | ~index): unique, so "the best key below
// the previous one" walks the row in rank order without marking anything.
#include "common.cuh"

#define SAMPLE_MAX_K 1024

__device__ __forceinline__ unsigned long long rank_key(float v, unsigned int i) {
    return ((unsigned long long)order_key(v) << 32) | (unsigned long long)(0xffffffffu - i);
}

__device__ __forceinline__ unsigned int rank_index(unsigned long long key) {
    return 0xffffffffu - (unsigned int)(key & 0xffffffffull);
}

__device__ __forceinline__ unsigned long long warp_max_u64(unsigned long long v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

/// Max over the block; every thread gets it. `scratch` holds 32 u64.
__device__ __forceinline__ unsigned long long block_max_u64(unsigned long long v,
                                                            unsigned long long* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_max_u64(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0ull;
    return warp_max_u64(v);
}

/// The best rank key of the row strictly below `below` (0 when there is none).
template <typename T>
__device__ __forceinline__ unsigned long long best_below(const T* row, int cols,
                                                         unsigned long long below,
                                                         unsigned long long* scratch) {
    unsigned long long best = 0ull;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const unsigned long long key = rank_key(to_f32(row[i]), (unsigned int)i);
        if (key < below && key > best) best = key;
    }
    return block_max_u64(best, scratch);
}

/// Writes the k best (index, value) of each row into out_idx/out_val [rows, k].
template <typename T>
__device__ __forceinline__ void top_k_impl(const T* __restrict__ x, unsigned int* out_idx,
                                           float* out_val, int cols, int k) {
    __shared__ unsigned long long scratch[32];
    const long long row = blockIdx.x;
    const T* xr = x + row * cols;
    unsigned long long prev = ~0ull;
    for (int r = 0; r < k; ++r) {
        prev = best_below(xr, cols, prev, scratch);
        if (threadIdx.x == 0) {
            const unsigned int i = rank_index(prev);
            out_idx[row * k + r] = i;
            if (out_val) out_val[row * k + r] = to_f32(xr[i]);
        }
    }
}

/// Samples one id per row from softmax(top_k(x / temperature)) restricted to the smallest
/// rank-ordered prefix whose probability reaches top_p (at least one token). u[row] in [0, 1).
template <typename T>
__device__ __forceinline__ void sample_top_k_impl(const T* __restrict__ x,
                                                  const float* __restrict__ uniform,
                                                  unsigned int* out_id, int cols, int k,
                                                  float temperature, float top_p) {
    __shared__ unsigned long long scratch[32];
    __shared__ unsigned int cand_idx[SAMPLE_MAX_K];
    __shared__ float cand_val[SAMPLE_MAX_K];
    const long long row = blockIdx.x;
    const T* xr = x + row * cols;
    unsigned long long prev = ~0ull;
    for (int r = 0; r < k; ++r) {
        prev = best_below(xr, cols, prev, scratch);
        if (threadIdx.x == 0) {
            const unsigned int i = rank_index(prev);
            cand_idx[r] = i;
            cand_val[r] = to_f32(xr[i]) / temperature;
        }
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    const float m = cand_val[0];
    float total = 0.0f;
    for (int r = 0; r < k; ++r) total += expf(cand_val[r] - m);
    // top-p: keep ranks while the mass before them is below top_p.
    int keep = 0;
    float mass = 0.0f;
    while (keep < k && (keep == 0 || mass < top_p * total)) {
        mass += expf(cand_val[keep] - m);
        ++keep;
    }
    const float target = uniform[row] * mass;
    float c = 0.0f;
    unsigned int pick = cand_idx[keep - 1];
    for (int r = 0; r < keep; ++r) {
        c += expf(cand_val[r] - m);
        if (target < c) {
            pick = cand_idx[r];
            break;
        }
    }
    out_id[row] = pick;
}

#define KOSMOS_SAMPLING_KERNELS(S, T)                                                          \
    extern "C" __global__ void argmax_##S(const T* x, unsigned int* out_idx, int cols) {       \
        __shared__ unsigned long long scratch[32];                                             \
        const long long row = blockIdx.x;                                                      \
        const unsigned long long best = best_below(x + row * cols, cols, ~0ull, scratch);      \
        if (threadIdx.x == 0) out_idx[row] = rank_index(best);                                 \
    }                                                                                          \
    extern "C" __global__ void top_k_##S(const T* x, unsigned int* out_idx, float* out_val,    \
                                         int cols, int k) {                                    \
        top_k_impl<T>(x, out_idx, out_val, cols, k);                                           \
    }                                                                                          \
    extern "C" __global__ void sample_top_k_##S(const T* x, const float* uniform,              \
                                                unsigned int* out_id, int cols, int k,         \
                                                float temperature, float top_p) {              \
        sample_top_k_impl<T>(x, uniform, out_id, cols, k, temperature, top_p);                 \
    }

KOSMOS_FOR_EACH_DTYPE(KOSMOS_SAMPLING_KERNELS)
