//! Decode ms/token of the text decoder on its three paths, side by side in one process:
//!
//! - `general`: `forward` on the allocating layer-by-layer path (`output_hidden_states` keeps it off
//!   the fast path; the extra cost is one Arc clone per layer), + `lm_head` + argmax;
//! - `forward`: `forward` taking the decode fast path (allocates the hidden state and the logits);
//! - `scratch`: `decode_step` with a reused `DecodeScratch` (allocates nothing).
//!
//! ```text
//! cargo run --release -p kosmos-text --example decode_bench -- [MODEL_DIR] [TOKENS] [REPS]
//! ```
//! MODEL_DIR holds `config.json` + `model.safetensors` (default: the tiny fixture); the prompt is
//! 71 text tokens. Paths alternate within each repetition; the median per path is printed.

use std::path::PathBuf;
use std::time::Instant;

use kosmos_tensor::{ops, DType, Device, WeightStore};
use kosmos_text::{
    DecodeScratch, DecodeStep, ForwardOptions, Kosmos2TextConfig, LogitsMode, StoreWeights,
    TextForCausalLM, TextInputs, TextNames,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const PROMPT: usize = 71;

#[derive(Clone, Copy, Debug)]
enum Path {
    General,
    Forward,
    Scratch,
}

/// Prefill, then `tokens` greedy-fed forced steps on `path`; returns ms per decode step.
fn run(lm: &TextForCausalLM, path: Path, tokens: usize) -> Res<f64> {
    let v = lm.config().vocab_size as u32;
    let ids: Vec<u32> = (0..PROMPT as u32)
        .map(|i| 2 + (i * 7919) % (v - 2))
        .collect();
    let mut cache = lm.model.new_cache(1, PROMPT + tokens)?;
    let inputs = TextInputs::from_ids(&ids, 1, PROMPT)?;
    let opts = ForwardOptions::default();
    lm.forward(&inputs, Some(&mut cache), &opts, LogitsMode::Last, None)?;
    let mut scratch = DecodeScratch::new(lm.config(), 1, PROMPT + tokens);
    let forced = |i: usize| 2 + ((100 + i as u32 * 7919) % (v - 2));
    let general = ForwardOptions {
        output_hidden_states: true,
        ..Default::default()
    };
    let t = Instant::now();
    let mut sink = 0u32;
    for i in 0..tokens {
        let tok = [forced(i)];
        sink ^= match path {
            Path::General | Path::Forward => {
                let o = if matches!(path, Path::General) {
                    &general
                } else {
                    &opts
                };
                let inputs = TextInputs::from_ids(&tok, 1, 1)?;
                let out = lm.forward(&inputs, Some(&mut cache), o, LogitsMode::Last, None)?;
                let logits = out.logits.ok_or("no logits")?;
                ops::argmax_last_dim(&logits)?[0]
            }
            Path::Scratch => {
                let logits = lm.decode_step(&DecodeStep::new(&tok), &mut cache, &mut scratch)?;
                ops::argmax_slice(logits).ok_or("no logits")?
            }
        };
    }
    std::hint::black_box(sink);
    Ok(t.elapsed().as_secs_f64() * 1e3 / tokens as f64)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = match args.first() {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/tiny"),
    };
    let tokens: usize = args.get(1).map_or(Ok(64), |s| s.parse())?;
    let reps: usize = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let cfg: Kosmos2TextConfig = serde_json::from_value(json["text_config"].clone())?;
    let store = WeightStore::open(&dir.join("model.safetensors"))?;
    let src = StoreWeights::new(&store, DType::F32, &Device::Cpu);
    let lm = TextForCausalLM::load(&cfg, &src, &TextNames::kosmos2())?;
    let paths = [Path::General, Path::Forward, Path::Scratch];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for (p, t) in paths.iter().zip(times.iter_mut()) {
        run(&lm, *p, tokens.min(4))?; // warm-up
        t.clear();
    }
    for _ in 0..reps {
        for (p, t) in paths.iter().zip(times.iter_mut()) {
            t.push(run(&lm, *p, tokens)?);
        }
    }
    println!(
        "model {} ({} layers, d {}), {tokens} tokens, {reps} reps, threads {}",
        dir.display(),
        cfg.layers,
        cfg.embed_dim,
        rayon_threads()
    );
    for (p, t) in paths.iter().zip(times.iter_mut()) {
        t.sort_by(f64::total_cmp);
        let med = t[t.len() / 2];
        println!(
            "{p:?}\tmedian {med:.4} ms/token\tmin {:.4}\tmax {:.4}",
            t[0],
            t[t.len() - 1]
        );
    }
    Ok(())
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into())
}
