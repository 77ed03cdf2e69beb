//! The additive attention mask; mirrors HF `Kosmos2TextTransformer._prepare_decoder_attention_mask`
//! (`_make_causal_mask` + `_expand_mask`).

use kosmos_tensor::{Device, Tensor};

use crate::error::{Error, Result};

/// The masked value: `torch.finfo(float32).min`. Causal and padding parts are summed in f32, so a
/// position masked by both holds `-inf`, exactly as in HF.
pub const NEG: f32 = f32::MIN;

/// Builds the additive mask `[batch, 1, tgt_len, past_max + tgt_len]` for one forward pass.
///
/// - `past[b]`: the number of cached tokens of row `b` (the KV cache's per-row length).
/// - `attention_mask`: optional `[batch, past_max + tgt_len]` of 0/1 (1 = attend), one column per
///   cache slot plus the new tokens, as HF expects.
///
/// The causal part (`0` where key `j <= past[b] + i`, else [`NEG`]) is built when `tgt_len > 1`
/// (HF) or when rows have different cache lengths (then it also hides the unused cache slots of
/// the shorter rows). The padding part is [`NEG`] where the mask is 0. With equal lengths this is
/// HF's mask bit for bit; `None` means "no mask" (decode of one token without `attention_mask`).
pub fn attention_mask(
    batch: usize,
    tgt_len: usize,
    past: &[usize],
    attention_mask: Option<&[u32]>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let mut data = Vec::new();
    if !mask_into(batch, tgt_len, past, attention_mask, &mut data)? {
        return Ok(None);
    }
    let src_len = past.iter().copied().max().unwrap_or(0) + tgt_len;
    Ok(Some(Tensor::from_vec(
        data,
        &[batch, 1, tgt_len, src_len],
        device,
    )?))
}

/// [`attention_mask`] into a reused buffer: returns `false` (and leaves `out` alone) when no mask
/// is needed, otherwise fills `out` with the `batch * tgt_len * (past_max + tgt_len)` values
/// (no allocation once `out` has the capacity).
pub(crate) fn mask_into(
    batch: usize,
    tgt_len: usize,
    past: &[usize],
    attention_mask: Option<&[u32]>,
    out: &mut Vec<f32>,
) -> Result<bool> {
    if past.len() != batch {
        return Err(Error::InputShape {
            what: "cache lengths",
            expected: format!("{batch} rows"),
            found: format!("{} rows", past.len()),
        });
    }
    let past_max = past.iter().copied().max().unwrap_or(0);
    let src_len = past_max + tgt_len;
    let uniform = past.iter().all(|&p| p == past_max);
    let causal = tgt_len > 1 || !uniform;
    if let Some(m) = attention_mask {
        if m.len() != batch * src_len {
            return Err(Error::InputShape {
                what: "attention_mask",
                expected: format!("[{batch}, {src_len}] (cached + new tokens)"),
                found: format!("{} values", m.len()),
            });
        }
        if let Some(bad) = m.iter().find(|&&v| v > 1) {
            return Err(Error::InvalidInput {
                what: "attention_mask",
                msg: format!("values must be 0 or 1, found {bad}"),
            });
        }
    }
    if !causal && attention_mask.is_none() {
        return Ok(false);
    }
    out.clear();
    out.resize(batch * tgt_len * src_len, 0.0);
    for (b, rows) in out.chunks_exact_mut(tgt_len * src_len).enumerate() {
        for (i, row) in rows.chunks_exact_mut(src_len).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                let c = if causal && j > past[b] + i { NEG } else { 0.0 };
                let p = match attention_mask {
                    Some(m) if m[b * src_len + j] == 0 => NEG,
                    _ => 0.0,
                };
                *v = c + p;
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: Option<Tensor>) -> Vec<f32> {
        t.expect("a mask").to_vec_f32().unwrap()
    }

    #[test]
    fn causal_only_for_prefill() {
        let m = values(attention_mask(1, 3, &[0], None, &Device::Cpu).unwrap());
        #[rustfmt::skip]
        assert_eq!(m, [0.0, NEG, NEG,
                       0.0, 0.0, NEG,
                       0.0, 0.0, 0.0]);
    }

    #[test]
    fn cache_columns_are_visible() {
        let m = values(attention_mask(1, 2, &[2], None, &Device::Cpu).unwrap());
        #[rustfmt::skip]
        assert_eq!(m, [0.0, 0.0, 0.0, NEG,
                       0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn single_token_without_padding_needs_no_mask() {
        assert!(attention_mask(2, 1, &[5, 5], None, &Device::Cpu)
            .unwrap()
            .is_none());
    }

    #[test]
    fn padding_is_added_to_causal_giving_minus_inf() {
        // Row 0 is right-padded by one token, row 1 left-padded by one.
        let am = [1, 1, 0, 0, 1, 1];
        let m = values(attention_mask(2, 3, &[0, 0], Some(&am), &Device::Cpu).unwrap());
        let inf = f32::NEG_INFINITY;
        #[rustfmt::skip]
        assert_eq!(&m[..9], &[0.0, NEG, inf,
                              0.0, 0.0, inf,
                              0.0, 0.0, NEG]);
        #[rustfmt::skip]
        assert_eq!(&m[9..], &[NEG, NEG, NEG,
                              NEG, 0.0, NEG,
                              NEG, 0.0, 0.0]);
        // The pad query row keeps finite entries, so its softmax stays finite.
        assert!(m[9..12].iter().all(|v| v.is_finite()));
    }

    #[test]
    fn decode_with_padding_mask_only() {
        let am = [0, 1, 1, 1];
        let m = values(attention_mask(1, 1, &[3], Some(&am), &Device::Cpu).unwrap());
        assert_eq!(m, [NEG, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn unequal_cache_lengths_hide_unused_slots() {
        let m = values(attention_mask(2, 1, &[1, 3], None, &Device::Cpu).unwrap());
        assert_eq!(m, [0.0, 0.0, NEG, NEG, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn rejects_bad_masks() {
        assert!(matches!(
            attention_mask(1, 2, &[0], Some(&[1]), &Device::Cpu),
            Err(Error::InputShape { .. })
        ));
        assert!(matches!(
            attention_mask(1, 2, &[0], Some(&[1, 2]), &Device::Cpu),
            Err(Error::InvalidInput { .. })
        ));
    }
}
