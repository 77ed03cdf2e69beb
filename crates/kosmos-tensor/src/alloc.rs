//! Process-wide allocator tuning for inference.
//!
//! Ops return fresh output buffers (a vision layer allocates several 1–4 MB activations). With
//! glibc's defaults such buffers come from `mmap` or are trimmed back to the kernel on `free`, so
//! every call faults in and zeroes new pages: on the full-size model the kernel's page clearing
//! was a third of the samples of a bf16 image encode. [`keep_freed_memory`] makes glibc keep freed
//! memory for reuse instead; binaries call it once at startup (`kosmos2`, the bench driver).

/// Makes glibc's `malloc` serve allocations up to 32 MiB from its heaps and keep up to 1 GiB of
/// freed memory instead of returning it to the kernel (`mallopt` `M_MMAP_THRESHOLD` and
/// `M_TRIM_THRESHOLD`). The resident set after a forward pass may stay higher by what was freed;
/// the peak is unchanged. Returns whether the settings were applied: false with another C library
/// or operating system, where it does nothing, and when the environment variable
/// `KOSMOS2_MALLOC_DEFAULTS=1` asks to keep the C library's defaults.
///
/// ```
/// let applied = kosmos_tensor::alloc::keep_freed_memory();
/// let opted_out = std::env::var_os("KOSMOS2_MALLOC_DEFAULTS").is_some_and(|v| v == "1");
/// assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")) && !opted_out);
/// ```
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("KOSMOS2_MALLOC_DEFAULTS").is_some_and(|v| v == "1") {
            return false;
        }
        // SAFETY: `mallopt` only changes allocator parameters; both values are in range (the
        // mmap threshold's maximum is 32 MiB on 64-bit glibc).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
