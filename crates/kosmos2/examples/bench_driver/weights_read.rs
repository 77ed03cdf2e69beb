//! `floor`: the bytes of weights one decode step reads, from `config.json`.

use super::*;

/// Weights one decode step reads: every text block's linear layers and LayerNorms, the final
/// LayerNorm and the (tied) lm_head. (The embedding row and the KV cache are left out: at 100
/// tokens the cache is ~40 MB in f32, under 1% of the f32 weights.)
pub(super) fn decode_weight_params(config: &Kosmos2Config) -> usize {
    let t = &config.text_config;
    let (d, f) = (t.embed_dim, t.ffn_dim);
    let linear = 4 * (d * d + d) + (d * f + f) + (f * d + d);
    let norms = 3 * 2 * d + 2 * f;
    t.layers * (linear + norms) + 2 * d + t.vocab_size * d
}

/// Bytes of weights one decode step reads at `precision`: the int8 precisions read the linear
/// weights and the head as one byte each plus an f32 scale per output row, and the biases and
/// LayerNorms in their float dtype.
pub(super) fn decode_weight_bytes(config: &Kosmos2Config, precision: Precision) -> usize {
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

/// `floor --model DIR`: the weights a decode step reads, from `config.json`.
pub(super) fn floor(args: &Args) -> Res<()> {
    let config = Kosmos2Config::from_file(&args.path("model")?.join("config.json"))?;
    println!(
        "RESULT\tdecode_weight_params={}",
        decode_weight_params(&config)
    );
    Ok(())
}
