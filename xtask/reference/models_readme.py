"""The README of tests/fixtures/models/, rendered by gen_models.py from the run's summary (deterministic)."""

TEMPLATE = r"""# Tiny random-weight KOSMOS-2 model fixtures

**Generated file** — written by `xtask/reference/gen_models.py` (with `models_readme.py`); edit those, not this.

Made with the HF reference stack (@@VERSIONS@@), CPU, f32, one thread,
`torch.use_deterministic_algorithms(True)`, eval mode. Each model is a real `Kosmos2ForConditionalGeneration`
built from a small `Kosmos2Config` with `attn_implementation="eager"` (needed to get attentions and
`projection_attentions`; eager and SDPA agree to ~1e-6 in f32, the Rust port may use either). **Every parameter is
re-randomised** from one seeded generator (parameters sorted by name): LayerNorm weights 1 + 0.2·N, LayerNorm and
Linear biases 0.1·N, Linear/Conv weights N/√fan_in, vision positions and CLS 0.5·N, latent queries N, token
embedding (and the untied lm_head) rows N/√D with log-normal row norms, final text LayerNorm weight
`logit_scale`·(1 + 0.1·N). So a swapped, missing or mis-shaped bias/LayerNorm changes the outputs.

## Models

| dir | vision hidden/layers/heads/ffn, image/patch → tokens | text embed/layers/heads/ffn, vocab | latent_query_num | lm_head in model.safetensors |
|---|---|---|---|---|
| `tiny/` | 32/2/4/64, 28/14 → 4+1 = 5 | 32/2/4/64, 300 | 4 | no: tied, dropped by `save_pretrained` |
| `tiny-wide/` | 48/3/3/96, 30/6 → 25+1 = 26 | 64/3/8/128, 500 | 6 | **yes**: untied (`tie_word_embeddings: false` at both config levels), differs from embed_tokens |
| `tiny-realvocab/` | 16/1/2/32, 224/14 → 256+1 = 257 | 16/2/2/32, **65037** | **64** | no: tied, dropped |

All use pad 1, bos 0, eos 2, `max_position_embeddings` 2048, `scale_embedding` true (×√D), LayerNorm eps 1e-5,
vision `quick_gelu`, text `gelu` (erf).

`tiny-realvocab` runs end to end with the real tokenizer: its inputs are the outputs of the REAL `Kosmos2Processor`
(`<assets>/kosmos-2-patch14-224`, `AutoProcessor.from_pretrained`) on real photos (`<assets>/images/snowman.jpg`,
`two_dogs.jpg`, opened with `PIL.Image.open`, no convert), so its `pixel_values` are real processor pixels
[2,3,224,224] and its ids are real (bos 0, `<image>` 64003, placeholders 4..67, `</image>` 64004, `<grounding>`
64012, …). Prompts and the exact processor call are in `generation.json` → `processor`.

For `tiny` / `tiny-wide` the ids are arbitrary (no tokenizer) and `pixel_values` are N(0,1). An image row is
`[bos 0, boi V-2, Q placeholders 4..4+Q-1, eoi V-1, text ids in [4+Q, V-3]]`, the position mask is 1 exactly on
the Q placeholders.

## Files in each `<model>/` directory

- `config.json`, `generation_config.json` — exactly as `save_pretrained` writes them (nested `text_config` /
  `vision_config`, HF field names `embed_dim`, `layers`, `attention_heads`, `ffn_dim`, `hidden_size`, ...).
- `model.safetensors` — `save_pretrained(safe_serialization=True)` output (metadata `{"format": "pt"}`): real HF
  key names (`text_model.model.*`, `vision_model.model.*`, `image_to_text_projection.*`, and
  `text_model.lm_head.weight` only in tiny-wide), all F32. Non-persistent buffers (`embed_positions.weights`,
  `embeddings.position_ids`) are absent. Loading it back with HF `from_pretrained` reproduces `reference.safetensors`
  bit for bit (checked by the generator).
- `reference.safetensors` — main forward: B = 2, one image per row, no padding, `labels` given.
  **Its `pixel_values` is the model's only pixel tensor: every other case with images uses it (row b = image b).**
- `reference_left_pad.safetensors` — forward of a LEFT-padded batch with images (row 0 has pads: pad id 1,
  attention_mask 0, image_embeds_position_mask 0), pixel rows = `reference.safetensors:pixel_values`. Holds the
  inputs, `text.*`, logits, labels/loss and `image_embeds` (identical to the main case); no vision/projection tensors.
  HF prefill positions are right here: pads get position 1 (the zero row), real tokens 2, 3, … counted over
  non-pads (see `text.position_ids`).
- `reference_text_only.safetensors` — no image at all: `Kosmos2TextForCausalLM` (`model.text_model`) run with
  `image_embeds=None`, no position mask, no pixel_values (this is what `generate` runs without pixels;
  `Kosmos2ForConditionalGeneration.forward` itself refuses to run without pixels or image_embeds). B = 2, no padding.
- `reference_interpolate.safetensors` (tiny: 42×56 → 3×4 patches; tiny-wide: 36×42 → 6×7) — vision + projection only,
  `get_image_features(pixel_values, interpolate_pos_encoding=True)`: `pixel_values`, `vision.hidden_states.{i}`,
  `vision.last_hidden_state`, `image_embeds`.
- `generation.json` — the generation cases (below).
- `scores.safetensors` — processed per-step scores of two greedy cases (below).

`summary.json` (next to this README) holds the numbers of the table at the end (seeds, margins, key counts, sizes).

### Tensor names (`reference*.safetensors`)
Integers are I64, everything else F32. B batch, T text length, N vision tokens (1 + patches), Dv vision hidden,
D text embed, Q latent_query_num, H text heads, Hv vision heads, V vocab, Lv / Lt vision / text layers.

| name | shape | meaning |
|---|---|---|
| `pixel_values` | [B,3,S,S] | input (main case; interpolate case has its own) |
| `input_ids`, `attention_mask` | [B,T] I64 | inputs |
| `image_embeds_position_mask` | [B,T] I64 | input (not in text_only) |
| `labels` | [B,T] I64 | `input_ids` with −100 on pads, on the leading bos + image block (bos, boi, Q placeholders, eoi; text_only: bos only) and on one extra cell inside the text (main: in row 1; text_only: in row 0) — read the tensor |
| `loss` | [1] | HF loss for `labels`: logits[:, :-1] vs labels[:, 1:], cross-entropy averaged over labels ≠ −100 |
| `text.position_ids` | [B,T] I64 | HF's sinusoid position ids for this prefill (`create_position_ids_from_input_ids`) |
| `vision.hidden_states.{i}`, i = 0..=Lv | [B,N,Dv] | HF `output_hidden_states`: **index 0 = patch + CLS embeddings + positions, after `pre_layrnorm`** (input of layer 0); index i = output of encoder layer i−1; index Lv = output of the last layer = `vision.last_hidden_state` (the vision tower does not post-LN it) |
| `vision.last_hidden_state` | [B,N,Dv] | encoder output, BEFORE `post_layernorm` |
| `vision.pooler_output` | [B,Dv] | `post_layernorm(CLS)` (HF's vision pooler; Kosmos-2 does not use it) |
| `vision.attentions.{i}`, i < Lv | [B,Hv,N,N] | softmax probabilities (tiny, tiny-wide only) |
| `projection.input` | [B,N,Dv] | `F.normalize(post_layernorm(last_hidden_state), dim=-1)` over all N tokens |
| `projection.dense` | [B,N,D] | `image_to_text_projection.dense(projection.input)` |
| `image_embeds` | [B,Q,D] | projection output (`image_outputs.pooler_output`) |
| `projection_attentions` | [B,H,Q,N+Q] | x_attn softmax probabilities (keys = [image tokens; latent queries]) |
| `text.hidden_states.{i}`, i = 0..=Lt | [B,T,D] | HF `output_hidden_states`: **index 0 = the input embedding** (ids embedded, image embeds inserted, ×√D, + sinusoid positions); index i, 1 ≤ i < Lt = output of block i−1; **index Lt = AFTER the final `layer_norm`** (HF 5.x replaces the last entry by `last_hidden_state`, so the raw output of the last block is not in this list; it is `text.block_output.{Lt-1}`) |
| `text.block_output.{i}`, i < Lt | [B,T,D] | raw output of decoder block i (forward hook) |
| `text.last_hidden_state` | [B,T,D] | after the final `layer_norm` |
| `text.attentions.{i}`, i < Lt | [B,H,T,T] | self-attention softmax probabilities (causal + padding mask applied) |
| `logits` | [B,T,V] | all positions, full vocab (tiny, tiny-wide) |
| `logits_last` | [B,V] | last position, full vocab (tiny-realvocab only) |
| `logits_head` | [B,T,512] | all positions, vocab columns 0..511 (tiny-realvocab only) |
| `logits_argmax` | [B,T] I64 | arg-max over the full vocab at every position (all models) |
| `logits_logsumexp` | [B,T] | logsumexp over the full vocab at every position, computed in f64 then rounded (all models) |

**Pad positions** (attention_mask 0, left-padded rows): HF's values there are garbage that depends on its mask
arithmetic (a pad query sees only finite −3.4e38 entries, so it attends uniformly to the keys whose mask is finite).
Compare only non-pad query positions (rows of `text.attentions` and positions of hidden states/logits); non-pad
positions are unaffected by pads (exact zeros in their softmax).

### generation.json
```
{ "model": "tiny", "attn_implementation": "eager", "seed": 1018, "min_margin": 0.0247, "versions": {...},
  "cases": [ { "name": "greedy_ngram0",
      "inputs": { "input_ids": [[...]], "attention_mask": [[...]],
                  "image_embeds_position_mask": [[...]] or null, "pixel_rows": [0, 1] or null },
      "params": { "max_new_tokens": 16, "min_new_tokens": 0, "do_sample": false, "num_beams": 1,
                  "no_repeat_ngram_size": 0, "length_penalty": 1.0, "early_stopping": false,
                  "eos_token_id": 2, "pad_token_id": 1, "use_cache": true },
      "sequences": [[prompt..., new tokens...]],
      "min_margin": 0.26 } ] }
```
- `pixel_rows`: rows of `reference.safetensors:pixel_values` passed as `pixel_values`, in batch order; `null` =
  text-only (no pixel_values, no position mask).
- Everything in `params` is passed to HF `generate` explicitly (`min_new_tokens` only when > 0), plus
  `return_dict_in_generate=True, output_scores=True`. Nothing comes from generation_config defaults.
- `sequences`: HF `generate(...).sequences`, prompt included; rows that finished are filled with pad (1); the
  batch stops when every row is done, so it can be shorter than prompt + max_new_tokens.
- greedy cases: `min_margin` = smallest (top1 − top2) / max|finite processed score| over all steps of rows not yet
  finished (and the generator checks the emitted token is the arg-max).
- beam cases: `sequences_scores` (HF's, length-penalised) and `jitter_stable: true` = the same sequences come out
  of 4 runs with ±1e-4·max|score| uniform noise added to the processed scores.

| case | inputs | params (besides the defaults above) |
|---|---|---|
| `greedy_ngram0` | main (B = 2, images) | max_new_tokens 16 |
| `greedy_ngram3` | main | no_repeat_ngram_size 3 |
| `greedy_eos` | main | no_repeat_ngram_size 3, eos_token_id = the first token row 0 emits for the first time at a step ≥ 3 of greedy_ngram3 (so the rows stop at different steps and the finished row is pad-filled) |
| `greedy_min_new` | main | as greedy_eos plus min_new_tokens = that step + 3 (eos banned until then) |
| `beam3` | main | num_beams 3, max_new_tokens 12 |
| `beam3_eos` | main | num_beams 3, max_new_tokens 12, no_repeat_ngram_size 3, the eos of greedy_eos, length_penalty 0.7 |
| `batch_left_pad` | the left-padded batch of `reference_left_pad` | max_new_tokens 12; HF's outputs as they are, i.e. with its decode-position quirk (reference §4.2: a cached step's position counts the pads) |
| `batch_left_pad_row{b}` | row b of that batch alone, pads stripped, `pixel_rows` [b] | max_new_tokens 12 |
| `text_only` | the text-only inputs | max_new_tokens 12 |

tiny-realvocab also has, per case, `decoded` (`processor.batch_decode(sequences, skip_special_tokens=True)`:
the image placeholder ids 4..67 decode to ordinary words, as in HF) and `post_processed` (per row:
`cleanup_false` = `post_process_generation(text, cleanup_and_extract=False)`, `caption` and `entities`
[[phrase, [start, end], [[x0, y0, x1, y1], ...]], ...] = `post_process_generation(text)`), and top-level
`processor` (prompts, image files, processor call).

### scores.safetensors
`<case>.step{k}` [B,V] F32 for k = 0, 1, 2 of `greedy_ngram3` and `greedy_min_new`: processed scores (HF
`output_scores`: after the logits processors, −inf where banned; the raw last-position logits when no processor
applies). tiny-realvocab stores only the top 8 instead: `<case>.step{k}.topk_values` [B,8] F32 and
`<case>.step{k}.topk_indices` [B,8] I64 (descending).

## Numbers
Margin threshold: every greedy step of every greedy case has (top1 − top2) / max|score| ≥ @@THRESHOLD@@
(100× the 1e-4 relative logit tolerance, so no greedy choice can flip within tolerance). The seed of each model is
the admissible seed of largest margin among seeds base..base+29 (`gen_models.py --search-seeds 30`); admissible
also requires beam results that are stable under jitter and the listed properties: for every model "rows" (the two
rows of greedy_ngram3 generate different tokens) and "padfill" (in greedy_eos a row finishes before the batch and is
pad-filled); where listed, "beam" (a row of beam3 differs from greedy_ngram0) and "quirk" (a row of HF's
left-padded batch differs from the same prompt run alone).

@@NUMBERS@@

## Regenerate
`cargo xtask fixtures`, or directly from the repo root:
`PYTHONHASHSEED=0 OMP_NUM_THREADS=1 .venv/bin/python xtask/reference/gen_models.py --assets ../shared/assets --out tests/fixtures`
(about 15 s on one core). A second run gives byte-identical files. Options: `--only <model>` (repeatable),
`--search-seeds N` (print admissible seeds instead of writing).
"""


def render(summary, threshold, versions):
    rows = [
        "| model | seed | properties | min greedy margin | keys in model.safetensors (state_dict) | lm_head in file "
        "| left-padded rows equal to unbatched | bytes (all files) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(summary):
        s = summary[name]
        rows.append(
            f"| {name} | {s['seed']} | {', '.join(s['properties']) or '-'} | {s['min_margin']:.4f} "
            f"| {s['checkpoint_keys']} ({s['state_dict_keys']}) | {'yes' if s['lm_head_in_file'] else 'no'} "
            f"| {s['left_pad_batch_equals_unbatched']} | {sum(s['file_bytes'].values())} |"
        )
    rows.append("")
    rows.append("Tensors per file:")
    rows.append("")
    for name in sorted(summary):
        counts = ", ".join(f"`{f}` {n}" for f, n in sorted(summary[name]["tensor_counts"].items()))
        rows.append(f"- {name}: {counts}")
    vers = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    text = TEMPLATE.replace("@@NUMBERS@@", "\n".join(rows))
    text = text.replace("@@THRESHOLD@@", f"{threshold:g}").replace("@@VERSIONS@@", vers)
    return text
