//! The command line (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::inputs::Shard;

/// KOSMOS-2 on images from the terminal: grounded captions, phrase grounding, referring
/// expressions and VQA, with JSON Lines and annotated-image output.
#[derive(Debug, Parser)]
#[command(name = "kosmos2", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Grounded caption of each image ("<grounding>An image of", or the detailed prompt).
    Caption {
        /// Images, folders (searched recursively) or glob patterns.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// Several sentences ("<grounding> Describe this image in detail:").
        #[arg(long)]
        detailed: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Where is PHRASE? ("<grounding><phrase> PHRASE</phrase>").
    Ground {
        /// Images, folders or glob patterns.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// The expression to locate, e.g. "a snowman next to a fire".
        #[arg(long)]
        phrase: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Describe the region in a box ("<grounding><phrase> It</phrase> is" plus the box).
    Refer {
        /// Images, folders or glob patterns.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// The region x1,y1,x2,y2: normalised to [0, 1] (or pixels with --pixels).
        #[arg(long = "box", value_name = "X1,Y1,X2,Y2", allow_hyphen_values = true)]
        bbox: String,
        /// The box is in pixels of each image.
        #[arg(long)]
        pixels: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Grounded visual question answering ("<grounding> Question: Q Answer:").
    Vqa {
        /// Images, folders or glob patterns.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// The question.
        #[arg(long)]
        question: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Generate from a raw prompt (tags included, e.g. "<grounding> A photo of").
    Generate {
        /// Images, folders or glob patterns.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// The raw prompt (the processor adds <s> and the image block).
        #[arg(long)]
        prompt: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Serve the model over HTTP: OpenAI-compatible chat completions with images, a grounding
    /// endpoint, streaming, metrics.
    Serve(Box<crate::serve::ServeArgs>),
    /// Write an int8 copy of a model: the text decoder's linear layers and the LM head in int8
    /// (per-output-channel symmetric, f32 scales), everything else as is; the tokenizer and
    /// processor files are copied, so OUT_DIR is a complete model folder (load it with --model).
    Quantize {
        /// The source model: a folder or a hub id ORG/NAME[@REVISION].
        #[arg(long, value_name = "DIR|HF_ID", env = "KOSMOS2_MODEL", default_value = crate::hub_cache::DEFAULT_MODEL_ID)]
        model: String,
        /// The folder to write (created if needed; must not be the source).
        #[arg(long, short = 'o', value_name = "OUT_DIR")]
        output: PathBuf,
    },
    /// Debug: the processor's output for a text (and image) as one JSON object.
    Process {
        /// The model (only its tokenizer and preprocessor files are used): a folder with
        /// tokenizer.json, tokenizer_config.json and preprocessor_config.json, or a hub id
        /// (ORG/NAME[@REVISION]) from the local HF cache or downloaded.
        #[arg(long, value_name = "DIR|HF_ID", env = "KOSMOS2_MODEL", default_value = crate::hub_cache::DEFAULT_MODEL_ID)]
        model: String,
        /// The prompt text.
        #[arg(long, allow_hyphen_values = true)]
        text: String,
        /// An image (adds image_embeds_position_mask, pixel_values_shape and pixel_values).
        #[arg(long, value_name = "PATH")]
        image: Option<PathBuf>,
        /// Boxes of the text's phrases, as HF's `bboxes` for one text: a JSON list with one
        /// entry per <phrase>...</phrase>: null, a box, or a list of boxes; a box is
        /// [x1, y1, x2, y2] floats or [ul, lr] integer patch indices.
        #[arg(long, value_name = "JSON")]
        bboxes: Option<String>,
        /// Also append </s>.
        #[arg(long)]
        add_eos_token: bool,
        /// Do not add <s> (HF add_special_tokens=False).
        #[arg(long)]
        no_special_tokens: bool,
    },
    /// Debug: HF's post_process_generation of a generated text, as JSON.
    Postprocess {
        /// The generated text (tags included).
        #[arg(long, allow_hyphen_values = true)]
        text: String,
        /// Print {"text": ...}: only the part after </image>, tags kept.
        #[arg(long)]
        no_cleanup: bool,
        /// A model folder or hub id whose processor is loaded and checked (its tokenizer fixes
        /// the 32 × 32 grid); without it the standard grid is used.
        #[arg(long, value_name = "DIR|HF_ID")]
        model: Option<String>,
    },
}

/// Compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The CPU.
    Cpu,
    /// An NVIDIA GPU (needs a build with the cuda feature).
    Cuda,
}

/// Weight and activation precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    /// 32-bit float (exact parity with HF).
    F32,
    /// bfloat16.
    Bf16,
    /// float16.
    F16,
    /// int8 text decoder and LM head (weight-only, per output channel), the rest in f32:
    /// quantised at load, or read from a `kosmos2 quantize` output.
    Int8,
    /// The same int8 text decoder and LM head, with the rest (vision tower, projection,
    /// embeddings) in bf16: a faster image encode than int8's f32 one.
    Int8Bf16,
}

/// Options shared by every task subcommand.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The model: a folder (config.json, model.safetensors, tokenizer and preprocessor files) or
    /// a hub id ORG/NAME[@REVISION], taken from the local Hugging Face cache (HF_HUB_CACHE,
    /// HF_HOME) or downloaded into it from HF_ENDPOINT (token: HF_TOKEN; HF_HUB_OFFLINE=1 uses
    /// only the cache). Default: microsoft/kosmos-2-patch14-224.
    #[arg(long, value_name = "DIR|HF_ID", env = "KOSMOS2_MODEL")]
    pub model: Option<String>,
    /// The processor directory, when the tokenizer and preprocessor files are not in --model.
    #[arg(long, value_name = "DIR")]
    pub processor: Option<PathBuf>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Precision.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DTypeArg,
    /// CPU threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print one JSON object per image (JSON Lines) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write JSON Lines to this file (one line per image, flushed as it goes).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Skip the images that --output already has (failed ones are retried).
    #[arg(long, requires = "output")]
    pub resume: bool,
    /// Replace an existing --output file.
    #[arg(long, requires = "output", conflicts_with = "resume")]
    pub overwrite: bool,
    /// Process only images K, K+N, K+2N, ... of the sorted list (0-based), e.g. 0/4.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Write each image with its boxes drawn to this folder (PNG).
    #[arg(long, value_name = "OUT_DIR")]
    pub draw: Option<PathBuf>,
    /// Write the (single) image with its boxes drawn to this PNG file.
    #[arg(long, value_name = "OUT.png", conflicts_with = "draw")]
    pub annotate: Option<PathBuf>,
    /// Print text as it is generated (one image at a time, greedy or sampling).
    #[arg(long)]
    pub stream: bool,
    /// Images generated together in one batch (faster on many images; each image's result
    /// does not depend on its batch-mates).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub batch_size: usize,
    /// Include the token ids in the JSON output (always on for `generate`).
    #[arg(long)]
    pub ids: bool,
    #[command(flatten)]
    pub gen: GenArgs,
}

/// Generation flags (HF `generate` names).
#[derive(Debug, Clone, Args)]
pub struct GenArgs {
    /// Most new tokens per image.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub max_new_tokens: usize,
    /// Fewest new tokens (end-of-text is banned until then).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub min_new_tokens: usize,
    /// Ban repeated n-grams of this size; 0 turns it off (the paper and demo use 3).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub no_repeat_ngram_size: usize,
    /// Beam search with this many beams (1 = greedy or sampling).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub num_beams: usize,
    /// Beam scores are divided by length^this.
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub length_penalty: f64,
    /// Penalise tokens already present (1.0 = off).
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub repetition_penalty: f64,
    /// Sample instead of greedy decoding (the demo's sampling: top-p 0.9, temperature 0.7).
    #[arg(long)]
    pub sample: bool,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.7, value_name = "T", requires = "sample")]
    pub temperature: f64,
    /// Keep only the K most likely tokens when sampling (0 = off).
    #[arg(long, default_value_t = 0, value_name = "K", requires = "sample")]
    pub top_k: usize,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 0.9, value_name = "P", requires = "sample")]
    pub top_p: f64,
    /// Sampling seed (a run is reproducible for a given seed).
    #[arg(long, default_value_t = 0, value_name = "SEED", requires = "sample")]
    pub seed: u64,
}
