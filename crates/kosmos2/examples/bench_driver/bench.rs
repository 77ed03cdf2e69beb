//! `bench`: one timed image → 64 forced tokens run, by phase, with memory.

use super::*;

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

pub(super) fn bench(args: &Args) -> Res<()> {
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
        weights_read::decode_weight_bytes(model.model.config(), dtype),
    );
    Ok(())
}
