//! `WeightStore::get` converting an f32 file to bf16 / f16: bit-exact with `half` on every element
//! (edge values, several parallel chunks, a misaligned tensor), and the released source pages of the
//! read-only map read back unchanged (a second `get`, zero-copy f32 views of the same file).

use std::path::PathBuf;
use std::sync::Mutex;

use kosmos_tensor::{bf16, f16, write_safetensors, DType, Device, Tensor, WeightStore};

/// Serialises the tests of this binary: two of them measure this process's `RssFile`, which the
/// others' mappings would disturb.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("kosmos-tensor-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic values covering every exponent, ties, subnormals, infinities and NaNs.
fn values(n: usize, seed: u32) -> Vec<f32> {
    let edges = [
        0.0f32,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7f80_0001), // signalling NaN
        f32::from_bits(0xffbf_ffff),
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::from_bits(1),           // smallest subnormal
        f32::from_bits(0x0000_8000), // subnormal bf16 tie
        f32::from_bits(0x3f80_8000), // bf16 tie, even
        f32::from_bits(0x3f81_8000), // bf16 tie, odd
        f32::from_bits(0x3f80_1000), // f16 tie, even
        65520.0,                     // f16 overflow tie
        f32::from_bits(0x3300_0000), // f16 underflow tie
    ];
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|i| {
            if i % 97 < edges.len() {
                return edges[i % 97];
            }
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            f32::from_bits(x)
        })
        .collect()
}

fn bits_bf16(t: &Tensor) -> Vec<u16> {
    match t.contiguous_slice() {
        Some(kosmos_tensor::CpuSlice::BF16(s)) => s.iter().map(|v| v.to_bits()).collect(),
        other => panic!("expected bf16 storage, got {other:?}"),
    }
}

fn bits_f16(t: &Tensor) -> Vec<u16> {
    match t.contiguous_slice() {
        Some(kosmos_tensor::CpuSlice::F16(s)) => s.iter().map(|v| v.to_bits()).collect(),
        other => panic!("expected f16 storage, got {other:?}"),
    }
}

fn f32_bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn f32_file_converts_bit_exactly_and_released_pages_read_back() {
    let _serial = serial();
    let dir = TempDir::new("convert");
    let path = dir.0.join("model.safetensors");
    // "big" spans 2.5 conversion chunks (1 Mi elements each); "odd" follows a 2-byte tensor, so its
    // data is not 4-aligned in the map; "small" is below one SIMD step.
    let big = values(2_621_447, 1);
    let small = values(5, 2);
    let odd = values(4099, 3);
    let tensors = [
        (
            "big",
            Tensor::from_vec(big.clone(), &[big.len()], &Device::Cpu).unwrap(),
        ),
        (
            "pad",
            Tensor::from_vec(vec![1.0f32], &[1], &Device::Cpu)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap(),
        ),
        (
            "odd",
            Tensor::from_vec(odd.clone(), &[odd.len()], &Device::Cpu).unwrap(),
        ),
        (
            "small",
            Tensor::from_vec(small.clone(), &[small.len()], &Device::Cpu).unwrap(),
        ),
    ];
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    write_safetensors(&path, &refs).unwrap();

    let store = WeightStore::open(&path).unwrap();
    // A zero-copy f32 view made before the conversions release pages of the same map.
    let view = store
        .get("big", &[big.len()], DType::F32, &Device::Cpu)
        .unwrap();
    assert!(view.is_memory_mapped());
    for (name, want) in [("big", &big), ("odd", &odd), ("small", &small)] {
        let shape = [want.len()];
        let want_b: Vec<u16> = want.iter().map(|&v| bf16::from_f32(v).to_bits()).collect();
        let want_h: Vec<u16> = want.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
        let b = store.get(name, &shape, DType::BF16, &Device::Cpu).unwrap();
        assert_eq!(b.dtype(), DType::BF16);
        assert!(!b.is_memory_mapped());
        assert_eq!(bits_bf16(&b), want_b, "{name} bf16");
        let h = store.get(name, &shape, DType::F16, &Device::Cpu).unwrap();
        assert_eq!(bits_f16(&h), want_h, "{name} f16");
        // Converting again reads the released pages back from the file.
        let again = store.get(name, &shape, DType::BF16, &Device::Cpu).unwrap();
        assert_eq!(bits_bf16(&again), want_b, "{name} bf16, second load");
    }
    let want_bits: Vec<u32> = big.iter().map(|v| v.to_bits()).collect();
    assert_eq!(f32_bits(&view), want_bits, "zero-copy view after release");
    let fresh = store
        .get("big", &[big.len()], DType::F32, &Device::Cpu)
        .unwrap();
    assert_eq!(
        f32_bits(&fresh),
        want_bits,
        "zero-copy view made after release"
    );
    // The misaligned f32 tensor is copied (not a view) and exact.
    let odd_f32 = store
        .get("odd", &[odd.len()], DType::F32, &Device::Cpu)
        .unwrap();
    assert!(!odd_f32.is_memory_mapped());
    let odd_bits: Vec<u32> = odd.iter().map(|v| v.to_bits()).collect();
    assert_eq!(f32_bits(&odd_f32), odd_bits);
}

#[test]
fn half_precision_files_stay_zero_copy() {
    let _serial = serial();
    let dir = TempDir::new("zerocopy");
    let path = dir.0.join("model.safetensors");
    let v = values(1000, 4);
    let b = Tensor::from_vec(v.clone(), &[v.len()], &Device::Cpu)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    let h = Tensor::from_vec(v.clone(), &[v.len()], &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap();
    write_safetensors(&path, &[("b", &b), ("h", &h)]).unwrap();
    let store = WeightStore::open(&path).unwrap();
    let lb = store
        .get("b", &[v.len()], DType::BF16, &Device::Cpu)
        .unwrap();
    let lh = store
        .get("h", &[v.len()], DType::F16, &Device::Cpu)
        .unwrap();
    assert!(lb.is_memory_mapped() && lh.is_memory_mapped());
    assert_eq!(bits_bf16(&lb), bits_bf16(&b));
    assert_eq!(bits_f16(&lh), bits_f16(&h));
}

/// `RssFile` of this process in KiB (file pages mapped now).
#[cfg(target_os = "linux")]
fn rss_file_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("RssFile:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
#[cfg(target_os = "linux")]
fn converting_does_not_keep_the_f32_pages_resident() {
    let _serial = serial();
    let dir = TempDir::new("release");
    let path = dir.0.join("model.safetensors");
    let n = 8 << 20; // 32 MiB of f32
    let t = Tensor::from_vec(values(n, 5), &[n], &Device::Cpu).unwrap();
    write_safetensors(&path, &[("w", &t)]).unwrap();
    drop(t);
    let store = WeightStore::open(&path).unwrap();
    let before = rss_file_kib();
    let b = store.get("w", &[n], DType::BF16, &Device::Cpu).unwrap();
    let grown = rss_file_kib().saturating_sub(before);
    // Without the release all 32 MiB would stay mapped.
    assert!(grown < 8 << 10, "f32 pages still resident: {grown} KiB");
    assert_eq!(b.dims(), &[n]);
}

#[test]
#[cfg(target_os = "linux")]
fn released_mapped_pages_leave_the_process_and_read_back() {
    let _serial = serial();
    let dir = TempDir::new("mapped");
    let path = dir.0.join("model.safetensors");
    let n = 4 << 20; // 16 MiB of f32 per tensor
    let (a, b) = (values(n, 6), values(n, 7));
    let ta = Tensor::from_vec(a.clone(), &[n], &Device::Cpu).unwrap();
    let tb = Tensor::from_vec(b.clone(), &[n], &Device::Cpu).unwrap();
    write_safetensors(&path, &[("tower.a", &ta), ("tower.b", &tb), ("x", &ta)]).unwrap();
    drop((ta, tb));
    let store = WeightStore::open(&path).unwrap();
    let pages = store.mapped_pages("tower.");
    assert_eq!(pages.bytes(), 2 * 4 * n);
    let va = store
        .get("tower.a", &[n], DType::F32, &Device::Cpu)
        .unwrap();
    let vb = store
        .get("tower.b", &[n], DType::F32, &Device::Cpu)
        .unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    assert_eq!(f32_bits(&va), bits(&a)); // faults all of tower.a in
    assert_eq!(f32_bits(&vb), bits(&b));
    let before = rss_file_kib();
    pages.release();
    let dropped = before.saturating_sub(rss_file_kib());
    // 32 MiB were mapped.
    assert!(dropped > 28 << 10, "only {dropped} KiB released");
    assert_eq!(f32_bits(&va), bits(&a), "read back after release");
    assert_eq!(f32_bits(&vb), bits(&b), "read back after release");
}
