//! Launch geometry shared by the ops, and the null pointer argument for optional buffers.

use cudarc::driver::LaunchConfig;

/// Threads per block for a one-block-per-row kernel: about 8 elements per thread, a multiple
/// of 32, between 32 and 1024.
pub(crate) fn row_threads(cols: usize) -> u32 {
    let want = cols.div_ceil(8).next_power_of_two().clamp(32, 1024);
    want as u32
}

/// One block per row.
pub(crate) fn rows_config(rows: usize, cols: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (row_threads(cols), 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A grid-stride elementwise launch over `n` elements (256 threads, at most 2^20 blocks).
pub(crate) fn elems_config(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 1 << 20);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The value passed for an absent optional pointer argument (a null `CUdeviceptr`).
pub(crate) const NULL_PTR: u64 = 0;

/// The most rows (blocks in x) one launch takes.
pub(crate) const MAX_GRID_X: usize = i32::MAX as usize;
