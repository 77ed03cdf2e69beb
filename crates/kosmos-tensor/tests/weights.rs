//! WeightStore: round trips, zero-copy views, conversions, sharding, and typed errors for broken files
//! (including proptest mutations of the header and the length: never a panic).

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use kosmos_tensor::{write_safetensors, DType, Device, Error, Tensor, WeightStore};
use proptest::prelude::*;
use support::*;

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "kosmos-tensor-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn sample_tensors() -> Vec<(&'static str, Tensor)> {
    vec![
        ("a.weight", tensor(&rand_vec(1, 12, 1.0), &[3, 4])),
        (
            "b.bias",
            tensor(&rand_vec(2, 3, 1.0), &[3])
                .to_dtype(DType::BF16)
                .unwrap(),
        ),
        (
            "c.half",
            tensor(&rand_vec(3, 6, 1.0), &[2, 3])
                .to_dtype(DType::F16)
                .unwrap(),
        ),
        // After 3 bf16 + 6 f16 values the next offset is 48 + 6 + 12: not 4-aligned.
        ("d.misaligned", tensor(&rand_vec(4, 5, 1.0), &[5])),
    ]
}

fn write_sample(dir: &Path) -> PathBuf {
    let p = dir.join("model.safetensors");
    let ts = sample_tensors();
    let refs: Vec<(&str, &Tensor)> = ts.iter().map(|(n, t)| (*n, t)).collect();
    write_safetensors(&p, &refs).unwrap();
    p
}

#[test]
fn round_trip_zero_copy_and_conversions() {
    let dir = temp_dir("rt");
    write_sample(&dir);
    let store = WeightStore::open(&dir).unwrap();
    assert_eq!(
        store.keys(),
        vec!["a.weight", "b.bias", "c.half", "d.misaligned"]
    );
    assert!(store.contains("a.weight") && !store.contains("zzz"));
    assert_eq!(store.info("b.bias").unwrap(), (vec![3], DType::BF16));
    let cpu = Device::Cpu;
    for (name, t) in sample_tensors() {
        let got = store.get(name, t.dims(), t.dtype(), &cpu).unwrap();
        assert_eq!(got.to_vec_f32().unwrap(), t.to_vec_f32().unwrap(), "{name}");
        assert_eq!(got.dtype(), t.dtype());
        // every dtype conversion on load equals converting in memory
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let conv = store.get(name, t.dims(), dt, &cpu).unwrap();
            assert_eq!(conv.dtype(), dt);
            assert_eq!(
                conv.to_vec_f32().unwrap(),
                t.to_dtype(dt).unwrap().to_vec_f32().unwrap(),
                "{name} as {dt}"
            );
        }
    }
    let a = store.get("a.weight", &[3, 4], DType::F32, &cpu).unwrap();
    assert!(
        a.is_memory_mapped(),
        "aligned same-dtype load is a zero-copy view"
    );
    let d = store.get("d.misaligned", &[5], DType::F32, &cpu).unwrap();
    assert!(
        !d.is_memory_mapped(),
        "misaligned data falls back to a copy"
    );
    // views of mapped tensors work, and writes copy first
    let mut at = a.transpose(0, 1).unwrap();
    at.write_narrow(0, 0, &Tensor::zeros(&[1, 3], DType::F32, &cpu).unwrap())
        .unwrap();
    assert_eq!(at.to_vec_f32().unwrap()[..3], [0.0, 0.0, 0.0]);
    assert_ne!(a.to_vec_f32().unwrap()[0], 0.0);
    // the file path works too
    assert_eq!(
        WeightStore::open(&dir.join("model.safetensors"))
            .unwrap()
            .keys()
            .len(),
        4
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn typed_errors_for_bad_requests() {
    let dir = temp_dir("req");
    write_sample(&dir);
    let store = WeightStore::open(&dir).unwrap();
    let cpu = Device::Cpu;
    assert!(matches!(
        store.get("nope", &[1], DType::F32, &cpu),
        Err(Error::MissingKey { .. })
    ));
    match store.get("a.weight", &[4, 3], DType::F32, &cpu) {
        Err(Error::WrongShape {
            name,
            expected,
            found,
        }) => {
            assert_eq!(
                (name.as_str(), expected, found),
                ("a.weight", vec![4, 3], vec![3, 4])
            );
        }
        other => panic!("expected WrongShape, got {other:?}"),
    }
    assert!(matches!(store.info("nope"), Err(Error::MissingKey { .. })));
    assert!(matches!(
        WeightStore::open(&dir.join("missing.safetensors")),
        Err(Error::Io { .. })
    ));
    let empty = temp_dir("empty");
    assert!(matches!(
        WeightStore::open(&empty),
        Err(Error::NoWeights { .. })
    ));
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(empty).ok();
}

fn open_bytes(bytes: &[u8]) -> kosmos_tensor::Result<WeightStore> {
    let dir = temp_dir("bytes");
    let p = dir.join("x.safetensors");
    std::fs::write(&p, bytes).unwrap();
    let r = WeightStore::open(&p);
    std::fs::remove_dir_all(dir).ok();
    r
}

#[test]
fn lying_headers_give_typed_errors() {
    let data = vec![0u8; 16];
    let ok = open_bytes(&raw_file(
        r#"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
        &data,
    ))
    .unwrap();
    assert_eq!(ok.keys(), vec!["x"]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "offsets past the end",
            raw_file(
                r#"{"x":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]}}"#,
                &data,
            ),
        ),
        (
            "size disagrees with shape",
            raw_file(
                r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
                &data,
            ),
        ),
        (
            "reversed offsets",
            raw_file(
                r#"{"x":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#,
                &data,
            ),
        ),
        (
            "overlap",
            raw_file(
                r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"y":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                &data,
            ),
        ),
        (
            "absurd shape",
            raw_file(
                r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}}"#,
                &data,
            ),
        ),
        (
            "huge offsets",
            raw_file(
                r#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[18446744073709551600,18446744073709551616]}}"#,
                &data,
            ),
        ),
        (
            "unknown dtype",
            raw_file(
                r#"{"x":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}}"#,
                &data,
            ),
        ),
        ("not json", raw_file("{nope", &data)),
        ("not an object", raw_file("[1,2]", &data)),
        (
            "missing field",
            raw_file(r#"{"x":{"dtype":"F32","shape":[4]}}"#, &data),
        ),
        ("bad utf8", {
            let mut v = raw_file("{\"\u{e9}\":1}", &data);
            v[10] = 0xff;
            v
        }),
        ("header longer than file", {
            let mut v = raw_file("{}", &data);
            v[..8].copy_from_slice(&1000u64.to_le_bytes());
            v
        }),
        ("absurd header length", {
            let mut v = raw_file("{}", &data);
            v[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            v
        }),
        ("shorter than 8 bytes", vec![1, 2, 3]),
    ];
    for (what, bytes) in cases {
        match open_bytes(&bytes) {
            Err(Error::InvalidSafetensors { .. } | Error::Truncated { .. }) => {}
            other => panic!("{what}: expected a typed header error, got {other:?}"),
        }
    }
    // Integer tensors are listed but refused by get.
    let s = open_bytes(&raw_file(
        r#"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
        &data,
    ))
    .unwrap();
    assert!(matches!(s.info("ids"), Err(Error::UnsupportedDType { .. })));
    assert!(matches!(
        s.get("ids", &[2], DType::F32, &Device::Cpu),
        Err(Error::UnsupportedDType { .. })
    ));
}

#[test]
fn truncated_file_is_a_typed_error() {
    let dir = temp_dir("trunc");
    let p = write_sample(&dir);
    let bytes = std::fs::read(&p).unwrap();
    for cut in [0, 4, 8, 20, bytes.len() - 1] {
        match open_bytes(&bytes[..cut]) {
            Err(Error::Truncated { .. } | Error::InvalidSafetensors { .. }) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn sharded_checkpoints() {
    let dir = temp_dir("shard");
    let t1 = tensor(&rand_vec(9, 4, 1.0), &[4]);
    let t2 = tensor(&rand_vec(10, 6, 1.0), &[2, 3]);
    write_safetensors(
        &dir.join("model-00001-of-00002.safetensors"),
        &[("one", &t1)],
    )
    .unwrap();
    write_safetensors(
        &dir.join("model-00002-of-00002.safetensors"),
        &[("two", &t2), ("extra", &t1)],
    )
    .unwrap();
    let index = r#"{"metadata":{"total_size":40},"weight_map":{"one":"model-00001-of-00002.safetensors","two":"model-00002-of-00002.safetensors"}}"#;
    std::fs::write(dir.join("model.safetensors.index.json"), index).unwrap();
    let s = WeightStore::open(&dir).unwrap();
    assert_eq!(s.keys(), vec!["one", "two"]);
    assert_eq!(
        s.get("two", &[2, 3], DType::F32, &Device::Cpu)
            .unwrap()
            .to_vec_f32()
            .unwrap(),
        t2.to_vec_f32().unwrap()
    );
    assert_eq!(s.paths().len(), 2);

    let bad = |json: &str| {
        std::fs::write(dir.join("bad.index.json"), json).unwrap();
        WeightStore::open(&dir.join("bad.index.json"))
    };
    assert!(matches!(
        bad(r#"{"weight_map":{"one":"model-00009.safetensors"}}"#),
        Err(Error::MissingShard { .. })
    ));
    assert!(matches!(
        bad(r#"{"weight_map":{"one":"../model-00001-of-00002.safetensors"}}"#),
        Err(Error::InvalidSafetensors { .. })
    ));
    assert!(matches!(
        bad(r#"{"weight_map":{"zzz":"model-00001-of-00002.safetensors"}}"#),
        Err(Error::InvalidSafetensors { .. })
    ));
    assert!(matches!(
        bad(r#"{"weights":{}}"#),
        Err(Error::InvalidSafetensors { .. })
    ));
    std::fs::remove_dir_all(dir).ok();
}

/// Load every listed tensor as every dtype: must not panic, whatever the store accepted.
fn exercise(store: &WeightStore) {
    for k in store.keys() {
        if let Ok((shape, _)) = store.info(&k) {
            for dt in [DType::F32, DType::BF16, DType::F16] {
                if let Ok(t) = store.get(&k, &shape, dt, &Device::Cpu) {
                    let _ = t.to_vec_f32().unwrap();
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn header_mutations_never_panic(pos in 0usize..4096, byte in any::<u8>(), count in 1usize..4, stride in 1usize..64) {
        let dir = temp_dir("mut");
        let bytes = std::fs::read(write_sample(&dir)).unwrap();
        std::fs::remove_dir_all(dir).ok();
        let hl = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut m = bytes.clone();
        for i in 0..count {
            // Mutate inside the length prefix + header, where the lies live.
            let p = (pos + i * stride) % (8 + hl);
            m[p] = byte;
        }
        match open_bytes(&m) {
            Ok(store) => exercise(&store),
            Err(Error::InvalidSafetensors { .. } | Error::Truncated { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error kind {e:?}"),
        }
    }

    #[test]
    fn digit_edits_in_header_never_panic(which in 0usize..64, digits in "[0-9]{1,22}") {
        // Replace one number in the JSON header with another (shapes and offsets).
        let dir = temp_dir("num");
        let bytes = std::fs::read(write_sample(&dir)).unwrap();
        std::fs::remove_dir_all(dir).ok();
        let hl = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = String::from_utf8(bytes[8..8 + hl].to_vec()).unwrap();
        let spans: Vec<(usize, usize)> = {
            let b = header.as_bytes();
            let mut v = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
                    let s = i;
                    while i < b.len() && b[i].is_ascii_digit() { i += 1; }
                    v.push((s, i));
                } else { i += 1; }
            }
            v
        };
        let (s, e) = spans[which % spans.len()];
        let new_header = format!("{}{}{}", &header[..s], digits, &header[e..]);
        let m = raw_file(&new_header, &bytes[8 + hl..]);
        match open_bytes(&m) {
            Ok(store) => exercise(&store),
            Err(Error::InvalidSafetensors { .. } | Error::Truncated { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error kind {e:?}"),
        }
    }

    #[test]
    fn truncation_and_extension_never_panic(len in 0usize..400, extra in 0usize..8) {
        let dir = temp_dir("len");
        let mut bytes = std::fs::read(write_sample(&dir)).unwrap();
        std::fs::remove_dir_all(dir).ok();
        let full = bytes.len();
        bytes.truncate(len.min(full));
        if len >= full { bytes.extend(std::iter::repeat_n(0u8, extra)); }
        match open_bytes(&bytes) {
            Ok(store) => { prop_assert!(bytes.len() >= full); exercise(&store) }
            Err(Error::InvalidSafetensors { .. } | Error::Truncated { .. }) => prop_assert!(bytes.len() < full),
            Err(e) => prop_assert!(false, "unexpected error kind {e:?}"),
        }
    }
}
