//! Dispatch of the parsed command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use kosmos2::generation::GenerationConfig;
use kosmos2::task::CaptionStyle;
use kosmos2::{Device, Precision};
use serde_json::Value;

use crate::bboxes::parse_box_arg;
use crate::cli::{Cli, Command, DTypeArg, DeviceArg, GenArgs, RunArgs};
use crate::debug::{load_processor, postprocess_json, process_json, ProcessRequest};
use crate::engine::ModelEngine;
use crate::hub_cache::{resolve, resolve_model, Needs};
use crate::inputs::discover;
use crate::jsonl::Sink;
use crate::run::{run_jobs, Output, RunOptions, TaskSpec};

/// Runs a parsed command line; `Ok` carries the exit code (non-zero when some images failed).
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Process {
            model,
            text,
            image,
            bboxes,
            add_eos_token,
            no_special_tokens,
        } => {
            let processor = load_processor(&resolve(Some(&model), Needs::Processor)?)?;
            let req = ProcessRequest {
                text: &text,
                image: image.as_deref(),
                bboxes: bboxes.as_deref(),
                add_eos_token,
                no_special_tokens,
            };
            print_json(&process_json(&processor, &req)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Postprocess {
            text,
            no_cleanup,
            model,
        } => {
            let processor = match model.as_deref() {
                Some(m) => Some(load_processor(&resolve(Some(m), Needs::Processor)?)?),
                None => None,
            };
            print_json(&postprocess_json(&text, !no_cleanup, processor.as_ref())?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Caption {
            images,
            detailed,
            run,
        } => {
            let style = if detailed {
                CaptionStyle::Detailed
            } else {
                CaptionStyle::Brief
            };
            run_task(TaskSpec::Caption(style), &images, run)
        }
        Command::Ground {
            images,
            phrase,
            run,
        } => run_task(TaskSpec::Ground(phrase), &images, run),
        Command::Refer {
            images,
            bbox,
            pixels,
            run,
        } => {
            let bbox = parse_box_arg(&bbox)?;
            run_task(TaskSpec::Refer { bbox, pixels }, &images, run)
        }
        Command::Vqa {
            images,
            question,
            run,
        } => run_task(TaskSpec::Vqa(question), &images, run),
        Command::Generate {
            images,
            prompt,
            run,
        } => run_task(TaskSpec::Raw(prompt), &images, run),
        Command::Quantize { model, output } => quantize(&model, &output),
        Command::Serve(args) => {
            crate::serve::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The error and its causes on one line, each cause once: library errors often repeat their
/// source in their own message, and a multi-line message is folded.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if s.is_empty() || msg.contains(&s) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&s);
    }
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn print_json(v: &Value) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Checks that `dir` looks like a model directory, with messages that say what is missing.
pub fn check_model_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        anyhow::bail!(
            "{}: model directory not found (pass --model DIR, a folder with config.json and model.safetensors)",
            dir.display()
        );
    }
    if !dir.join("config.json").is_file() {
        anyhow::bail!(
            "{}: not a KOSMOS-2 model directory: config.json is missing",
            dir.display()
        );
    }
    if !dir.join("model.safetensors").is_file()
        && !dir.join("model.safetensors.index.json").is_file()
    {
        anyhow::bail!(
            "{}: the weights are missing: expected model.safetensors (or model.safetensors.index.json)",
            dir.display()
        );
    }
    Ok(())
}

/// The generation settings: the model directory's special ids (transformers 5.24 defaults),
/// then the command-line flags.
pub fn generation_config(base: GenerationConfig, g: &GenArgs) -> Result<GenerationConfig> {
    let cfg = GenerationConfig {
        max_new_tokens: g.max_new_tokens,
        min_new_tokens: g.min_new_tokens,
        no_repeat_ngram_size: g.no_repeat_ngram_size,
        num_beams: g.num_beams,
        length_penalty: g.length_penalty,
        repetition_penalty: g.repetition_penalty,
        do_sample: g.sample,
        temperature: g.temperature,
        top_k: g.top_k,
        top_p: g.top_p,
        seed: g.seed,
        ..base
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The compute device.
pub fn device(arg: DeviceArg) -> Result<Device> {
    match arg {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => Device::cuda(0)
            .map_err(|e| anyhow::anyhow!("--device cuda is not available: {e} (use --device cpu)")),
    }
}

/// The precision.
pub fn dtype(arg: DTypeArg) -> Precision {
    match arg {
        DTypeArg::F32 => Precision::F32,
        DTypeArg::Bf16 => Precision::BF16,
        DTypeArg::F16 => Precision::F16,
        DTypeArg::Int8 => Precision::Int8,
        DTypeArg::Int8Bf16 => Precision::Int8Bf16,
    }
}

/// `kosmos2 quantize`: one summary line on stderr, the output folder on stdout.
fn quantize(model: &str, output: &Path) -> Result<ExitCode> {
    let src = resolve(Some(model), Needs::Model)?;
    check_model_dir(&src)?;
    let start = Instant::now();
    let report = kosmos2::quantize_checkpoint(&src, output)
        .with_context(|| format!("cannot quantise {}", src.display()))?;
    eprintln!(
        "quantised {} weights ({:.2} G parameters) to int8 in {:.1} s: {} ({:.2} GB)",
        report.int8_tensors,
        report.int8_params as f64 / 1e9,
        start.elapsed().as_secs_f64(),
        report.weights.display(),
        report.file_bytes as f64 / 1e9
    );
    println!("{}", output.display());
    Ok(ExitCode::SUCCESS)
}

fn run_task(spec: TaskSpec, images: &[String], args: RunArgs) -> Result<ExitCode> {
    // Everything that can be checked without the model first: a mistake costs no load time.
    spec.check()?;
    let model_dir: PathBuf = resolve_model(args.model.as_deref())?;
    check_model_dir(&model_dir)?;
    let base = GenerationConfig::from_model_dir(&model_dir).with_context(|| {
        format!(
            "{}: cannot read the generation defaults",
            model_dir.display()
        )
    })?;
    let gen = generation_config(base, &args.gen)?;
    if args.stream && gen.num_beams > 1 {
        anyhow::bail!("--stream needs greedy or sampling decoding (--num-beams 1)");
    }
    if args.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    if args.stream && args.batch_size > 1 {
        anyhow::bail!("--stream prints one image at a time: drop --batch-size");
    }
    let device = device(args.device)?;

    let mut jobs = discover(images)?;
    let total = jobs.len();
    if let Some(shard) = args.shard {
        jobs = shard.select(jobs);
    }
    if args.annotate.is_some() && jobs.len() != 1 {
        anyhow::bail!(
            "--annotate writes one image but {} were given; use --draw OUT_DIR for several",
            jobs.len()
        );
    }
    let mut output = match &args.output {
        Some(path) => {
            let (sink, existing) = Sink::open(path, args.resume, args.overwrite)?;
            if args.resume {
                let before = jobs.len();
                jobs.retain(|j| !existing.done.contains(&j.key()));
                eprintln!(
                    "resume: {} of {before} images already in {}",
                    before - jobs.len(),
                    path.display()
                );
            }
            Output::Jsonl(sink)
        }
        None if args.json => Output::Jsonl(Sink::Stdout),
        None => Output::Human,
    };
    if let Some(shard) = args.shard {
        eprintln!("shard {shard}: {} of {total} images", jobs.len());
    }
    if jobs.is_empty() {
        eprintln!("nothing to do");
        return Ok(ExitCode::SUCCESS);
    }

    let processor_dir = args.processor.clone().unwrap_or_else(|| model_dir.clone());
    let processor = load_processor(&processor_dir).map_err(|e| {
        if args.processor.is_none() {
            e.context("the tokenizer files are not in --model: pass --processor DIR")
        } else {
            e
        }
    })?;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("--threads: cannot start the thread pool")?;
    }
    let t = Instant::now();
    let mut engine = ModelEngine::load(&model_dir, &device, dtype(args.dtype), gen)?;
    let load = t.elapsed();

    let opts = RunOptions {
        ids: args.ids,
        stream: args.stream,
        draw: args.draw.clone(),
        annotate: args.annotate.clone(),
        progress: true,
        fail_fast: jobs.len() == 1,
        batch_size: args.batch_size,
    };
    let summary = run_jobs(&mut engine, &processor, &spec, &jobs, &mut output, &opts)?;
    eprintln!("load {:.2} s; {}", load.as_secs_f64(), summary.line());
    Ok(if summary.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn gen_args(extra: &[&str]) -> GenArgs {
        let mut argv = vec!["kosmos2", "caption", "x.jpg"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Caption { run, .. } => run.gen,
            _ => unreachable!("parsed a caption command"),
        }
    }

    #[test]
    fn generation_flags_override_the_model_defaults() {
        let base = GenerationConfig {
            eos_token_id: vec![2],
            pad_token_id: Some(1),
            ..GenerationConfig::default()
        };
        let cfg = generation_config(base.clone(), &gen_args(&[])).unwrap();
        assert_eq!(cfg.max_new_tokens, 128);
        assert_eq!(cfg.no_repeat_ngram_size, 3);
        assert!(!cfg.do_sample);
        assert_eq!(cfg.eos_token_id, vec![2]);

        let cfg = generation_config(
            base.clone(),
            &gen_args(&[
                "--sample",
                "--seed",
                "7",
                "--top-k",
                "5",
                "--max-new-tokens",
                "9",
            ]),
        )
        .unwrap();
        assert!(cfg.do_sample);
        assert_eq!((cfg.seed, cfg.top_k, cfg.max_new_tokens), (7, 5, 9));
        assert_eq!((cfg.temperature, cfg.top_p), (0.7, 0.9));

        let err = generation_config(base, &gen_args(&["--max-new-tokens", "0"])).unwrap_err();
        assert!(err.to_string().contains("max_new_tokens"), "{err}");
        // Sampling knobs without --sample are refused by the parser.
        assert!(Cli::try_parse_from(["kosmos2", "caption", "x.jpg", "--top-p", "0.5"]).is_err());
    }

    #[test]
    fn one_line_drops_repeated_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read config.json: {source}")]
        struct Outer {
            source: std::io::Error,
        }
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such\nfile");
        let e = anyhow::Error::new(Outer { source: io }).context("loading the model");
        assert_eq!(
            one_line(&e),
            "loading the model: cannot read config.json: no such file"
        );
    }

    #[test]
    fn model_dir_messages() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = check_model_dir(&missing).unwrap_err().to_string();
        assert!(e.contains("model directory not found"), "{e}");
        let e = check_model_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.json is missing"), "{e}");
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let e = check_model_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("model.safetensors"), "{e}");
    }

    #[test]
    fn cuda_without_the_feature_is_one_clear_line() {
        if let Err(e) = device(DeviceArg::Cuda) {
            let msg = format!("{e:#}");
            assert!(msg.contains("--device cuda is not available"), "{msg}");
            assert!(!msg.contains('\n'));
        }
    }
}
