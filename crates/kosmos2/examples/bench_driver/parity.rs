//! `parity`: the full-size model against the HF reference tensors.

use super::*;

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

pub(super) fn parity(args: &Args) -> Res<()> {
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
