//! The Rust side of `cargo xtask parity --full-size` and `cargo xtask bench` (one engine per process,
//! so peak RSS is this process's own).
//!
//! ```text
//! bench_driver parity    --model DIR --reference DIR --dtype f32|bf16|f16 [--assets DIR]
//! bench_driver bench     --model DIR --processor DIR --image FILE --prompt TEXT
//!                        --dtype f32|bf16|f16|int8|int8-bf16 [--tokens 64] [--warmup-tokens 4]
//! bench_driver load      --model DIR --dtype f32|bf16|f16|int8|int8-bf16
//! bench_driver agree     --model DIR --processor DIR --image FILE --prompt TEXT [--tokens 64]
//!                        [--quantized DIR | --dtype int8|int8-bf16]
//!                        (int8 vs f32 top-1 agreement over a greedy run)
//! bench_driver bandwidth [--gb 2] [--threads 2] [--reps 5]
//! bench_driver floor     --model DIR
//! ```
//!
//! Output is line-based for xtask: `ROW\tcomponent\tmax_abs\tmax_rel\ttol\tpass`,
//! `TOP1\tcomponent\tagree\ttotal`, `INFO\tkey\tvalue` and `RESULT\tkey=value ...`.
//! Threads: the tensor crate uses rayon's global pool; set `RAYON_NUM_THREADS`.
//! `KOSMOS2_RELEASE_VISION=1` (bench) drops the vision tower's mapped pages after each image encode;
//! `KOSMOS2_RELEASE_TEXT=1` (bench) drops the text decoder's before every decode step (to measure
//! what keeping f32 text weights out of the resident set would cost per token).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kosmos2::tensor::{ops, WeightStore};
use kosmos2::{
    greedy_agreement, DType, Device, Kosmos2Batch, Kosmos2Config, Kosmos2ForConditionalGeneration,
    Kosmos2ForwardOptions, Kosmos2Inputs, LmOptions, LogitsMode, Precision, Tensor, TextInputs,
};
use kosmos_processor::{Kosmos2Processor, ProcessOptions, ProcessorInput};
use serde_json::Value;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench_driver: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    // As the `kosmos2` binary does: reuse freed activation buffers.
    kosmos2::tensor::alloc::keep_freed_memory();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = argv.split_first() else {
        return Err(
            "usage: bench_driver parity|bench|load|agree|bandwidth|floor --key value ...".into(),
        );
    };
    let args = Args::parse(rest)?;
    match mode.as_str() {
        "parity" => parity(&args),
        "bench" => bench(&args),
        "load" => load(&args),
        "agree" => agree(&args),
        "bandwidth" => bandwidth(&args),
        "floor" => floor(&args),
        other => Err(format!("unknown mode {other:?}").into()),
    }
}

/// `--key value` pairs.
#[derive(Debug)]
struct Args(HashMap<String, String>);

impl Args {
    fn parse(rest: &[String]) -> Res<Self> {
        let mut map = HashMap::new();
        let mut it = rest.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --key, got {k:?}"))?;
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            map.insert(key.to_string(), v.clone());
        }
        Ok(Self(map))
    }

    fn str(&self, key: &str) -> Res<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("missing --{key}").into())
    }

    fn path(&self, key: &str) -> Res<PathBuf> {
        self.str(key).map(PathBuf::from)
    }

    fn num(&self, key: &str, default: usize) -> Res<usize> {
        match self.0.get(key) {
            Some(v) => Ok(v.parse().map_err(|_| format!("--{key}: not a number"))?),
            None => Ok(default),
        }
    }

    fn precision(&self) -> Res<Precision> {
        Ok(self.str("dtype")?.parse()?)
    }

    /// A float dtype (the parity mode compares against HF at a dtype).
    fn dtype(&self) -> Res<DType> {
        match self.precision()? {
            p if p.quantizes_int8() => {
                Err("parity takes f32, bf16 or f16 (int8: use `agree`)".into())
            }
            p => Ok(p.dtype()),
        }
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// `load --model DIR --dtype D`: the load alone, its time and memory (zero-copy f32 weights fault in
/// later, during the first forward pass; `bench` shows that by phase).
fn load(args: &Args) -> Res<()> {
    let dtype = args.precision()?;
    Mem::now().print("start");
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let model = Kosmos2ForConditionalGeneration::load(args.path("model")?, &Device::Cpu, dtype)?;
    let load_ms = ms(t);
    let (user, sys) = cpu_seconds();
    let after = Mem::now();
    after.print("load");
    println!(
        "RESULT\tload_ms={load_ms:.1} load_user_s={:.2} load_sys_s={:.2} rss_after_load_mib={:.0} \
         peak_rss_mib={:.0}",
        user - cpu0.0,
        sys - cpu0.1,
        after.rss,
        after.hwm
    );
    drop(model);
    Ok(())
}

/// User and system CPU seconds of this process so far, all threads (`/proc/self/stat` fields 14
/// and 15, in clock ticks, taken as the usual 100 per second).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it follow the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let field = |i: usize| {
        rest.split_whitespace()
            .nth(i)
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |t| t / 100.0)
    };
    // After ')': field 3 (state) is index 0, so utime (14) is index 11 and stime (15) index 12.
    (field(11), field(12))
}

/// `VmHWM` (peak resident set) of this process, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Weights one decode step reads: every text block's linear layers and LayerNorms, the final
/// LayerNorm and the (tied) lm_head. (The embedding row and the KV cache are left out: at 100
/// tokens the cache is ~40 MB in f32, under 1% of the f32 weights.)
fn decode_weight_params(config: &Kosmos2Config) -> usize {
    let t = &config.text_config;
    let (d, f) = (t.embed_dim, t.ffn_dim);
    let linear = 4 * (d * d + d) + (d * f + f) + (f * d + d);
    let norms = 3 * 2 * d + 2 * f;
    t.layers * (linear + norms) + 2 * d + t.vocab_size * d
}

/// Bytes of weights one decode step reads at `precision`: the int8 precisions read the linear
/// weights and the head as one byte each plus an f32 scale per output row, and the biases and
/// LayerNorms in their float dtype.
fn decode_weight_bytes(config: &Kosmos2Config, precision: Precision) -> usize {
    let params = decode_weight_params(config);
    let float = precision.dtype().size_in_bytes();
    if !precision.quantizes_int8() {
        return params * float;
    }
    let t = &config.text_config;
    let (d, f) = (t.embed_dim, t.ffn_dim);
    let int8 = t.layers * (4 * d * d + 2 * d * f) + t.vocab_size * d;
    let rows = t.layers * (4 * d + f + d) + t.vocab_size;
    int8 + 4 * rows + float * (params - int8)
}

/// `agree --model DIR ...`: int8 (quantised at load at `--dtype`, default `int8`, or read from
/// `--quantized DIR`) against f32 over a greedy run on one image and prompt: top-1 agreement with
/// teacher forcing, and the shared prefix.
fn agree(args: &Args) -> Res<()> {
    let tokens = args.num("tokens", 64)?;
    let proc = Kosmos2Processor::from_dir(args.path("processor")?)?;
    let input = ProcessorInput::text(args.str("prompt")?).with_image(args.path("image")?);
    let out = proc.process_single(&input, &ProcessOptions::default())?;
    let batch = Kosmos2Batch::from_processor(&out, &Device::Cpu)?;
    let model_dir = args.path("model")?;
    let reference = Kosmos2ForConditionalGeneration::load(&model_dir, &Device::Cpu, DType::F32)?;
    let candidate = match args.0.get("dtype") {
        Some(d) => d.parse()?,
        None => Precision::Int8,
    };
    let int8 = match args.0.get("quantized") {
        Some(q) => Kosmos2ForConditionalGeneration::load(q, &Device::Cpu, Precision::F32)?,
        None => Kosmos2ForConditionalGeneration::load(&model_dir, &Device::Cpu, candidate)?,
    };
    let t = Instant::now();
    let a = greedy_agreement(&reference, &int8, &batch, tokens)?;
    println!(
        "TOP1	int8-vs-f32/teacher-forced	{}	{}",
        a.teacher_forced, a.tokens
    );
    println!(
        "INFO	greedy ids f32	{:?}
INFO	greedy ids int8	{:?}",
        a.reference_ids, a.candidate_ids
    );
    println!(
        "RESULT	tokens={} teacher_forced={} free_running_prefix={} agree_s={:.1}",
        a.tokens,
        a.teacher_forced,
        a.free_running_prefix,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `floor --model DIR`: the weights a decode step reads, from `config.json`.
fn floor(args: &Args) -> Res<()> {
    let config = Kosmos2Config::from_file(&args.path("model")?.join("config.json"))?;
    println!(
        "RESULT\tdecode_weight_params={}",
        decode_weight_params(&config)
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// parity

/// max |got - want| and max |got - want| / max |want| (the rule of `tests/common::parity`).
fn rel_err(got: &[f32], want: &[f32]) -> Res<(f64, f64)> {
    if got.len() != want.len() {
        return Err(format!("length {} vs reference {}", got.len(), want.len()).into());
    }
    let (mut max_abs, mut scale) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        if g.is_nan() {
            return Err("NaN in computed output".into());
        }
        max_abs = max_abs.max((f64::from(g) - f64::from(w)).abs());
        scale = scale.max(f64::from(w).abs());
    }
    Ok((max_abs, max_abs / scale.max(f64::MIN_POSITIVE)))
}

fn argmax_rows(x: &[f32], cols: usize) -> Vec<usize> {
    x.chunks_exact(cols)
        .map(|r| {
            let mut best = 0;
            for (j, &v) in r.iter().enumerate() {
                if v > r[best] {
                    best = j;
                }
            }
            best
        })
        .collect()
}

/// The tolerance of a dtype's rows (the fixture parity tests' values: f32 1e-4, f16 4e-3,
/// bf16 2e-2; half precision here means half-precision weights with f32 activations).
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-4,
        DType::F16 => 4e-3,
        DType::BF16 => 2e-2,
    }
}

struct Reference {
    json: Value,
    store: WeightStore,
}

impl Reference {
    fn open(dir: &Path) -> Res<Self> {
        let json = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json"))?)?;
        let store = WeightStore::open(&dir.join("reference.safetensors"))?;
        Ok(Self { json, store })
    }

    fn ids(&self, key: &str) -> Res<Vec<u32>> {
        self.json[key]
            .as_array()
            .ok_or_else(|| format!("reference.json: no {key}"))?
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| format!("reference.json: bad {key}").into())
            })
            .collect()
    }

    fn tensor(&self, key: &str) -> Res<Tensor> {
        let (shape, _) = self.store.info(key)?;
        Ok(self.store.get(key, &shape, DType::F32, &Device::Cpu)?)
    }

    fn f32(&self, key: &str) -> Res<Vec<f32>> {
        Ok(self.tensor(key)?.to_vec_f32()?)
    }
}

struct Report {
    dtype: DType,
    failed: usize,
}

impl Report {
    fn row(&mut self, component: &str, got: &[f32], want: &[f32], tol: f64) -> Res<()> {
        let (abs, rel) = rel_err(got, want)?;
        let pass = rel <= tol;
        self.failed += usize::from(!pass);
        println!(
            "ROW\tfull-size/{}/{component}\t{abs:e}\t{rel:e}\t{tol:e}\t{pass}",
            self.dtype.as_str()
        );
        Ok(())
    }

    /// An informational row (compared with HF's own half-precision run: no pass/fail).
    fn info_row(&self, component: &str, got: &[f32], want: &[f32]) -> Res<()> {
        let (abs, rel) = rel_err(got, want)?;
        println!(
            "ROW\tfull-size/{}/{component}\t{abs:e}\t{rel:e}\tinf\ttrue",
            self.dtype.as_str()
        );
        Ok(())
    }

    fn top1(&self, component: &str, got: &[usize], want: &[usize]) {
        let agree = got.iter().zip(want).filter(|(a, b)| a == b).count();
        println!(
            "TOP1\tfull-size/{}/{component}\t{agree}\t{}",
            self.dtype.as_str(),
            want.len()
        );
        let differ: Vec<String> = (0..got.len().min(want.len()))
            .filter(|&i| got[i] != want[i])
            .map(|i| i.to_string())
            .collect();
        if !differ.is_empty() {
            println!(
                "INFO\ttop-1 differs ({component}) at rows\t{}",
                differ.join(",")
            );
        }
    }
}

fn parity(args: &Args) -> Res<()> {
    let dtype = args.dtype()?;
    let model_dir = args.path("model")?;
    let ref_dir = args.path("reference")?;
    let r = Reference::open(&ref_dir)?;
    let t0 = Instant::now();
    let model = Kosmos2ForConditionalGeneration::load(&model_dir, &Device::Cpu, dtype)?;
    println!("INFO\tload_ms\t{:.0}", ms(t0));

    let ids = r.ids("input_ids")?;
    let mask = r.ids("attention_mask")?;
    let pos = r.ids("image_embeds_position_mask")?;
    let greedy = r.ids("greedy_ids")?;
    let steps = r.ids("forced_ids")?.len() + 1;
    let pixels = r.tensor("pixel_values")?;
    let t = ids.len();
    let vocab = model.model.config().text_config.vocab_size;
    let mut report = Report { dtype, failed: 0 };
    let tol = tolerance(dtype);

    if let Some(assets) = args.0.get("assets") {
        check_processor(Path::new(assets), &ids, &pos, &r.f32("pixel_values")?)?;
    }

    // Prefill on HF's processor output, logits at every position.
    let t1 = Instant::now();
    let text = TextInputs::from_ids(&ids, 1, t)?.with_attention_mask(&mask);
    let inputs = Kosmos2Inputs::new(text).with_pixel_values(&pixels, &pos);
    let cache = model.model.new_cache(1, t + steps.max(greedy.len()) + 1)?;
    let lm = LmOptions {
        logits: LogitsMode::All,
        labels: None,
    };
    let mut out = model.forward(&inputs, Some(cache), &Kosmos2ForwardOptions::default(), &lm)?;
    println!("INFO\tprefill_ms\t{:.0}", ms(t1));
    let vision = out
        .vision_model_output
        .as_ref()
        .ok_or("no vision output")?
        .last_hidden_state
        .to_vec_f32()?;
    let embeds = out
        .image_embeds
        .as_ref()
        .ok_or("no image_embeds")?
        .to_vec_f32()?;
    let logits = out.logits.as_ref().ok_or("no logits")?.to_vec_f32()?;
    report.row(
        "vision_last_hidden_state",
        &vision,
        &r.f32("vision_last_hidden_state")?,
        tol,
    )?;
    report.row("image_embeds", &embeds, &r.f32("image_embeds")?, tol)?;
    let want_logits = r.f32("logits")?;
    report.row("logits(all 71 rows)", &logits, &want_logits, tol)?;
    let last = (t - 1) * vocab;
    report.row(
        "logits(last row)",
        &logits[last..],
        &want_logits[last..],
        tol,
    )?;
    let got_top = argmax_rows(&logits, vocab);
    report.top1(
        "logits vs HF f32",
        &got_top,
        &argmax_rows(&want_logits, vocab),
    );

    // Greedy from a copy of the prefill cache: ids and step logits of HF `generate`.
    let prefill_last = logits[last..].to_vec();
    let mut cache = out.past_key_values.clone();
    let (greedy_logits, greedy_ids) =
        decode(&model, &mut cache, &mask, &prefill_last, &greedy, true)?;
    report.row(
        &format!("greedy step logits ({} steps)", greedy.len()),
        &greedy_logits,
        &r.f32("greedy_step_logits")?,
        tol,
    )?;
    report.top1(
        "greedy ids vs HF f32 generate",
        &greedy_ids,
        &to_usize(&greedy),
    );

    // Cached decode fed HF's forced tokens (diverse inputs; greedy on a random model repeats).
    let forced = r.ids("forced_ids")?;
    let t2 = Instant::now();
    let (forced_logits, forced_top) = decode(
        &model,
        &mut out.past_key_values,
        &mask,
        &prefill_last,
        &forced,
        false,
    )?;
    println!(
        "INFO\tdecode_ms_per_token\t{:.1}",
        ms(t2) / forced.len().max(1) as f64
    );
    report.row(
        &format!("cached decode logits ({} steps)", forced.len() + 1),
        &forced_logits,
        &r.f32("forced_step_logits")?,
        tol,
    )?;
    report.top1(
        "cached decode top-1 vs HF f32",
        &forced_top,
        &to_usize(&r.ids("forced_step_argmax")?),
    );

    if dtype == DType::BF16 {
        // Calibration: HF's own bf16 run (bf16 weights AND activations) against HF f32.
        let (abs, rel) = rel_err(&r.f32("hf_bf16_logits")?, &want_logits)?;
        println!(
            "ROW\tfull-size/hf-bf16 (HF's own)/logits(all 71 rows)\t{abs:e}\t{rel:e}\tinf\ttrue"
        );
        let (abs, rel) = rel_err(&r.f32("hf_bf16_image_embeds")?, &r.f32("image_embeds")?)?;
        println!("ROW\tfull-size/hf-bf16 (HF's own)/image_embeds\t{abs:e}\t{rel:e}\tinf\ttrue");
        let top = argmax_rows(&r.f32("hf_bf16_logits")?, vocab);
        let agree = top
            .iter()
            .zip(&argmax_rows(&want_logits, vocab))
            .filter(|(a, b)| a == b)
            .count();
        println!(
            "TOP1\tfull-size/hf-bf16 (HF's own)/logits vs HF f32\t{agree}\t{}",
            top.len()
        );
    }
    if dtype != DType::F32 {
        let hf_logits = r.f32("hf_bf16_logits")?;
        report.info_row(
            "image_embeds vs HF bf16",
            &embeds,
            &r.f32("hf_bf16_image_embeds")?,
        )?;
        report.info_row("logits(all rows) vs HF bf16", &logits, &hf_logits)?;
        report.top1(
            "logits vs HF bf16",
            &got_top,
            &argmax_rows(&hf_logits, vocab),
        );
    }
    println!("INFO\tpeak_rss_mib\t{:.0}", peak_rss_mib());
    if report.failed > 0 {
        return Err(format!("{} rows above tolerance", report.failed).into());
    }
    Ok(())
}

fn to_usize(ids: &[u32]) -> Vec<usize> {
    ids.iter().map(|&x| x as usize).collect()
}

/// Cached decode after a prefill whose last logits row is `first`: feeds `tokens[i]` (forced) or
/// the previous arg-max (`greedy`, `tokens.len()` steps). Returns the logits rows (the first is
/// `first`) and their arg-maxes.
fn decode(
    model: &Kosmos2ForConditionalGeneration,
    cache: &mut Option<kosmos2::KvCache>,
    prompt_mask: &[u32],
    first: &[f32],
    tokens: &[u32],
    greedy: bool,
) -> Res<(Vec<f32>, Vec<usize>)> {
    let vocab = first.len();
    let mut rows = first.to_vec();
    let mut am = prompt_mask.to_vec();
    let lm = LmOptions {
        logits: LogitsMode::Last,
        labels: None,
    };
    let steps = if greedy {
        tokens.len().saturating_sub(1)
    } else {
        tokens.len()
    };
    for &forced in tokens.iter().take(steps) {
        let tok = if greedy {
            argmax_rows(&rows[rows.len() - vocab..], vocab)[0] as u32
        } else {
            forced
        };
        am.push(1);
        let step = [tok];
        let text = TextInputs::from_ids(&step, 1, 1)?.with_attention_mask(&am);
        let out = model.forward(
            &Kosmos2Inputs::new(text),
            cache.take(),
            &Kosmos2ForwardOptions::default(),
            &lm,
        )?;
        *cache = out.past_key_values;
        rows.extend(out.logits.as_ref().ok_or("no logits")?.to_vec_f32()?);
    }
    let top = argmax_rows(&rows, vocab);
    Ok((rows, top))
}

/// Our processor on the same photo and prompt: ids must equal HF's; the pixel difference is
/// reported (HF's pixels are what the model comparison uses).
fn check_processor(assets: &Path, ids: &[u32], pos: &[u32], hf_pixels: &[f32]) -> Res<()> {
    let proc = Kosmos2Processor::from_dir(assets.join("kosmos-2-patch14-224"))?;
    let input = ProcessorInput::text("<grounding>An image of")
        .with_image(assets.join("images").join("snowman.jpg"));
    let out = proc.process_single(&input, &ProcessOptions::default())?;
    let batch = Kosmos2Batch::from_processor(&out, &Device::Cpu)?;
    let ids_equal = batch.input_ids == ids;
    let pos_equal = batch.image_embeds_position_mask.as_deref() == Some(pos);
    let ours = batch
        .pixel_values
        .as_ref()
        .ok_or("processor returned no pixels")?
        .to_vec_f32()?;
    let (abs, _) = rel_err(&ours, hf_pixels)?;
    println!("INFO\tprocessor_input_ids_equal\t{ids_equal}");
    println!("INFO\tprocessor_position_mask_equal\t{pos_equal}");
    println!("INFO\tprocessor_pixels_max_abs_diff\t{abs:e}");
    if !ids_equal || !pos_equal {
        return Err("our processor's ids differ from HF's".into());
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// bench

/// The i-th forced decode token (the same formula as `bench_hf.py`).
fn forced_token(i: usize) -> u32 {
    (100 + (i * 7919) % 60000) as u32
}

struct Timings {
    preprocess_ms: f64,
    encode_ms: f64,
    prefill_ms: f64,
    decode_ms: f64,
    e2e_ms: f64,
}

/// Image file + prompt → `tokens` forced new tokens, timing each phase. Prints the memory after
/// each phase (`INFO\tmem\t<run>/<phase> ...`, see [`Mem`]).
fn generate_once(
    model: &Kosmos2ForConditionalGeneration,
    proc: &Kosmos2Processor,
    image: &Path,
    prompt: &str,
    tokens: usize,
    run: &str,
) -> Res<Timings> {
    let start = Instant::now();
    let input = ProcessorInput::text(prompt).with_image(image.to_path_buf());
    let out = proc.process_single(&input, &ProcessOptions::default())?;
    let batch = Kosmos2Batch::from_processor(&out, &Device::Cpu)?;
    let preprocess_ms = ms(start);

    let t = Instant::now();
    let pixels = batch.pixel_values.as_ref().ok_or("no pixels")?;
    let features = model
        .model
        .get_image_features(pixels, &Kosmos2ForwardOptions::default())?;
    let encode_ms = ms(t);
    Mem::now().print(&format!("{run}/encode"));
    if std::env::var_os("KOSMOS2_RELEASE_VISION").is_some() {
        model.model.release_vision_pages();
        Mem::now().print(&format!("{run}/release-vision"));
    }

    let t = Instant::now();
    let pos = batch
        .image_embeds_position_mask
        .as_deref()
        .ok_or("no image position mask")?;
    let mut mask = Vec::with_capacity(batch.seq_len + tokens);
    mask.extend_from_slice(&batch.attention_mask);
    let text = TextInputs::from_ids(&batch.input_ids, 1, batch.seq_len)?
        .with_attention_mask(&mask)
        .with_image_embeds(&features.image_embeds, pos);
    let cache = model.model.new_cache(1, batch.seq_len + tokens)?;
    let lm = LmOptions {
        logits: LogitsMode::Last,
        labels: None,
    };
    let opts = Kosmos2ForwardOptions::default();
    let mut step = model.forward(&Kosmos2Inputs::new(text), Some(cache), &opts, &lm)?;
    let mut next = ops::argmax_last_dim(step.logits.as_ref().ok_or("no logits")?)?;
    let prefill_ms = ms(t);
    Mem::now().print(&format!("{run}/prefill"));

    let release_text = std::env::var_os("KOSMOS2_RELEASE_TEXT").is_some();
    let t = Instant::now();
    for i in 0..tokens {
        if release_text {
            model.model.release_text_pages();
        }
        let tok = [forced_token(i)];
        mask.push(1);
        let text = TextInputs::from_ids(&tok, 1, 1)?.with_attention_mask(&mask);
        step = model.forward(
            &Kosmos2Inputs::new(text),
            step.past_key_values.take(),
            &opts,
            &lm,
        )?;
        next = ops::argmax_last_dim(step.logits.as_ref().ok_or("no logits")?)?;
    }
    let decode_ms = ms(t);
    Mem::now().print(&format!("{run}/decode"));
    std::hint::black_box(next);
    Ok(Timings {
        preprocess_ms,
        encode_ms,
        prefill_ms,
        decode_ms,
        e2e_ms: ms(start),
    })
}

fn bench(args: &Args) -> Res<()> {
    let dtype = args.precision()?;
    let tokens = args.num("tokens", 64)?;
    let warmup = args.num("warmup-tokens", 4)?;
    let image = args.path("image")?;
    let prompt = args.str("prompt")?;
    let proc = Kosmos2Processor::from_dir(args.path("processor")?)?;

    Mem::now().print("start");
    let t = Instant::now();
    let model = Kosmos2ForConditionalGeneration::load(args.path("model")?, &Device::Cpu, dtype)?;
    let load_ms = ms(t);
    let after_load = Mem::now();
    after_load.print("load");
    let rss_after_load = after_load.rss;

    generate_once(&model, &proc, &image, prompt, warmup, "warmup")?;
    let r = generate_once(&model, &proc, &image, prompt, tokens, "timed")?;
    println!(
        "RESULT\tload_ms={load_ms:.1} preprocess_ms={:.2} encode_ms={:.1} prefill_ms={:.1} \
         decode_ms_per_token={:.2} e2e_ms={:.1} peak_rss_mib={:.0} rss_after_load_mib={rss_after_load:.0} \
         peak_rss_after_load_mib={:.0} decode_weight_bytes={} tokens={tokens}",
        r.preprocess_ms,
        r.encode_ms,
        r.prefill_ms,
        r.decode_ms / tokens.max(1) as f64,
        r.e2e_ms,
        peak_rss_mib(),
        after_load.hwm,
        decode_weight_bytes(model.model.config(), dtype),
    );
    Ok(())
}

/// This process's memory from `/proc/self/status`, in MiB: resident now (`VmRSS`), its peak
/// (`VmHWM`), and the resident split into anonymous memory (`RssAnon`: owned tensors, activations,
/// caches, heap) and file pages (`RssFile`: mapped weights, the binary).
#[derive(Debug, Clone, Copy)]
struct Mem {
    rss: f64,
    hwm: f64,
    anon: f64,
    file: f64,
}

impl Mem {
    fn now() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(f64::NAN, |kb| kb / 1024.0)
        };
        Self {
            rss: field("VmRSS:"),
            hwm: field("VmHWM:"),
            anon: field("RssAnon:"),
            file: field("RssFile:"),
        }
    }

    fn print(&self, phase: &str) {
        println!(
            "INFO\tmem\t{phase} rss_mib={:.0} hwm_mib={:.0} anon_mib={:.0} file_mib={:.0}",
            self.rss, self.hwm, self.anon, self.file
        );
    }
}

// ------------------------------------------------------------------------------------------------
// bandwidth

/// Sums a slice with 8 independent accumulators (vectorises without fast-math: integer adds).
fn sum_u64(xs: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(x);
        }
    }
    let t: u64 = tail.iter().fold(0, |a, &x| a.wrapping_add(x));
    acc.iter().fold(t, |a, &x| a.wrapping_add(x))
}

/// DRAM read bandwidth: a `gb`-GB buffer summed by `threads` threads, `reps` times.
fn bandwidth(args: &Args) -> Res<()> {
    let gb = args.num("gb", 2)?;
    let threads = args.num("threads", 2)?.max(1);
    let reps = args.num("reps", 5)?.max(1);
    let n = gb * (1 << 30) / 8;
    let buf: Vec<u64> = (0..n as u64).collect();
    let chunk = n.div_ceil(threads);
    let mut rates = Vec::with_capacity(reps);
    let mut check = 0u64;
    for _ in 0..reps {
        let t = Instant::now();
        let sum = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(chunk)
                .map(|part| s.spawn(move || sum_u64(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        let secs = t.elapsed().as_secs_f64();
        check = check.wrapping_add(sum);
        rates.push((n * 8) as f64 / secs / 1e9);
    }
    std::hint::black_box(check);
    rates.sort_by(f64::total_cmp);
    println!(
        "RESULT\tread_gb_s_median={:.2} read_gb_s_best={:.2} read_gb_s_worst={:.2} gb={gb} threads={threads} reps={reps}",
        rates[rates.len() / 2],
        rates[rates.len() - 1],
        rates[0]
    );
    Ok(())
}
