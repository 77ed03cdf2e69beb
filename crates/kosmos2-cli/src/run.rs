//! Running a task over images: load each image, build its prompt, process, generate through an
//! [`Engine`], post-process, draw, and write one record per image, with a progress bar.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use image::{DynamicImage, RgbImage};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kosmos2::generation::{BoxError, TextStream};
use kosmos2::task::{CaptionStyle, RegionBox, Task, TaskPrompt};
use kosmos_processor::image::{load_rgb, DecodeLimits, ImageError};
use kosmos_processor::{
    post_process_generation, ImageInput, Kosmos2Processor, ProcessOptions, ProcessorInput,
    ProcessorOutput,
};

use crate::draw::{annotations, draw_annotations, Style};
use crate::inputs::ImageJob;
use crate::jsonl::Sink;
use crate::record::{grounding_object, objects, vqa_answer, ErrorRecord, Record, Timing};

/// What generation returns for one prompt (one row of a batch).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOutput {
    /// The full sequence, prompt included (HF `generate(...).sequences[row]`, pads removed).
    pub sequence: Vec<u32>,
    /// `eos`, `max_new_tokens` or `stopped`.
    pub finish_reason: &'static str,
    /// This row's share of the vision tower + projection time (the batch's over its rows).
    pub image_encode: Duration,
    /// This row's share of the prefill time.
    pub prefill: Duration,
    /// This row's share of the decode time.
    pub decode: Duration,
    /// Tokens this row generated.
    pub new_tokens: usize,
    /// Decode throughput of the whole batch (all rows' tokens per second of decode).
    pub batch_tokens_per_s: f64,
    /// Rows generated together.
    pub batch_size: usize,
}

/// Generates continuations of processed prompts, one image each, as one batch.
pub trait Engine {
    /// Runs generation on `processed` (each a one-row processor output with its image);
    /// `on_token(row, token)` sees each new token as it is chosen (greedy and sampling).
    fn generate(
        &mut self,
        processed: &[&ProcessorOutput],
        on_token: &mut dyn FnMut(usize, u32),
    ) -> Result<Vec<EngineOutput>>;
}

/// The task of a subcommand; a pixel box becomes a normalised one per image.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskSpec {
    /// `caption`.
    Caption(CaptionStyle),
    /// `ground --phrase`.
    Ground(String),
    /// `refer --box [--pixels]`.
    Refer {
        /// The box as given.
        bbox: [f64; 4],
        /// In pixels.
        pixels: bool,
    },
    /// `vqa --question`.
    Vqa(String),
    /// `generate --prompt`.
    Raw(String),
}

impl TaskSpec {
    /// The task for an image of `width × height`.
    pub fn task(&self, width: u32, height: u32) -> Task {
        match self {
            TaskSpec::Caption(s) => Task::Caption(*s),
            TaskSpec::Ground(p) => Task::Ground { phrase: p.clone() },
            TaskSpec::Refer { bbox, pixels } => Task::Refer {
                bbox: if *pixels {
                    RegionBox::Pixels {
                        bbox: *bbox,
                        width,
                        height,
                    }
                } else {
                    RegionBox::Normalized(*bbox)
                },
            },
            TaskSpec::Vqa(q) => Task::Vqa {
                question: q.clone(),
            },
            TaskSpec::Raw(p) => Task::Raw(p.clone()),
        }
    }

    /// Checks what does not depend on the image (everything but a pixel box's range), before
    /// the model is loaded.
    pub fn check(&self) -> Result<()> {
        match self {
            TaskSpec::Refer { pixels: true, bbox } => {
                let [x1, y1, x2, y2] = *bbox;
                if !(x2 > x1 && y2 > y1 && x1 >= 0.0 && y1 >= 0.0) {
                    anyhow::bail!(
                        "--box {bbox:?}: a pixel box needs 0 <= x1 < x2 and 0 <= y1 < y2"
                    );
                }
                Ok(())
            }
            _ => {
                self.task(1, 1).prompt()?;
                Ok(())
            }
        }
    }

    /// The task's name.
    pub fn name(&self) -> &'static str {
        self.task(1, 1).name()
    }
}

/// How to run and what to write.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Include `generated_ids` in records.
    pub ids: bool,
    /// Print the text as it is generated.
    pub stream: bool,
    /// Write annotated PNGs to this folder.
    pub draw: Option<PathBuf>,
    /// Write the annotated PNG of the single image here.
    pub annotate: Option<PathBuf>,
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// When one image fails: stop (`true`), or record the error and go on.
    pub fail_fast: bool,
    /// Images generated together (1 = one at a time; streaming needs 1).
    pub batch_size: usize,
}

/// Where records go.
#[derive(Debug)]
pub enum Output {
    /// JSON Lines.
    Jsonl(Sink),
    /// Readable text on stdout.
    Human,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Images processed.
    pub done: usize,
    /// Images that failed.
    pub failed: usize,
    /// Wall time of the whole loop.
    pub elapsed: Duration,
    /// Sum of the per-image timings.
    pub image_encode: Duration,
    /// Sum of prefill times.
    pub prefill: Duration,
    /// Sum of decode times.
    pub decode: Duration,
    /// Tokens generated, all images.
    pub new_tokens: usize,
}

impl Summary {
    /// One line for stderr.
    pub fn line(&self) -> String {
        let n = self.done.max(1) as f64;
        let secs = self.elapsed.as_secs_f64();
        let tps = if self.decode.as_secs_f64() > 0.0 {
            self.new_tokens as f64 / self.decode.as_secs_f64()
        } else {
            0.0
        };
        let mut s = format!(
            "{} image{} in {:.2} s ({:.2} images/s); per image: encode {:.0} ms, prefill {:.0} ms; decode {:.1} tokens/s",
            self.done,
            if self.done == 1 { "" } else { "s" },
            secs,
            if secs > 0.0 { self.done as f64 / secs } else { 0.0 },
            self.image_encode.as_secs_f64() * 1e3 / n,
            self.prefill.as_secs_f64() * 1e3 / n,
            tps
        );
        if self.failed > 0 {
            s.push_str(&format!("; {} failed", self.failed));
        }
        s
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Decodes an image file to RGB as the processor does (alpha over white).
pub fn load_image(path: &Path) -> Result<RgbImage> {
    if !path.is_file() {
        anyhow::bail!("{}: image file not found", path.display());
    }
    load_rgb(
        &ImageInput::Path(path.to_path_buf()),
        &DecodeLimits::default(),
    )
    .map_err(|e| match e {
        ImageError::Io { .. } => anyhow::anyhow!("{e}"),
        _ => anyhow::anyhow!("{}: unreadable or unsupported image: {e}", path.display()),
    })
}

/// Processes one prompt with its image (HF `processor(text=..., images=..., bboxes=...)`).
pub fn process_prompt(
    processor: &Kosmos2Processor,
    prompt: &TaskPrompt,
    image: &RgbImage,
) -> Result<ProcessorOutput> {
    let mut input = ProcessorInput::text(prompt.text.clone())
        .with_image(DynamicImage::ImageRgb8(image.clone()));
    if let Some(b) = &prompt.boxes {
        input = input.with_boxes(b.clone());
    }
    Ok(processor.process_single(&input, &ProcessOptions::default())?)
}

/// One image, processed and ready to generate.
#[derive(Debug)]
struct Prepared {
    job_index: usize,
    started: Instant,
    image: RgbImage,
    task: Task,
    prompt: TaskPrompt,
    processed: ProcessorOutput,
}

/// Loads the image, builds the task's prompt and processes it.
fn prepare(
    processor: &Kosmos2Processor,
    spec: &TaskSpec,
    job: &ImageJob,
    job_index: usize,
) -> Result<Prepared> {
    let started = Instant::now();
    let image = load_image(&job.path)?;
    let (width, height) = image.dimensions();
    let task = spec.task(width, height);
    let prompt = task
        .prompt()
        .with_context(|| format!("{}", job.path.display()))?;
    let processed = process_prompt(processor, &prompt, &image)?;
    Ok(Prepared {
        job_index,
        started,
        image,
        task,
        prompt,
        processed,
    })
}

/// Generates one image with its text streamed to `stream_out`.
fn generate_streaming<E: Engine>(
    engine: &mut E,
    processor: &Kosmos2Processor,
    p: &Prepared,
    stream_out: &mut dyn Write,
) -> Result<EngineOutput> {
    let prompt_ids = p.processed.input_ids.first().cloned().unwrap_or_default();
    let decode =
        |ids: &[u32]| -> std::result::Result<String, BoxError> { Ok(processor.decode(ids, true)) };
    let mut stream = TextStream::with_context(decode, &prompt_ids)?;
    let mut failure = None;
    let mut outs = engine.generate(&[&p.processed], &mut |_, t| match stream.push(t) {
        Ok(Some(piece)) => {
            let _ = write!(stream_out, "{piece}");
            let _ = stream_out.flush();
        }
        Ok(None) => {}
        Err(e) => failure = Some(e),
    })?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    if let Some(piece) = stream.finish()? {
        let _ = write!(stream_out, "{piece}");
    }
    let _ = writeln!(stream_out);
    outs.pop().context("the engine returned no output")
}

/// Decodes, post-processes and draws one generated image.
fn finish(
    processor: &Kosmos2Processor,
    job: &ImageJob,
    p: Prepared,
    out: EngineOutput,
    opts: &RunOptions,
) -> Result<Record> {
    let (width, height) = p.image.dimensions();
    let text = processor.decode(&out.sequence, true);
    let grounded = post_process_generation(&text, true)?;
    let objs = objects(&grounded.entities, width, height);
    let annotated = match (&opts.annotate, &opts.draw) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(dir)) => Some(dir.join(job.output_name("png"))),
        _ => None,
    };
    if let Some(path) = &annotated {
        let mut img = p.image;
        let anns = annotations(&grounded.entities, width, height);
        draw_annotations(&mut img, &anns, &Style::for_image(width, height));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create folder", dir.display()))?;
        }
        img.save_with_format(path, image::ImageFormat::Png)
            .with_context(|| format!("{}: cannot write annotated image", path.display()))?;
    }
    let task = p.task;
    Ok(Record {
        image: job.key(),
        task: task.name(),
        prompt: p.prompt.text.clone(),
        bbox: p.prompt.normalized_boxes().first().copied(),
        width,
        height,
        answer: matches!(task, Task::Vqa { .. })
            .then(|| vqa_answer(&grounded.caption))
            .flatten(),
        grounding: match &task {
            Task::Ground { phrase } => grounding_object(&grounded, phrase, width, height),
            _ => None,
        },
        text,
        caption: grounded.caption.clone(),
        entities: grounded.entities.clone(),
        objects: objs,
        generated_ids: (opts.ids || matches!(task, Task::Raw(_))).then(|| out.sequence.clone()),
        finish_reason: out.finish_reason,
        timing: Timing {
            image_encode_ms: ms(out.image_encode),
            prefill_ms: ms(out.prefill),
            decode_ms: ms(out.decode),
            new_tokens: out.new_tokens,
            decode_tokens_per_s: out.batch_tokens_per_s,
            batch_size: out.batch_size,
            total_ms: ms(p.started.elapsed()),
        },
        annotated: annotated.map(|path| path.to_string_lossy().into_owned()),
    })
}

/// Whether readable output is coloured: stdout is a terminal and `NO_COLOR` is unset.
pub fn color_enabled() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// `#rrggbb` as an ANSI 24-bit foreground colour code.
fn ansi(hex: &str) -> String {
    let c = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap_or(0);
    format!(
        "\x1b[1;38;2;{};{};{}m",
        (c >> 16) & 255,
        (c >> 8) & 255,
        c & 255
    )
}

const RESET: &str = "\x1b[0m";

/// The caption with each grounded phrase in its box colour (spans in code points, as HF's;
/// spans that do not fit the caption or overlap an earlier one are left plain).
pub fn colorize(caption: &str, objects: &[crate::record::Object]) -> String {
    let chars: Vec<char> = caption.chars().collect();
    let mut spans: Vec<(usize, usize, &str)> = objects
        .iter()
        .filter(|o| !o.boxes.is_empty())
        .filter_map(|o| {
            let (a, b) = o.span;
            (a >= 0 && a < b && b as usize <= chars.len()).then_some((
                a as usize,
                b as usize,
                o.color.as_str(),
            ))
        })
        .collect();
    spans.sort();
    let mut out = String::with_capacity(caption.len() + 24 * spans.len());
    let mut pos = 0;
    for (a, b, color) in spans {
        if a < pos {
            continue;
        }
        out.extend(&chars[pos..a]);
        out.push_str(&ansi(color));
        out.extend(&chars[a..b]);
        out.push_str(RESET);
        pos = b;
    }
    out.extend(&chars[pos..]);
    out
}

/// The readable form of a record: the caption (or VQA answer) unless it was streamed, then one
/// line per box with its colour, phrase, normalised and pixel coordinates.
pub fn human(r: &Record, with_name: bool, streamed: bool, color: bool) -> String {
    let mut s = String::new();
    if !streamed {
        if with_name {
            s.push_str(&format!("{}: ", r.image));
        }
        match (&r.answer, color) {
            (Some(a), _) => s.push_str(a),
            (None, true) => s.push_str(&colorize(&r.caption, &r.objects)),
            (None, false) => s.push_str(&r.caption),
        }
        s.push('\n');
    }
    for o in &r.objects {
        for (b, p) in o.boxes.iter().zip(&o.pixel_boxes) {
            let swatch = if color {
                format!("{}{}{RESET}", ansi(&o.color), o.color)
            } else {
                o.color.clone()
            };
            s.push_str(&format!(
                "  {swatch} {:?} [{:.3}, {:.3}, {:.3}, {:.3}] px [{}, {}, {}, {}]\n",
                o.phrase, b[0], b[1], b[2], b[3], p[0], p[1], p[2], p[3]
            ));
        }
    }
    s
}

fn progress_bar(len: usize, show: bool) -> ProgressBar {
    if !show || len < 2 {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {pos}/{len} {per_sec:.2} ETA {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Where finished images go: counted, written, shown.
struct Reporter<'a> {
    spec: &'a TaskSpec,
    output: &'a mut Output,
    opts: &'a RunOptions,
    pb: ProgressBar,
    summary: Summary,
    many: bool,
}

impl Reporter<'_> {
    /// Records one image's outcome: counts it, writes the record or the error.
    fn report(&mut self, result: Result<Record>, job: &ImageJob) -> Result<()> {
        match result {
            Ok(r) => {
                let s = &mut self.summary;
                s.done += 1;
                s.image_encode += Duration::from_secs_f64(r.timing.image_encode_ms / 1e3);
                s.prefill += Duration::from_secs_f64(r.timing.prefill_ms / 1e3);
                s.decode += Duration::from_secs_f64(r.timing.decode_ms / 1e3);
                s.new_tokens += r.timing.new_tokens;
                match self.output {
                    Output::Jsonl(sink) => sink.write(&r)?,
                    Output::Human => {
                        let text = human(&r, self.many, self.opts.stream, color_enabled());
                        self.pb.suspend(|| print!("{text}"));
                    }
                }
            }
            Err(e) if self.opts.fail_fast => return Err(e),
            Err(e) => {
                self.summary.failed += 1;
                let msg = crate::app::one_line(&e);
                self.pb.suspend(|| eprintln!("error: {}: {msg}", job.key()));
                if let Output::Jsonl(sink) = self.output {
                    sink.write(&ErrorRecord {
                        image: job.key(),
                        task: self.spec.name(),
                        error: msg,
                    })?;
                }
            }
        }
        self.pb.inc(1);
        Ok(())
    }
}

/// Runs `spec` on every job, `opts.batch_size` images per generation call, writing each record
/// as soon as its batch is done.
pub fn run_jobs<E: Engine>(
    engine: &mut E,
    processor: &Kosmos2Processor,
    spec: &TaskSpec,
    jobs: &[ImageJob],
    output: &mut Output,
    opts: &RunOptions,
) -> Result<Summary> {
    let start = Instant::now();
    let json_on_stdout = matches!(output, Output::Jsonl(Sink::Stdout));
    let mut rep = Reporter {
        spec,
        output,
        opts,
        pb: progress_bar(jobs.len(), opts.progress && !opts.stream),
        summary: Summary::default(),
        many: jobs.len() > 1,
    };
    let batch_size = if opts.stream {
        1
    } else {
        opts.batch_size.max(1)
    };
    for (c, chunk) in jobs.chunks(batch_size).enumerate() {
        let mut ready = Vec::with_capacity(chunk.len());
        for (k, job) in chunk.iter().enumerate() {
            match prepare(processor, spec, job, c * batch_size + k) {
                Ok(p) => ready.push(p),
                Err(e) => rep.report(Err(e), job)?,
            }
        }
        if ready.is_empty() {
            continue;
        }
        let outs = if opts.stream {
            // With JSON on stdout, streamed text goes to stderr so that stdout stays JSON Lines.
            let p = &ready[0];
            let out = if json_on_stdout {
                generate_streaming(engine, processor, p, &mut std::io::stderr())
            } else {
                if rep.many {
                    println!("{}:", jobs[p.job_index].key());
                }
                generate_streaming(engine, processor, p, &mut std::io::stdout().lock())
            };
            out.map(|o| vec![o])
        } else {
            let refs: Vec<&ProcessorOutput> = ready.iter().map(|p| &p.processed).collect();
            engine.generate(&refs, &mut |_, _| {})
        };
        match outs {
            Ok(outs) if outs.len() == ready.len() => {
                for (p, out) in ready.into_iter().zip(outs) {
                    let job = &jobs[p.job_index];
                    let r = finish(processor, job, p, out, opts);
                    rep.report(r, job)?;
                }
            }
            Ok(outs) => anyhow::bail!(
                "the engine returned {} outputs for {} prompts",
                outs.len(),
                ready.len()
            ),
            Err(e) => {
                // The whole batch failed: every image gets the error.
                let msg = crate::app::one_line(&e);
                for p in &ready {
                    rep.report(Err(anyhow::anyhow!("{msg}")), &jobs[p.job_index])?;
                }
            }
        }
    }
    rep.pb.finish_and_clear();
    let mut summary = rep.summary;
    summary.elapsed = start.elapsed();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::objects;

    #[test]
    fn phrases_take_their_box_colour_in_the_text() {
        let g = post_process_generation(
            "<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044>\
             <patch_index_0863></object> by<phrase> a fire</phrase><object><patch_index_0005>\
             <patch_index_0911></object>.",
            true,
        )
        .unwrap();
        let objs = objects(&g.entities, 100, 100);
        let c = colorize(&g.caption, &objs);
        assert_eq!(
            c,
            "An image of \x1b[1;38;2;230;25;75ma snowman\x1b[0m by \x1b[1;38;2;60;180;75ma fire\x1b[0m."
        );
        // Without colour, the caption is unchanged; a bad span is left plain.
        let mut bad = objs.clone();
        bad[0].span = (40, 90);
        assert!(colorize(&g.caption, &bad).starts_with("An image of a snowman by \x1b"));
    }

    #[test]
    fn task_specs() {
        let refer = TaskSpec::Refer {
            bbox: [10.0, 20.0, 50.0, 60.0],
            pixels: true,
        };
        assert_eq!(refer.name(), "refer");
        assert!(refer.check().is_ok());
        match refer.task(100, 200) {
            Task::Refer { bbox } => assert_eq!(bbox.normalized().unwrap(), [0.1, 0.1, 0.5, 0.3]),
            other => panic!("{other:?}"),
        }
        let bad = TaskSpec::Refer {
            bbox: [50.0, 20.0, 10.0, 60.0],
            pixels: true,
        };
        assert!(bad.check().is_err());
        assert!(TaskSpec::Ground(" ".into()).check().is_err());
        assert!(TaskSpec::Caption(CaptionStyle::Brief).check().is_ok());
    }
}
