//! [`CudaBackend`]: one GPU's context, its work stream, the cuBLAS handle and the module cache.

use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUresult;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr};
use cudarc::nvrtc::Ptx;

use super::element::DeviceRead;
use super::error::{check_len, drv, CudaError, CudaResult};
use super::kernels::{Kernel, KernelModule};

/// Where a loaded module came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleOrigin {
    /// The committed PTX (compute_80, ISA 9.0), JIT-compiled by the driver.
    EmbeddedPtx,
    /// The embedded sources compiled at run time by NVRTC for this GPU (the driver rejected the
    /// PTX version, or `KOSMOS2_CUDA_FORCE_NVRTC=1`).
    Nvrtc,
}

/// Facts about the opened GPU.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// Device ordinal.
    pub ordinal: usize,
    /// Marketing name, e.g. "NVIDIA H200".
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Total device memory in bytes.
    pub total_memory: usize,
    /// Number of streaming multiprocessors.
    pub multiprocessors: i32,
}

type FunctionKey = (&'static str, &'static str, &'static str);
type LoadedModule = (Arc<CudaModule>, ModuleOrigin);

/// One GPU: a primary context, a non-blocking stream every op is queued on (a real stream, so
/// that it can be captured into a CUDA graph), a cuBLAS handle bound to it, and the kernel
/// modules, loaded on first use.
///
/// All work goes to the one stream, so the context's multi-stream event tracking is switched off.
/// Every op is asynchronous; copies to the host synchronise.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// cuBLAS's workspace (set explicitly so that GEMMs can be captured in graphs); declared
    /// after `blas` so the handle is destroyed first.
    _workspace: CudaSlice<u8>,
    info: DeviceInfo,
    modules: Mutex<Vec<Option<LoadedModule>>>,
    functions: Mutex<HashMap<FunctionKey, CudaFunction>>,
    force_nvrtc: bool,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Runs a CUDA-library call, turning a panic (a library or symbol that cannot be loaded) into
/// [`CudaError::Panicked`].
fn guarded<R>(op: &'static str, f: impl FnOnce() -> R) -> CudaResult<R> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".to_string());
        CudaError::Panicked { op, msg }
    })
}

impl CudaBackend {
    /// Whether `libcuda` can be loaded at all (no driver call is made).
    pub fn driver_present() -> bool {
        // SAFETY: only tries to dlopen the driver library.
        unsafe { cudarc::driver::sys::is_culib_present() }
    }

    /// Number of visible GPUs; `Err(NoDriver)` without a driver, `Ok(0)` when the driver finds none.
    pub fn device_count() -> CudaResult<usize> {
        if !Self::driver_present() {
            return Err(CudaError::NoDriver);
        }
        match guarded("device_count", CudaContext::device_count)? {
            Ok(n) => Ok(usize::try_from(n).unwrap_or(0)),
            Err(e) if e.0 == CUresult::CUDA_ERROR_NO_DEVICE => Ok(0),
            Err(e) => Err(CudaError::Driver {
                op: "device_count",
                source: e,
            }),
        }
    }

    /// Whether GPU `ordinal` can be opened (driver present and enough devices).
    pub fn is_available(ordinal: usize) -> bool {
        Self::device_count().is_ok_and(|n| ordinal < n)
    }

    /// Opens GPU `ordinal`. Returns [`CudaError::NoDriver`], [`CudaError::NoDevice`] or
    /// [`CudaError::LibraryMissing`] (cuBLAS) instead of panicking when something is absent.
    pub fn new(ordinal: usize) -> CudaResult<Arc<CudaBackend>> {
        let force_nvrtc = std::env::var("KOSMOS2_CUDA_FORCE_NVRTC").is_ok_and(|v| v == "1");
        Self::open(ordinal, force_nvrtc)
    }

    /// Opens GPU `ordinal`; with `force_nvrtc`, every module is compiled by NVRTC from the
    /// embedded sources instead of loading the embedded PTX (to exercise the fallback).
    pub fn open(ordinal: usize, force_nvrtc: bool) -> CudaResult<Arc<CudaBackend>> {
        let count = Self::device_count()?;
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        // SAFETY: only tries to dlopen cuBLAS.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(CudaError::LibraryMissing {
                lib: "cuBLAS (libcublas.so.13)",
            });
        }
        let ctx = guarded("CudaContext::new", || CudaContext::new(ordinal))?
            .map_err(drv("CudaContext::new"))?;
        // SAFETY: every op of this backend runs on the one stream below, so no cross-stream
        // synchronisation is needed; slices are freed in stream order.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(drv("new_stream"))?;
        let blas = guarded("CudaBlas::new", || CudaBlas::new(stream.clone()))?.map_err(|e| {
            CudaError::Cublas {
                op: "CudaBlas::new",
                source: e,
            }
        })?;
        let workspace = configure_blas(&blas, &stream)?;
        use cudarc::driver::sys::CUdevice_attribute as A;
        let info = DeviceInfo {
            ordinal,
            name: ctx.name().map_err(drv("device name"))?,
            compute_capability: ctx
                .compute_capability()
                .map_err(drv("compute_capability"))?,
            total_memory: ctx.total_mem().map_err(drv("total_mem"))?,
            multiprocessors: ctx
                .attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
                .map_err(drv("multiprocessor count"))?,
        };
        Ok(Arc::new(CudaBackend {
            ctx,
            stream,
            blas,
            _workspace: workspace,
            info,
            modules: Mutex::new(vec![None; KernelModule::ALL.len()]),
            functions: Mutex::new(HashMap::new()),
            force_nvrtc,
        }))
    }

    /// The GPU's name, compute capability, memory and SM count.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.info.ordinal
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every op is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The cuBLAS handle (bound to [`CudaBackend::stream`]).
    pub fn blas(&self) -> &CudaBlas {
        &self.blas
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> CudaResult<()> {
        self.stream.synchronize().map_err(drv("synchronize"))
    }

    /// A zero-filled buffer of `len` elements.
    pub fn zeros<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> CudaResult<CudaSlice<T>> {
        self.stream.alloc_zeros(len).map_err(drv("alloc_zeros"))
    }

    /// A buffer of `len` elements with unspecified contents (every op fully writes its output).
    pub fn alloc<T: DeviceRepr>(&self, len: usize) -> CudaResult<CudaSlice<T>> {
        // SAFETY: the memory is uninitialised; callers only hand it to kernels as an output.
        unsafe { self.stream.alloc(len) }.map_err(drv("alloc"))
    }

    /// Copies host data to a new device buffer.
    pub fn htod<T: DeviceRepr>(&self, data: &[T]) -> CudaResult<CudaSlice<T>> {
        self.stream.clone_htod(data).map_err(drv("htod"))
    }

    /// Copies host data into an existing buffer (`dst.len() >= data.len()`).
    pub fn htod_into<T: DeviceRepr>(&self, data: &[T], dst: &mut CudaSlice<T>) -> CudaResult<()> {
        check_len("htod_into", "dst", dst.len(), data.len())?;
        let mut view = dst.slice_mut(..data.len());
        self.stream
            .memcpy_htod(data, &mut view)
            .map_err(drv("htod_into"))
    }

    /// Copies a device buffer to the host (synchronises the stream).
    pub fn dtoh<T: DeviceRepr>(&self, src: &impl DeviceRead<T>) -> CudaResult<Vec<T>> {
        self.stream.clone_dtoh(&src.view()).map_err(drv("dtoh"))
    }

    /// Loads every kernel module now (instead of on first use) and says where each came from.
    pub fn preload(&self) -> CudaResult<Vec<(KernelModule, ModuleOrigin)>> {
        KernelModule::ALL
            .iter()
            .map(|&m| Ok((m, self.module(m)?.1)))
            .collect()
    }

    /// A module, loading it on first use: the embedded PTX, or NVRTC when the driver rejects the
    /// PTX version (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION`) or cannot JIT-compile.
    pub fn module(&self, m: KernelModule) -> CudaResult<LoadedModule> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(loaded) = &modules[m.index()] {
            return Ok(loaded.clone());
        }
        let loaded = if self.force_nvrtc {
            (self.nvrtc_module(m)?, ModuleOrigin::Nvrtc)
        } else {
            match self.ctx.load_module(Ptx::from_src(m.ptx())) {
                Ok(module) => (module, ModuleOrigin::EmbeddedPtx),
                Err(e) if ptx_rejected(e.0) => (self.nvrtc_module(m)?, ModuleOrigin::Nvrtc),
                Err(e) => {
                    return Err(CudaError::Driver {
                        op: "load_module",
                        source: e,
                    })
                }
            }
        };
        modules[m.index()] = Some(loaded.clone());
        Ok(loaded)
    }

    /// Compiles `m`'s embedded source with NVRTC to a cubin for this GPU's architecture.
    fn nvrtc_module(&self, m: KernelModule) -> CudaResult<Arc<CudaModule>> {
        // SAFETY: only tries to dlopen NVRTC.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(CudaError::LibraryMissing {
                lib: "NVRTC (libnvrtc.so.13)",
            });
        }
        let (major, minor) = self.info.compute_capability;
        let arch = format!("--gpu-architecture=sm_{major}{minor}");
        let cubin = guarded("nvrtc", || nvrtc_cubin(m, &arch))??;
        self.ctx
            .load_module(Ptx::from_binary(cubin))
            .map_err(drv("load_module (nvrtc cubin)"))
    }

    /// The function `kernel` for `suffix` (and `suffix2` for two-type kernels such as
    /// `convert_<a>_<b>`), cached after the first lookup.
    pub(crate) fn function(
        &self,
        kernel: Kernel,
        suffix: &'static str,
        suffix2: &'static str,
    ) -> CudaResult<CudaFunction> {
        let key = (kernel.name, suffix, suffix2);
        if let Some(f) = self
            .functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(f.clone());
        }
        let mut name = kernel.name.to_string();
        for s in [suffix, suffix2] {
            if !s.is_empty() {
                name.push('_');
                name.push_str(s);
            }
        }
        let (module, _) = self.module(kernel.module)?;
        let f = module.load_function(&name).map_err(drv("load_function"))?;
        self.functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, f.clone());
        Ok(f)
    }
}

/// Driver answers after which the embedded sources are compiled with NVRTC instead: the PTX ISA
/// is newer than the driver's (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION`), or the driver cannot JIT.
fn ptx_rejected(code: CUresult) -> bool {
    matches!(
        code,
        CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION
            | CUresult::CUDA_ERROR_JIT_COMPILER_NOT_FOUND
            | CUresult::CUDA_ERROR_JIT_COMPILATION_DISABLED
    )
}

/// cuBLAS workspace size (the size NVIDIA recommends for Hopper).
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// Gives cuBLAS a fixed workspace and forbids reduced-precision (bf16/f16) split-K reductions,
/// so that every GEMM accumulates in f32.
fn configure_blas(blas: &CudaBlas, stream: &Arc<CudaStream>) -> CudaResult<CudaSlice<u8>> {
    use cudarc::cublas::sys::{cublasMath_t, cublasSetMathMode, cublasSetWorkspace_v2};
    use cudarc::driver::DevicePtr;
    let workspace = stream
        .alloc_zeros::<u8>(CUBLAS_WORKSPACE_BYTES)
        .map_err(drv("cuBLAS workspace"))?;
    let (ptr, guard) = workspace.device_ptr(stream);
    let cublas = |op: &'static str| move |source| CudaError::Cublas { op, source };
    // SAFETY: the handle is live; the workspace outlives it (field order of CudaBackend).
    unsafe {
        cublasSetWorkspace_v2(*blas.handle(), ptr as *mut _, CUBLAS_WORKSPACE_BYTES)
            .result()
            .map_err(cublas("cublasSetWorkspace"))?;
        cublasSetMathMode(
            *blas.handle(),
            cublasMath_t::CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION,
        )
        .result()
        .map_err(cublas("cublasSetMathMode"))?;
    }
    drop(guard);
    Ok(workspace)
}

/// NVRTC: source -> cubin for `arch` (`--gpu-architecture=sm_XY`).
fn nvrtc_cubin(m: KernelModule, arch: &str) -> CudaResult<Vec<u8>> {
    use cudarc::nvrtc::{result, sys};
    let err = |msg: String| CudaError::Nvrtc {
        module: m.name(),
        msg,
    };
    let src = CString::new(m.nvrtc_source()).map_err(|e| err(e.to_string()))?;
    let name = CString::new(format!("{}.cu", m.name())).map_err(|e| err(e.to_string()))?;
    let prog = result::create_program(&src, Some(&name)).map_err(|e| err(e.to_string()))?;
    let options = [arch, "-std=c++17"];
    // SAFETY: `prog` was just created and is destroyed exactly once below.
    let out = unsafe {
        let compiled = result::compile_program(prog, &options);
        let res = match compiled {
            Err(e) => {
                let log = result::get_program_log(prog)
                    .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned())
                    .unwrap_or_default();
                Err(err(format!("{e}: {log}")))
            }
            Ok(()) => {
                let mut size = 0usize;
                match sys::nvrtcGetCUBINSize(prog, &mut size).result() {
                    Err(e) => Err(err(format!("nvrtcGetCUBINSize: {e}"))),
                    Ok(()) => {
                        let mut cubin = vec![0u8; size];
                        sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char)
                            .result()
                            .map(|()| cubin)
                            .map_err(|e| err(format!("nvrtcGetCUBIN: {e}")))
                    }
                }
            }
        };
        let _ = result::destroy_program(prog);
        res
    };
    out
}
