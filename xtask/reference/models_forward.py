"""HF reference forward passes for the tiny model fixtures: every intermediate, checked for meaning."""

import torch


class _Hooks:
    """Forward hooks that capture the raw decoder block outputs and the projection's input/dense output."""

    def __init__(self, model):
        self.store = {}
        self.handles = []
        text = model.text_model.model
        for i, layer in enumerate(text.layers):
            self.handles.append(layer.register_forward_hook(self._save(f"text.block_output.{i}")))
        self.handles.append(
            model.vision_model.model.pre_layrnorm.register_forward_hook(self._save("_vision.pre_layrnorm_out"))
        )
        dense = model.image_to_text_projection.dense
        self.handles.append(dense.register_forward_hook(self._save_io("projection.input", "projection.dense")))

    def _save(self, key):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            self.store[key] = out.detach().clone()

        return hook

    def _save_io(self, key_in, key_out):
        def hook(_module, inputs, output):
            self.store[key_in] = inputs[0].detach().clone()
            self.store[key_out] = output.detach().clone()

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def _logits_entries(logits, full_logits):
    out = {}
    if full_logits:
        out["logits"] = logits
    else:
        out["logits_last"] = logits[:, -1, :].contiguous()
        out["logits_head"] = logits[:, :, :512].contiguous()
    out["logits_argmax"] = logits.argmax(dim=-1)
    out["logits_logsumexp"] = torch.logsumexp(logits.double(), dim=-1).float()
    return out


@torch.no_grad()
def forward_reference(model, *, input_ids, attention_mask, labels, pixel_values=None,
                      image_embeds_position_mask=None, full_logits=True, vision_attentions=True,
                      store_vision=True):
    """Run HF forward once with hidden states and attentions; return {name: tensor} as documented."""
    hooks = _Hooks(model)
    try:
        common = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                      output_hidden_states=True, output_attentions=True, use_cache=False)
        if pixel_values is None:
            # text only: Kosmos2ForConditionalGeneration.forward insists on pixels or image_embeds, so run its
            # text model (Kosmos2TextForCausalLM) with image_embeds=None, exactly what generate() does then
            out = model.text_model(**common)
        else:
            out = model(pixel_values=pixel_values, image_embeds_position_mask=image_embeds_position_mask, **common)
    finally:
        hooks.remove()
    st = hooks.store
    res = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "loss": out.loss.reshape(1),
    }
    if image_embeds_position_mask is not None:
        res["image_embeds_position_mask"] = image_embeds_position_mask
    emb_pos = model.text_model.model.embed_positions
    res["text.position_ids"] = emb_pos.create_position_ids_from_input_ids(input_ids, emb_pos.padding_idx, 0)

    n_text = model.config.text_config.layers
    hs = out.hidden_states
    assert len(hs) == n_text + 1, (len(hs), n_text)
    for i, h in enumerate(hs):
        res[f"text.hidden_states.{i}"] = h
    for i in range(n_text):
        res[f"text.block_output.{i}"] = st[f"text.block_output.{i}"]
        res[f"text.attentions.{i}"] = out.attentions[i]
    # Meaning checks (documented in the README): hs[i] = block i-1 output for 1 <= i < L,
    # hs[L] = final layer_norm output (tied to last_hidden_state), never the raw last block output.
    for i in range(1, n_text):
        assert torch.equal(hs[i], st[f"text.block_output.{i - 1}"]), i
    last = model.text_model.model.layer_norm(st[f"text.block_output.{n_text - 1}"])
    assert torch.equal(hs[n_text], last)
    res["text.last_hidden_state"] = last
    res.update(_logits_entries(out.logits, full_logits))
    # loss check: standard shifted CE, mean over labels != -100
    shift_logits = out.logits[:, :-1, :].reshape(-1, out.logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1)
    ce = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
    assert torch.allclose(ce, out.loss, rtol=1e-6, atol=0), (ce, out.loss)

    if pixel_values is not None:
        io = out.image_outputs
        res["image_embeds"] = io.pooler_output
        if store_vision:
            res["projection_attentions"] = io.projection_attentions
            res["projection.input"] = st["projection.input"]
            res["projection.dense"] = st["projection.dense"]
            res["pixel_values"] = pixel_values
            n_vis = model.config.vision_config.num_hidden_layers
            vhs = io.hidden_states
            assert len(vhs) == n_vis + 1
            assert torch.equal(vhs[0], st["_vision.pre_layrnorm_out"])
            assert torch.equal(vhs[-1], io.last_hidden_state)
            for i, h in enumerate(vhs):
                res[f"vision.hidden_states.{i}"] = h
            res["vision.last_hidden_state"] = io.last_hidden_state
            vm = model.vision_model.model
            res["vision.pooler_output"] = vm.post_layernorm(io.last_hidden_state[:, 0, :])
            if vision_attentions:
                for i in range(n_vis):
                    res[f"vision.attentions.{i}"] = io.attentions[i]
            expect_in = torch.nn.functional.normalize(vm.post_layernorm(io.last_hidden_state), dim=-1)
            assert torch.equal(expect_in, st["projection.input"])
    return res


@torch.no_grad()
def interpolate_reference(model, pixel_values):
    """Vision + projection only, at a non-native size, with interpolate_pos_encoding=True."""
    io = model.get_image_features(
        pixel_values, interpolate_pos_encoding=True, output_hidden_states=True, return_dict=True
    )
    res = {"pixel_values": pixel_values, "vision.last_hidden_state": io.last_hidden_state,
           "image_embeds": io.pooler_output}
    for i, h in enumerate(io.hidden_states):
        res[f"vision.hidden_states.{i}"] = h
    return res


def to_saveable(d):
    """Contiguous, detached, f32 (floats) / i64 (ints) copies, for safetensors.torch.save_file."""
    out = {}
    for k, v in d.items():
        v = v.detach()
        if v.is_floating_point():
            v = v.to(torch.float32)
        else:
            v = v.to(torch.int64)
        out[k] = v.contiguous().clone()
    return out
