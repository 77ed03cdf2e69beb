//! Image preprocessing speed on the shared photos (decode from memory, RGB conversion,
//! Pillow-exact resize, rescale and normalise), one core.
//!
//! `cargo bench -p kosmos-processor --bench preprocess` runs the criterion benchmarks.
//! With `KOSMOS2_BENCH_HF=<python>` it also times HF's PIL path (`hf_preprocess.py`, the
//! `CLIPImageProcessorPil` call that `Kosmos2Processor` makes, on the same in-memory bytes)
//! and this crate with the same method, and prints images per second and the ratio.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use kosmos_processor::{ImageProcessor, PreprocessorConfig};

fn assets() -> Option<PathBuf> {
    let dir = match std::env::var_os("KOSMOS2_ASSETS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/assets"),
    };
    dir.join("images").is_dir().then_some(dir)
}

fn photos(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("images"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .filter_map(|n| {
            let bytes = std::fs::read(dir.join("images").join(&n)).ok()?;
            Some((n, bytes))
        })
        .collect()
}

fn processor(dir: &std::path::Path) -> ImageProcessor {
    let cfg = PreprocessorConfig::from_file(
        &dir.join("kosmos-2-patch14-224")
            .join("preprocessor_config.json"),
    )
    .unwrap_or_default();
    ImageProcessor::new(cfg)
}

fn bench(c: &mut Criterion, dir: &std::path::Path) {
    let p = processor(dir);
    let imgs = photos(dir);
    let mut g = c.benchmark_group("preprocess");
    g.throughput(Throughput::Elements(1));
    for (name, bytes) in &imgs {
        g.bench_function(name.as_str(), |b| {
            b.iter(|| p.preprocess_bytes(bytes).map(|a| a.len()).unwrap_or(0))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("preprocess_all_photos");
    g.throughput(Throughput::Elements(imgs.len() as u64));
    g.sample_size(20);
    g.bench_function("all", |b| {
        b.iter(|| {
            imgs.iter()
                .map(|(_, bytes)| p.preprocess_bytes(bytes).map(|a| a.len()).unwrap_or(0))
                .sum::<usize>()
        })
    });
    g.finish();
}

/// Images per second with the Python script's method: warm-up, then repeat for at least
/// `budget` and 3 runs.
fn images_per_second(p: &ImageProcessor, bytes: &[u8], budget: Duration) -> f64 {
    let _ = p.preprocess_bytes(bytes);
    let (mut n, start) = (0u32, Instant::now());
    loop {
        let _ = std::hint::black_box(p.preprocess_bytes(bytes));
        n += 1;
        let el = start.elapsed();
        if el >= budget && n >= 3 {
            return f64::from(n) / el.as_secs_f64();
        }
    }
}

/// HF's images per second against ours, measured side by side: a long-lived Python child
/// (`hf_preprocess.py --serve`) times one image, then this process times the same image, image
/// after image, for `ROUNDS` rounds; each engine's per-image figure is the median of its rounds.
/// Alternating image by image keeps a load change on a shared machine from landing on one side.
fn compare_with_hf(dir: &std::path::Path, python: &str) {
    use std::io::{BufRead, BufReader, Write};
    const ROUNDS: usize = 3;
    let budget = 1.0;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/hf_preprocess.py");
    let child = std::process::Command::new(python)
        .arg(&script)
        .arg(dir)
        .arg(budget.to_string())
        .arg("--serve")
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot run {python}: {e}");
            return;
        }
    };
    let (Some(mut to_hf), Some(from_hf)) = (child.stdin.take(), child.stdout.take()) else {
        eprintln!("no pipes to the HF script");
        return;
    };
    let mut from_hf = BufReader::new(from_hf).lines();
    let mut hf_time = move |name: &str| -> Option<f64> {
        writeln!(to_hf, "{name}").ok()?;
        to_hf.flush().ok()?;
        let line = from_hf.next()?.ok()?;
        let (_, v) = line.rsplit_once(' ')?;
        v.parse::<f64>().ok().filter(|x| x.is_finite())
    };
    let p = processor(dir);
    let photos = photos(dir);
    let mut hf: Vec<Vec<f64>> = vec![Vec::new(); photos.len()];
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); photos.len()];
    for _ in 0..ROUNDS {
        for (i, (name, bytes)) in photos.iter().enumerate() {
            let Some(h) = hf_time(name) else {
                eprintln!("HF script gave no time for {name}");
                return;
            };
            hf[i].push(h);
            ours[i].push(images_per_second(
                &p,
                bytes,
                Duration::from_secs_f64(budget),
            ));
        }
    }
    drop(hf_time);
    let _ = child.wait();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut ours_t, mut hf_t) = (0.0, 0.0);
    println!(
        "\n{:<18} {:>12} {:>12} {:>7}   ({ROUNDS} alternating rounds, medians)",
        "image", "HF img/s", "ours img/s", "ratio"
    );
    for (i, (name, _)) in photos.iter().enumerate() {
        let (h, o) = (median(&mut hf[i]), median(&mut ours[i]));
        ours_t += 1.0 / o;
        hf_t += 1.0 / h;
        println!("{name:<18} {h:>12.1} {o:>12.1} {:>6.2}x", o / h);
    }
    let k = photos.len() as f64;
    println!(
        "{:<18} {:>12.1} {:>12.1} {:>6.2}x",
        "ALL (mean time)",
        k / hf_t,
        k / ours_t,
        hf_t / ours_t
    );
}

fn main() {
    let Some(dir) = assets() else {
        eprintln!("skipping the preprocess bench: shared assets not found (set KOSMOS2_ASSETS)");
        return;
    };
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &dir);
    c.final_summary();
    if let Ok(python) = std::env::var("KOSMOS2_BENCH_HF") {
        compare_with_hf(&dir, &python);
    }
}
