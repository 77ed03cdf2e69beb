//! The fallback tokenizer built from `sentencepiece.bpe.model` when `tokenizer.json` is
//! absent, reproducing HF's conversion (`XLMRobertaConverter` and the 5.24 tokenizer
//! class): the nmt_nfkc precompiled charsmap, the WhitespaceSplit + Metaspace("▁", always)
//! pre-tokeniser, the Unigram model with the fairseq id offset (`<s>`, `<pad>`, `</s>`,
//! `<unk>` = 0..3, piece `i` = `i + 1`), `<mask>`, the `<s> $A </s>` template, and the
//! 1035 KOSMOS-2 tokens added after `<mask>`.
//!
//! The model file is a protobuf (`sentencepiece_model.proto`); the few fields needed are
//! read by the small parser below.

use std::path::Path;
use std::str::FromStr;

use serde_json::json;
use tokenizers::Tokenizer;

use crate::config::TokenizerConfig;
use crate::error::ProcessorError;
use crate::tokenizer::{
    patch_index_token, KosmosTokenizer, TokenizerSource, NUM_PATCH_INDEX_TOKENS, TAG_TOKENS,
};

/// One `SentencePiece` message.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The piece text (`▁the`).
    pub piece: String,
    /// Its log probability.
    pub score: f32,
    /// 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte.
    pub kind: u32,
}

/// The parts of a `ModelProto` the conversion uses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpmModel {
    /// All pieces, in id order.
    pub pieces: Vec<Piece>,
    /// `trainer_spec.model_type` (1 = Unigram).
    pub model_type: u32,
    /// `normalizer_spec.name`.
    pub normalizer_name: String,
    /// `normalizer_spec.precompiled_charsmap`.
    pub precompiled_charsmap: Vec<u8>,
}

/// A cursor over protobuf wire format.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let s = self.buf.get(self.pos..end).ok_or("truncated field")?;
        self.pos = end;
        Ok(s)
    }

    /// The next `(field number, value)`, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Varint(0)
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            t => return Err(format!("unsupported wire type {t}")),
        };
        Ok(Some((key >> 3, value)))
    }
}

impl SpmModel {
    /// Parses a serialized `ModelProto`.
    pub fn parse(buf: &[u8]) -> Result<Self, String> {
        let mut m = SpmModel::default();
        let mut r = Reader::new(buf);
        while let Some((f, v)) = r.field()? {
            match (f, v) {
                (1, Value::Bytes(b)) => m.pieces.push(parse_piece(b)?),
                (2, Value::Bytes(b)) => {
                    let mut t = Reader::new(b);
                    while let Some((f, v)) = t.field()? {
                        if let (3, Value::Varint(x)) = (f, v) {
                            m.model_type = x as u32;
                        }
                    }
                }
                (3, Value::Bytes(b)) => {
                    let mut n = Reader::new(b);
                    while let Some((f, v)) = n.field()? {
                        match (f, v) {
                            (1, Value::Bytes(s)) => {
                                m.normalizer_name = String::from_utf8_lossy(s).into_owned()
                            }
                            (2, Value::Bytes(s)) => m.precompiled_charsmap = s.to_vec(),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(m)
    }
}

fn parse_piece(b: &[u8]) -> Result<Piece, String> {
    let mut p = Piece {
        piece: String::new(),
        score: 0.0,
        kind: 1,
    };
    let mut r = Reader::new(b);
    while let Some((f, v)) = r.field()? {
        match (f, v) {
            (1, Value::Bytes(s)) => {
                p.piece = String::from_utf8(s.to_vec()).map_err(|_| "piece is not UTF-8")?
            }
            (2, Value::Fixed32(x)) => p.score = f32::from_bits(x),
            (3, Value::Varint(x)) => p.kind = x as u32,
            _ => {}
        }
    }
    Ok(p)
}

/// Standard base64 (the encoding `tokenizer.json` uses for the charsmap).
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The `tokenizer.json` document HF 5.24 saves for KOSMOS-2, built from the model.
pub fn tokenizer_json(m: &SpmModel, cfg: &TokenizerConfig) -> Result<serde_json::Value, String> {
    if m.model_type != 1 {
        return Err(format!("model_type {} is not Unigram (1)", m.model_type));
    }
    if m.pieces.len() < 4 {
        return Err("fewer than 4 pieces".into());
    }
    if m.precompiled_charsmap.is_empty() {
        return Err("no precompiled normalizer charsmap".into());
    }
    let specials = [
        &cfg.bos_token,
        &cfg.pad_token,
        &cfg.eos_token,
        &cfg.unk_token,
    ];
    let mut vocab: Vec<serde_json::Value> = specials.iter().map(|t| json!([t, 0.0])).collect();
    vocab.extend(
        m.pieces[3..]
            .iter()
            .map(|p| json!([p.piece, f64::from(p.score)])),
    );
    let mask_id = vocab.len();
    vocab.push(json!(["<mask>", 0.0]));
    let added = |id: usize, content: &str, lstrip: bool, special: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": lstrip,
               "rstrip": false, "normalized": false, "special": special})
    };
    let mut added_tokens: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, t)| added(i, t, false, true))
        .collect();
    added_tokens.push(added(mask_id, "<mask>", true, true));
    let kosmos = TAG_TOKENS
        .iter()
        .map(|t| t.to_string())
        .chain((0..NUM_PATCH_INDEX_TOKENS).map(patch_index_token));
    for (i, t) in kosmos.enumerate() {
        added_tokens.push(added(mask_id + 1 + i, &t, true, false));
    }
    let metaspace = json!({"type": "Metaspace", "replacement": "\u{2581}",
                           "prepend_scheme": "always", "split": true});
    let (bos, eos) = (&cfg.bos_token, &cfg.eos_token);
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": {"type": "Precompiled",
                       "precompiled_charsmap": base64(&m.precompiled_charsmap)},
        "pre_tokenizer": {"type": "Sequence",
                          "pretokenizers": [{"type": "WhitespaceSplit"}, metaspace]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": eos, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": eos, "type_id": 0}},
                     {"SpecialToken": {"id": eos, "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}},
                     {"SpecialToken": {"id": eos, "type_id": 0}}],
            "special_tokens": {
                bos.as_str(): {"id": bos, "ids": [0], "tokens": [bos]},
                eos.as_str(): {"id": eos, "ids": [2], "tokens": [eos]}
            }
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab, "byte_fallback": false}
    }))
}

/// Builds the KOSMOS-2 tokenizer from `sentencepiece.bpe.model`.
pub fn tokenizer_from_sentencepiece(
    path: &Path,
    config: TokenizerConfig,
) -> Result<KosmosTokenizer, ProcessorError> {
    let bad = |message: String| ProcessorError::Sentencepiece {
        path: path.to_path_buf(),
        message,
    };
    let bytes = crate::config::read_bytes(path)?;
    let model = SpmModel::parse(&bytes).map_err(bad)?;
    let doc = tokenizer_json(&model, &config).map_err(bad)?;
    let inner = Tokenizer::from_str(&doc.to_string()).map_err(|e| bad(e.to_string()))?;
    KosmosTokenizer::from_tokenizer(inner, config, TokenizerSource::Sentencepiece, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn parses_a_hand_written_model() {
        // pieces { piece: "a" score: -1.5 type: 1 }, trainer_spec { model_type: 1 },
        // normalizer_spec { name: "n" precompiled_charsmap: "\x01" }
        let piece = [0x0A, 1, b'a', 0x15, 0, 0, 0xC0, 0xBF, 0x18, 1];
        let mut buf = vec![0x0A, piece.len() as u8];
        buf.extend_from_slice(&piece);
        buf.extend_from_slice(&[0x12, 2, 0x18, 1]);
        buf.extend_from_slice(&[0x1A, 6, 0x0A, 1, b'n', 0x12, 1, 1]);
        let m = SpmModel::parse(&buf).unwrap();
        assert_eq!(
            m.pieces,
            vec![Piece {
                piece: "a".into(),
                score: -1.5,
                kind: 1
            }]
        );
        assert_eq!(m.model_type, 1);
        assert_eq!(m.normalizer_name, "n");
        assert_eq!(m.precompiled_charsmap, vec![1]);
        assert!(SpmModel::parse(&[0x0A, 5, 1]).is_err());
        assert!(tokenizer_json(&m, &TokenizerConfig::default()).is_err());
    }
}
