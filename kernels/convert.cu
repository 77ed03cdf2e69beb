// Layout and dtype kernels: element-type conversion (through f32, round to nearest even), a
// strided gather that makes any view (transpose, narrow, broadcast) contiguous, and fill.
#include "common.cuh"

#define KOSMOS_MAX_RANK 6

/// A view: dims and element strides (row-major order of the output), offset in elements.
/// Mirrored by `StridedLayout` in crates/kosmos-tensor/src/cuda/layout.rs.
struct StridedLayout {
    long long dims[KOSMOS_MAX_RANK];
    long long strides[KOSMOS_MAX_RANK];
    long long offset;
    int rank;
    int pad_;
};

/// Source element index of the `i`-th element (row-major) of the view.
__device__ __forceinline__ long long strided_index(const StridedLayout& l, long long i) {
    long long src = l.offset;
    for (int d = l.rank - 1; d >= 0; --d) {
        const long long dim = l.dims[d];
        src += (i % dim) * l.strides[d];
        i /= dim;
    }
    return src;
}

#define KOSMOS_GRID_STRIDE(i, n)                                                               \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);              \
         i += (long long)gridDim.x * blockDim.x)

#define KOSMOS_CONVERT_KERNEL(SA, TA, SB, TB)                                                  \
    extern "C" __global__ void convert_##SA##_##SB(const TA* x, TB* y, long long n) {          \
        KOSMOS_GRID_STRIDE(i, n) y[i] = from_f32<TB>(to_f32(x[i]));                            \
    }

#define KOSMOS_CONVERT_FROM(SA, TA)                                                            \
    KOSMOS_CONVERT_KERNEL(SA, TA, f32, float)                                                  \
    KOSMOS_CONVERT_KERNEL(SA, TA, bf16, bf16_t)                                                \
    KOSMOS_CONVERT_KERNEL(SA, TA, f16, f16_t)

KOSMOS_FOR_EACH_DTYPE(KOSMOS_CONVERT_FROM)

#define KOSMOS_LAYOUT_KERNELS(S, T)                                                            \
    /* y[i] = x[strided_index(layout, i)] for i < n = prod(dims). */                           \
    extern "C" __global__ void copy_strided_##S(const T* x, T* y, long long n,                 \
                                                StridedLayout layout) {                        \
        KOSMOS_GRID_STRIDE(i, n) y[i] = x[strided_index(layout, i)];                           \
    }                                                                                          \
    extern "C" __global__ void fill_##S(T* y, long long n, float value) {                      \
        const T v = from_f32<T>(value);                                                        \
        KOSMOS_GRID_STRIDE(i, n) y[i] = v;                                                     \
    }

KOSMOS_FOR_EACH_DTYPE(KOSMOS_LAYOUT_KERNELS)
