// Text input embedding of Kosmos2TextTransformer.forward_embedding (reference section 4.1-4.2), one
// block per token, f32 arithmetic:
//   e = image_row[t] >= 0 ? image_embeds[image_row[t]] : table[ids[t]]   (insertion before scaling)
//   e = e * scale                                                         (one f32 multiply, sqrt(D))
//   e = e + sinusoid(position[t])                                         (f32 add)
// with the sinusoid row [sin(p f_j) | cos(p f_j)], arg = f32(p) * f_j rounded to f32 and sin/cos in
// f64 rounded to f32 (torch's recipe); f_j comes from the host (same recipe as the CPU backend).
// Position p is positions[t] if given, else *pos_counter + pos_add (decode inside a CUDA graph:
// the HF rule gives every row cache_len + 2), else no positions are added. Row padding_idx is zero.
// Token ids are validated on the host (the kernel does not bounds-check them).
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void embed_tokens_impl(
    const unsigned int* __restrict__ ids, const T* __restrict__ table,
    const T* __restrict__ image_embeds, const int* __restrict__ image_row,
    const int* __restrict__ positions, const int* __restrict__ pos_counter, int pos_add,
    const float* __restrict__ freqs, T* __restrict__ out, int dim, float scale, int padding_idx) {
    const long long t = blockIdx.x;
    const int img = image_row ? image_row[t] : -1;
    const T* src = img >= 0 ? image_embeds + (long long)img * dim : table + (long long)ids[t] * dim;
    long long p = -1;
    if (positions) {
        p = positions[t];
    } else if (pos_counter) {
        p = (long long)*pos_counter + pos_add;
    }
    const int half = dim / 2;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        float e = to_f32(src[d]) * scale;
        if (p >= 0) {
            float pe = 0.0f;
            if (p != padding_idx && d < 2 * half) {
                const int j = d < half ? d : d - half;
                const float arg = (float)p * freqs[j];
                pe = d < half ? (float)sin((double)arg) : (float)cos((double)arg);
            }
            e = e + pe;
        }
        out[t * dim + d] = from_f32<T>(e);
    }
}

#define KOSMOS_EMBED_KERNELS(S, T)                                                             \
    extern "C" __global__ void embed_tokens_##S(                                               \
        const unsigned int* ids, const T* table, const T* image_embeds, const int* image_row,  \
        const int* positions, const int* pos_counter, int pos_add, const float* freqs, T* out, \
        int dim, float scale, int padding_idx) {                                               \
        embed_tokens_impl<T>(ids, table, image_embeds, image_row, positions, pos_counter,      \
                             pos_add, freqs, out, dim, scale, padding_idx);                    \
    }

KOSMOS_FOR_EACH_DTYPE(KOSMOS_EMBED_KERNELS)

/// *counter += delta (one thread). Advances the cache length inside a captured decode graph.
extern "C" __global__ void counter_add(int* counter, int delta) {
    if (threadIdx.x == 0 && blockIdx.x == 0) *counter += delta;
}
