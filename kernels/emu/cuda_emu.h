// A CPU emulator for the kosmos2-rs kernels: every CUDA thread of a block is an OS thread,
// `__syncthreads` is a block barrier, warp shuffles exchange through a per-warp barrier, and
// `__shared__` variables are function statics (blocks run one after another). Enough for the
// kernels in kernels/*.cu (1-D blocks whose size is a multiple of 32, warp-uniform shuffles);
// not a general CUDA emulator. Used by kernels/emu/emu_test.cpp (`kernels/emu/run.sh`).
#pragma once

#define KOSMOS_EMU 1

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static

using std::max;
using std::min;

inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}

inline float kosmos_emu_f16_to_f32(unsigned short h) {
    _Float16 v;
    std::memcpy(&v, &h, 2);
    return (float)v;
}
inline unsigned short kosmos_emu_f32_to_f16(float f) {
    _Float16 v = (_Float16)f;
    unsigned short h;
    std::memcpy(&h, &v, 2);
    return h;
}
inline unsigned short kosmos_emu_f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if (std::isnan(f)) return (unsigned short)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

struct EmuWarp {
    std::unique_ptr<std::barrier<>> bar;
    uint64_t slots[32];
};

inline thread_local std::barrier<>* emu_block_bar = nullptr;
inline thread_local EmuWarp* emu_warp = nullptr;
inline thread_local int emu_lane = 0;

inline void __syncthreads() { emu_block_bar->arrive_and_wait(); }

template <typename T>
inline T emu_shfl(T v, int src) {
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    emu_warp->slots[emu_lane] = bits;
    emu_warp->bar->arrive_and_wait();
    const uint64_t r = emu_warp->slots[src & 31];
    emu_warp->bar->arrive_and_wait();
    T out;
    std::memcpy(&out, &r, sizeof(T));
    return out;
}

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int o) {
    return emu_shfl(v, emu_lane ^ o);
}

template <typename T>
inline T __shfl_sync(unsigned, T v, int src) {
    return emu_shfl(v, src);
}

/// Runs `kernel()` for every thread of every block of `grid` (blocks one after another).
template <class F>
void emu_launch(dim3 grid, unsigned threads, F&& kernel) {
    gridDim = grid;
    blockDim = dim3{threads, 1, 1};
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                std::barrier<> block_bar((std::ptrdiff_t)threads);
                const unsigned nwarps = (threads + 31) / 32;
                std::vector<EmuWarp> warps(nwarps);
                for (unsigned w = 0; w < nwarps; ++w) {
                    const unsigned lanes = std::min(32u, threads - 32 * w);
                    warps[w].bar = std::make_unique<std::barrier<>>((std::ptrdiff_t)lanes);
                }
                std::vector<std::thread> pool;
                pool.reserve(threads);
                for (unsigned t = 0; t < threads; ++t) {
                    pool.emplace_back([&, t] {
                        threadIdx = dim3{t, 0, 0};
                        blockIdx = dim3{x, y, z};
                        emu_block_bar = &block_bar;
                        emu_warp = &warps[t / 32];
                        emu_lane = (int)(t % 32);
                        kernel();
                        warps[t / 32].bar->arrive_and_drop();
                        block_bar.arrive_and_drop();
                    });
                }
                for (auto& th : pool) th.join();
            }
}
