//! CUDA graphs: capture a sequence of ops on the backend's stream once, replay it with one
//! launch (the decode step: every kernel reads its varying inputs, such as the cache length and
//! the last token, from device memory, so the same graph serves every step).

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;

use super::backend::CudaBackend;
use super::error::{drv, invalid, CudaResult};

/// An instantiated graph bound to the backend's stream.
pub struct DeviceGraph {
    graph: CudaGraph,
}

impl std::fmt::Debug for DeviceGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceGraph").finish_non_exhaustive()
    }
}

impl DeviceGraph {
    /// Queues one replay on the stream it was captured on.
    pub fn launch(&self) -> CudaResult<()> {
        self.graph.launch().map_err(drv("graph launch"))
    }
}

impl CudaBackend {
    /// Captures what `record` queues into a graph. Every module is loaded first (loading is not
    /// allowed during capture); `record` must not allocate, copy from pageable host memory or
    /// synchronise. If `record` fails, the capture is ended and its error returned.
    pub fn capture(
        &self,
        record: impl FnOnce(&CudaBackend) -> CudaResult<()>,
    ) -> CudaResult<DeviceGraph> {
        self.preload()?;
        self.synchronize()?;
        self.stream()
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(drv("begin_capture"))?;
        let recorded = record(self);
        let ended = self
            .stream()
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(drv("end_capture"));
        recorded?;
        let graph = ended?.ok_or_else(|| invalid("capture", "nothing was captured"))?;
        graph.upload().map_err(drv("graph upload"))?;
        Ok(DeviceGraph { graph })
    }
}
