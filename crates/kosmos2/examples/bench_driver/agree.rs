//! `agree`: top-1 agreement of an int8 model with f32 over a greedy run.

use super::*;

/// `agree --model DIR ...`: int8 (quantised at load at `--dtype`, default `int8`, or read from
/// `--quantized DIR`) against f32 over a greedy run on one image and prompt: top-1 agreement with
/// teacher forcing, and the shared prefix.
pub(super) fn agree(args: &Args) -> Res<()> {
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
