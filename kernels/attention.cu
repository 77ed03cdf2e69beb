// Scaled dot-product attention, softmax(q k^T * scale + mask) v, in f32 arithmetic:
// - `flash_attn_*`: prefill. Tiles of 16 queries x 32 keys in shared memory, online softmax
//   (running max and sum per query row), never materialising the score matrix. Optional additive
//   f32 mask [B or 1, 1, Tq, Tk] and/or an in-kernel causal mask.
// - `decode_attn_*`: one query per (batch, head) over a KV cache whose length may be read from
//   device memory (so the launch can sit in a captured CUDA graph).
// - `kv_append_*`: copy new keys/values into the cache at a position (host value or device value).
//
// Masking follows HF exactly: masked entries get KOSMOS_NEG_MIN *added* (finfo(f32).min), so a causal
// entry that is also padded becomes -inf, and a query row whose every entry is NEG_MIN attends
// uniformly, as torch's softmax does. Key slots outside [0, kv_len) are excluded (-inf). A row with
// no finite score gives zeros, as the CPU softmax.
#include "common.cuh"

#define ATTN_HD_MAX 128  // head_dim <= 128 (the host checks)
#define ATTN_BQ 16       // query rows per block (4 warps x 4 rows)
#define ATTN_ROWS 4      // query rows per warp
#define ATTN_BK 32       // keys per tile (one per lane)
#define ATTN_DC (ATTN_HD_MAX / 32)

/// Strides are in elements; the last dim of q, k, v, o is contiguous. Mirrored by `AttnParams` in
/// crates/kosmos-tensor/src/cuda/attention.rs (same field order: 8-byte fields first).
struct AttnParams {
    long long q_sb, q_sh, q_st;
    long long k_sb, k_sh, k_st;
    long long v_sb, v_sh, v_st;
    long long o_sb, o_sh, o_st;
    long long mask_sb, mask_sq;  // mask [Bm, 1, Tq, Tk], key stride 1; mask_sb = 0 broadcasts
    int batch, heads, q_len, kv_len, head_dim;
    int causal;         // add NEG_MIN where key j > query i + causal_offset
    int causal_offset;  // usually kv_len - q_len (queries are the last q_len positions)
    float scale;
};

template <typename T>
__device__ __forceinline__ void flash_attn_impl(const T* __restrict__ q, const T* __restrict__ k,
                                                const T* __restrict__ v, T* __restrict__ o,
                                                const float* __restrict__ mask,
                                                const AttnParams p) {
    __shared__ float q_s[ATTN_BQ][ATTN_HD_MAX];
    __shared__ float k_s[ATTN_BK][ATTN_HD_MAX + 1];  // +1: lane j reads row j without conflicts
    __shared__ float v_s[ATTN_BK][ATTN_HD_MAX];

    const int b = blockIdx.z, h = blockIdx.y;
    const int q0 = blockIdx.x * ATTN_BQ;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int hd = p.head_dim;
    const T* qb = q + b * p.q_sb + h * p.q_sh;
    const T* kb = k + b * p.k_sb + h * p.k_sh;
    const T* vb = v + b * p.v_sb + h * p.v_sh;

    for (int e = threadIdx.x; e < ATTN_BQ * hd; e += blockDim.x) {
        const int r = e / hd, d = e % hd;
        q_s[r][d] = (q0 + r < p.q_len) ? to_f32(qb[(q0 + r) * p.q_st + d]) : 0.0f;
    }

    float m[ATTN_ROWS], l[ATTN_ROWS], acc[ATTN_ROWS][ATTN_DC];
#pragma unroll
    for (int r = 0; r < ATTN_ROWS; ++r) {
        m[r] = -KOSMOS_INF;
        l[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < ATTN_DC; ++c) acc[r][c] = 0.0f;
    }

    // Pure causal (no additive mask) with every query having its own key: tiles entirely above
    // the diagonal only add exp(NEG_MIN - m) = 0, so they can be skipped exactly.
    int kv_end = p.kv_len;
    if (p.causal && mask == nullptr && p.causal_offset >= 0) {
        kv_end = min(p.kv_len, q0 + ATTN_BQ + p.causal_offset);
    }

    for (int k0 = 0; k0 < kv_end; k0 += ATTN_BK) {
        __syncthreads();  // previous tile fully consumed (and q_s written, first time)
        for (int e = threadIdx.x; e < ATTN_BK * hd; e += blockDim.x) {
            const int j = e / hd, d = e % hd;
            const bool in = k0 + j < p.kv_len;
            k_s[j][d] = in ? to_f32(kb[(long long)(k0 + j) * p.k_st + d]) : 0.0f;
            v_s[j][d] = in ? to_f32(vb[(long long)(k0 + j) * p.v_st + d]) : 0.0f;
        }
        __syncthreads();

        // Scores: lane j scores key k0 + j against the warp's rows.
        float s[ATTN_ROWS];
#pragma unroll
        for (int r = 0; r < ATTN_ROWS; ++r) s[r] = 0.0f;
        for (int d = 0; d < hd; ++d) {
            const float kv = k_s[lane][d];
#pragma unroll
            for (int r = 0; r < ATTN_ROWS; ++r) s[r] += q_s[warp * ATTN_ROWS + r][d] * kv;
        }
        const int j = k0 + lane;
#pragma unroll
        for (int r = 0; r < ATTN_ROWS; ++r) {
            const int i = q0 + warp * ATTN_ROWS + r;
            float sv;
            if (j >= p.kv_len || i >= p.q_len) {
                sv = -KOSMOS_INF;
            } else {
                sv = s[r] * p.scale;
                if (mask) sv += mask[b * p.mask_sb + (long long)i * p.mask_sq + j];
                if (p.causal && j > i + p.causal_offset) sv += KOSMOS_NEG_MIN;
            }
            const float m_new = fmaxf(m[r], warp_max(sv));
            float pr = 0.0f, alpha = 1.0f;
            if (m_new != -KOSMOS_INF) {
                pr = expf(sv - m_new);  // sv = -inf -> 0
                alpha = (m[r] == -KOSMOS_INF) ? 0.0f : expf(m[r] - m_new);
            }
            l[r] = l[r] * alpha + warp_sum(pr);
            m[r] = m_new;
#pragma unroll
            for (int c = 0; c < ATTN_DC; ++c) acc[r][c] *= alpha;
            s[r] = pr;
        }
        // acc[r][d] += sum_j p[r][j] * v[j][d]; lane owns d = lane + 32 c.
        for (int jj = 0; jj < ATTN_BK; ++jj) {
            float pj[ATTN_ROWS];
#pragma unroll
            for (int r = 0; r < ATTN_ROWS; ++r) pj[r] = __shfl_sync(0xffffffffu, s[r], jj);
#pragma unroll
            for (int c = 0; c < ATTN_DC; ++c) {
                const int d = lane + 32 * c;
                if (d < hd) {
                    const float vv = v_s[jj][d];
#pragma unroll
                    for (int r = 0; r < ATTN_ROWS; ++r) acc[r][c] += pj[r] * vv;
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < ATTN_ROWS; ++r) {
        const int i = q0 + warp * ATTN_ROWS + r;
        if (i >= p.q_len) continue;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        T* orow = o + b * p.o_sb + h * p.o_sh + (long long)i * p.o_st;
#pragma unroll
        for (int c = 0; c < ATTN_DC; ++c) {
            const int d = lane + 32 * c;
            if (d < hd) orow[d] = from_f32<T>(acc[r][c] * inv);
        }
    }
}

/// Decode: one query (q_len = 1) per (b, h); keys 0..len where len = *kv_len_dev + kv_len_add if
/// kv_len_dev is non-null (a cache-length counter in device memory), else p.kv_len. Four warps split the keys; each lane owns dims lane + 32 c; the warps' partial
/// softmax states are merged at the end. The causal fields of `p` are ignored (the query is last).
template <typename T>
__device__ __forceinline__ void decode_attn_impl(const T* __restrict__ q, const T* __restrict__ k,
                                                 const T* __restrict__ v, T* __restrict__ o,
                                                 const float* __restrict__ mask,
                                                 const int* __restrict__ kv_len_dev,
                                                 int kv_len_add, const AttnParams p) {
    __shared__ float part_m[4], part_l[4];
    __shared__ float part_acc[4][ATTN_HD_MAX];
    const int b = blockIdx.y, h = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int hd = p.head_dim;
    const int len = kv_len_dev ? *kv_len_dev + kv_len_add : p.kv_len;
    const T* qb = q + b * p.q_sb + h * p.q_sh;
    const T* kb = k + b * p.k_sb + h * p.k_sh;
    const T* vb = v + b * p.v_sb + h * p.v_sh;
    const float* mrow = mask ? mask + b * p.mask_sb : nullptr;

    float qv[ATTN_DC], acc[ATTN_DC];
#pragma unroll
    for (int c = 0; c < ATTN_DC; ++c) {
        const int d = lane + 32 * c;
        qv[c] = d < hd ? to_f32(qb[d]) : 0.0f;
        acc[c] = 0.0f;
    }
    float m = -KOSMOS_INF, l = 0.0f;
    // Four keys per step: four independent reductions in flight.
    for (int j0 = warp * 4; j0 < len; j0 += 16) {
        float s[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int j = j0 + u;
            float part = 0.0f;
            if (j < len) {
#pragma unroll
                for (int c = 0; c < ATTN_DC; ++c) {
                    const int d = lane + 32 * c;
                    if (d < hd) part += qv[c] * to_f32(kb[(long long)j * p.k_st + d]);
                }
            }
            s[u] = part;
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) s[u] = warp_sum(s[u]);
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int j = j0 + u;
            float sv = -KOSMOS_INF;
            if (j < len) {
                sv = s[u] * p.scale;
                if (mrow) sv += mrow[j];
            }
            const float m_new = fmaxf(m, sv);
            if (m_new == -KOSMOS_INF) continue;
            const float alpha = (m == -KOSMOS_INF) ? 0.0f : expf(m - m_new);
            const float pr = expf(sv - m_new);
            l = l * alpha + pr;
            m = m_new;
#pragma unroll
            for (int c = 0; c < ATTN_DC; ++c) {
                const int d = lane + 32 * c;
                const float vv = (d < hd && j < len) ? to_f32(vb[(long long)j * p.v_st + d]) : 0.0f;
                acc[c] = acc[c] * alpha + pr * vv;
            }
        }
    }
    if (lane == 0) {
        part_m[warp] = m;
        part_l[warp] = l;
    }
#pragma unroll
    for (int c = 0; c < ATTN_DC; ++c) {
        const int d = lane + 32 * c;
        if (d < hd) part_acc[warp][d] = acc[c];
    }
    __syncthreads();
    if (warp == 0) {
        float mm = -KOSMOS_INF;
        for (int w = 0; w < 4; ++w) mm = fmaxf(mm, part_m[w]);
        float ll = 0.0f, scale_w[4];
        for (int w = 0; w < 4; ++w) {
            scale_w[w] = (part_m[w] == -KOSMOS_INF) ? 0.0f : expf(part_m[w] - mm);
            ll += part_l[w] * scale_w[w];
        }
        const float inv = ll > 0.0f ? 1.0f / ll : 0.0f;
        T* orow = o + b * p.o_sb + h * p.o_sh;
#pragma unroll
        for (int c = 0; c < ATTN_DC; ++c) {
            const int d = lane + 32 * c;
            if (d < hd) {
                float a = 0.0f;
                for (int w = 0; w < 4; ++w) a += part_acc[w][d] * scale_w[w];
                orow[d] = from_f32<T>(a * inv);
            }
        }
    }
}

/// dst[b, h, pos + t, :] = src[b, h, t, :] for t < t_len, pos = *pos_dev if non-null, else pos_host.
/// Grid (t_len, heads, batch); threads over head_dim.
template <typename T>
__device__ __forceinline__ void kv_append_impl(const T* __restrict__ src, long long s_sb,
                                               long long s_sh, long long s_st, T* __restrict__ dst,
                                               long long d_sb, long long d_sh, long long d_st,
                                               int head_dim, int pos_host,
                                               const int* __restrict__ pos_dev) {
    const int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const long long pos = pos_dev ? *pos_dev : pos_host;
    const T* s = src + b * s_sb + h * s_sh + t * s_st;
    T* d = dst + b * d_sb + h * d_sh + (pos + t) * d_st;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) d[i] = s[i];
}

#define KOSMOS_ATTN_KERNELS(S, T)                                                              \
    extern "C" __global__ void __launch_bounds__(128)                                          \
        flash_attn_##S(const T* q, const T* k, const T* v, T* o, const float* mask,            \
                       AttnParams p) {                                                         \
        flash_attn_impl<T>(q, k, v, o, mask, p);                                               \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(128)                                          \
        decode_attn_##S(const T* q, const T* k, const T* v, T* o, const float* mask,           \
                        const int* kv_len_dev, int kv_len_add, AttnParams p) {                 \
        decode_attn_impl<T>(q, k, v, o, mask, kv_len_dev, kv_len_add, p);                      \
    }                                                                                          \
    extern "C" __global__ void kv_append_##S(const T* src, long long s_sb, long long s_sh,     \
                                             long long s_st, T* dst, long long d_sb,           \
                                             long long d_sh, long long d_st, int head_dim,     \
                                             int pos_host, const int* pos_dev) {               \
        kv_append_impl<T>(src, s_sb, s_sh, s_st, dst, d_sb, d_sh, d_st, head_dim, pos_host,    \
                          pos_dev);                                                            \
    }

KOSMOS_FOR_EACH_DTYPE(KOSMOS_ATTN_KERNELS)
