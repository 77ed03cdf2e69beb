//! Matrix products through cuBLAS (`cublasGemmStridedBatchedEx`), row-major semantics, f32
//! accumulation for every dtype (bf16/f16 in, f32 compute, bf16/f16 or f32 out).

use cudarc::cublas::result::gemm_strided_batched_ex;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::{DevicePtr, DevicePtrMut};

use super::backend::CudaBackend;
use super::element::{CudaElement, DeviceRead, DeviceWrite};
use super::elementwise::Activation;
use super::error::{check_len, invalid, to_i32, CudaError, CudaResult};
use crate::dtype::DType;

/// `C[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b]` for `b < batch`, row-major:
/// `op(A)` is `[m, k]` (A stored `[k, m]` when `trans_a`), `op(B)` is `[k, n]` (B stored
/// `[n, k]` when `trans_b`), C is `[m, n]`. Batch strides are in elements (0 broadcasts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    /// Number of products.
    pub batch: usize,
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// A is stored transposed (`[k, m]`).
    pub trans_a: bool,
    /// B is stored transposed (`[n, k]`, e.g. a Linear weight `[out, in]`).
    pub trans_b: bool,
    /// Elements between consecutive A matrices.
    pub stride_a: usize,
    /// Elements between consecutive B matrices.
    pub stride_b: usize,
    /// Elements between consecutive C matrices.
    pub stride_c: usize,
}

impl GemmShape {
    /// One `[m, k] x [k, n]` product with contiguous operands.
    pub fn single(m: usize, n: usize, k: usize) -> Self {
        GemmShape {
            batch: 1,
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
        }
    }

    /// `y [rows, out] = x [rows, in] · Wᵀ` with `W` stored `[out, in]` (nn.Linear).
    pub fn linear(rows: usize, in_features: usize, out_features: usize) -> Self {
        GemmShape {
            trans_b: true,
            ..GemmShape::single(rows, out_features, in_features)
        }
    }

    fn extent(batch: usize, stride: usize, matrix: usize) -> usize {
        (batch - 1) * stride + matrix
    }
}

fn data_type(d: DType) -> cudaDataType {
    match d {
        DType::F32 => cudaDataType::CUDA_R_32F,
        DType::BF16 => cudaDataType::CUDA_R_16BF,
        DType::F16 => cudaDataType::CUDA_R_16F,
    }
}

fn op_of(trans: bool) -> cublasOperation_t {
    if trans {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

impl CudaBackend {
    /// The batched product of [`GemmShape`]; inputs `T`, output `C` (`C == T`, or f32 output
    /// for bf16/f16 inputs). Compute is strict f32 (`CUBLAS_COMPUTE_32F`, no TF32, no reduced
    /// precision split-K reductions).
    pub fn gemm<T: CudaElement, C: CudaElement>(
        &self,
        shape: &GemmShape,
        a: &impl DeviceRead<T>,
        b: &impl DeviceRead<T>,
        c: &mut impl DeviceWrite<C>,
        alpha: f32,
        beta: f32,
    ) -> CudaResult<()> {
        let op = "gemm";
        let s = shape;
        if s.batch == 0 || s.m == 0 || s.n == 0 || s.k == 0 {
            return Err(invalid(op, format!("empty product {s:?}")));
        }
        if C::DTYPE != T::DTYPE && C::DTYPE != DType::F32 {
            return Err(CudaError::UnsupportedDType {
                op,
                dtype: C::DTYPE,
                detail: "output must be the input dtype or f32",
            });
        }
        let (av, bv, mut cv) = (a.view(), b.view(), c.view_mut());
        check_len(
            op,
            "a",
            av.len(),
            GemmShape::extent(s.batch, s.stride_a, s.m * s.k),
        )?;
        check_len(
            op,
            "b",
            bv.len(),
            GemmShape::extent(s.batch, s.stride_b, s.k * s.n),
        )?;
        check_len(
            op,
            "c",
            cv.len(),
            GemmShape::extent(s.batch, s.stride_c, s.m * s.n),
        )?;
        let (m, n, k) = (
            to_i32(op, "m", s.m)?,
            to_i32(op, "n", s.n)?,
            to_i32(op, "k", s.k)?,
        );
        let lda = if s.trans_a { m } else { k };
        let ldb = if s.trans_b { k } else { n };
        let batch = to_i32(op, "batch", s.batch)?;
        let stream = self.stream();
        let (a_ptr, _ga) = av.device_ptr(stream);
        let (b_ptr, _gb) = bv.device_ptr(stream);
        let (c_ptr, _gc) = cv.device_ptr_mut(stream);
        // Column-major cuBLAS computes Cᵀ = op(B)ᵀ · op(A)ᵀ, which is row-major C = op(A) op(B).
        // SAFETY: the pointers are live device buffers holding every addressed element (checked
        // above), alpha/beta are f32 host scalars as COMPUTE_32F requires, and the handle is
        // bound to `stream`.
        unsafe {
            gemm_strided_batched_ex(
                *self.blas().handle(),
                op_of(s.trans_b),
                op_of(s.trans_a),
                n,
                m,
                k,
                (&alpha) as *const f32 as *const _,
                b_ptr as *const _,
                data_type(T::DTYPE),
                ldb,
                s.stride_b as i64,
                a_ptr as *const _,
                data_type(T::DTYPE),
                lda,
                s.stride_a as i64,
                (&beta) as *const f32 as *const _,
                c_ptr as *mut _,
                data_type(C::DTYPE),
                n,
                s.stride_c as i64,
                batch,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| CudaError::Cublas { op, source: e })
    }

    /// nn.Linear with a fused epilogue: `y = act(x · Wᵀ + bias)`; `x` `[rows, in]`, `w`
    /// `[out, in]`, `bias` `[out]`, `y` `[rows, out]`.
    #[allow(clippy::too_many_arguments)]
    pub fn linear<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        w: &impl DeviceRead<T>,
        bias: Option<&dyn DeviceRead<T>>,
        y: &mut impl DeviceWrite<T>,
        rows: usize,
        in_features: usize,
        out_features: usize,
        act: Activation,
    ) -> CudaResult<()> {
        let shape = GemmShape::linear(rows, in_features, out_features);
        self.gemm::<T, T>(&shape, x, w, y, 1.0, 0.0)?;
        match (bias, act) {
            (None, Activation::None) => Ok(()),
            (Some(b), act) => self.bias_act(y, &b.view(), rows, out_features, act),
            (None, act) => {
                let zeros = self.zeros::<T>(out_features)?;
                self.bias_act(y, &zeros, rows, out_features, act)
            }
        }
    }
}
