//! The KOSMOS-2 tokenizer: the XLM-R Unigram model plus the 1035 Kosmos tokens, loaded
//! from `tokenizer.json` (or built from `sentencepiece.bpe.model`, see [`crate::spm`]).
//!
//! Encoding and decoding go through the `tokenizers` crate, the same Rust library HF's
//! `TokenizersBackend` calls, so the ids are HF's by construction. Truncation and padding
//! are reproduced here with HF's exact rules (see [`crate::processor`]).

use std::path::Path;

use tokenizers::{Encoding, Tokenizer, TruncationDirection};

use crate::config::{PaddingSide, TokenizerConfig};
use crate::error::ProcessorError;

/// The tag tokens the processor adds, in HF's order (`Kosmos2Processor.tag_tokens`).
pub const TAG_TOKENS: [&str; 11] = [
    EOD_TOKEN, BOI_TOKEN, EOI_TOKEN, EOC_TOKEN, EOL_TOKEN, BOP_TOKEN, EOP_TOKEN, BOO_TOKEN,
    EOO_TOKEN, DOM_TOKEN, GRD_TOKEN,
];
/// End of document.
pub const EOD_TOKEN: &str = "</doc>";
/// Beginning of image.
pub const BOI_TOKEN: &str = "<image>";
/// End of image.
pub const EOI_TOKEN: &str = "</image>";
/// End of chunk.
pub const EOC_TOKEN: &str = "</chunk>";
/// End of line.
pub const EOL_TOKEN: &str = "</line>";
/// Beginning of phrase.
pub const BOP_TOKEN: &str = "<phrase>";
/// End of phrase.
pub const EOP_TOKEN: &str = "</phrase>";
/// Beginning of object (patch-index pairs follow).
pub const BOO_TOKEN: &str = "<object>";
/// End of object.
pub const EOO_TOKEN: &str = "</object>";
/// Delimiter between several boxes of one object.
pub const DOM_TOKEN: &str = "</delimiter_of_multi_objects/>";
/// Grounding prompt prefix.
pub const GRD_TOKEN: &str = "<grounding>";
/// `num_patch_index_tokens` of the real model (a 32 × 32 grid).
pub const NUM_PATCH_INDEX_TOKENS: usize = 1024;

/// `<patch_index_XXXX>` for index `k` (4-digit zero padding, HF's `str(k).zfill(4)`).
pub fn patch_index_token(k: usize) -> String {
    format!("<patch_index_{k:04}>")
}

/// The `tokenizers` library failed on a text (its message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tokenization failed: {0}")]
pub struct TokenizeError(pub String);

/// Ids of the special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// `<s>` (0).
    pub bos: u32,
    /// `<pad>` (1).
    pub pad: u32,
    /// `</s>` (2).
    pub eos: u32,
    /// `<unk>` (3).
    pub unk: u32,
}

/// Where the tokenizer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerSource {
    /// `tokenizer.json`.
    TokenizerJson,
    /// `sentencepiece.bpe.model`, converted in memory.
    Sentencepiece,
}

/// The KOSMOS-2 tokenizer.
#[derive(Debug, Clone)]
pub struct KosmosTokenizer {
    inner: Tokenizer,
    config: TokenizerConfig,
    special: SpecialIds,
    tag_ids: [u32; 11],
    patch_ids: Vec<u32>,
    source: TokenizerSource,
}

impl KosmosTokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_json_file(path: &Path, config: TokenizerConfig) -> Result<Self, ProcessorError> {
        let bytes = crate::config::read_bytes(path)?;
        let inner = Tokenizer::from_bytes(&bytes).map_err(|e| ProcessorError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_tokenizer(inner, config, TokenizerSource::TokenizerJson, path)
    }

    /// Wraps a `tokenizers::Tokenizer`, checking that it has every KOSMOS-2 token;
    /// `path` names the source in errors.
    pub fn from_tokenizer(
        mut inner: Tokenizer,
        config: TokenizerConfig,
        source: TokenizerSource,
        path: &Path,
    ) -> Result<Self, ProcessorError> {
        // HF configures truncation and padding per call; a file that sets them must not
        // leak into our encodings.
        inner
            .with_truncation(None)
            .map_err(|e| ProcessorError::Tokenizer {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        inner.with_padding(None);
        let lookup = |tok: &str| {
            inner
                .token_to_id(tok)
                .ok_or_else(|| ProcessorError::Config {
                    path: path.to_path_buf(),
                    message: format!("the vocabulary has no {tok:?} token"),
                })
        };
        let special = SpecialIds {
            bos: lookup(&config.bos_token)?,
            pad: lookup(&config.pad_token)?,
            eos: lookup(&config.eos_token)?,
            unk: lookup(&config.unk_token)?,
        };
        let mut tag_ids = [0u32; 11];
        for (id, tok) in tag_ids.iter_mut().zip(TAG_TOKENS) {
            *id = lookup(tok)?;
        }
        let patch_ids = (0..NUM_PATCH_INDEX_TOKENS)
            .map(|k| lookup(&patch_index_token(k)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner,
            config,
            special,
            tag_ids,
            patch_ids,
            source,
        })
    }

    /// The wrapped `tokenizers::Tokenizer`.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The settings read from `tokenizer_config.json`.
    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }

    /// Special token ids.
    pub fn special_ids(&self) -> SpecialIds {
        self.special
    }

    /// Ids of [`TAG_TOKENS`], in order.
    pub fn tag_ids(&self) -> &[u32; 11] {
        &self.tag_ids
    }

    /// Id of `<patch_index_k>`, if `k < 1024`.
    pub fn patch_index_id(&self, k: usize) -> Option<u32> {
        self.patch_ids.get(k).copied()
    }

    /// Where this tokenizer was loaded from.
    pub fn source(&self) -> TokenizerSource {
        self.source
    }

    /// Vocabulary size including added tokens (65037 for the real model).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Encodes one text the way HF's tokenizer call does for a single sequence:
    /// optional truncation to `truncate_to` tokens (counting the `<s>`/`</s>` the
    /// template adds when `add_special_tokens`), then the template.
    ///
    /// The truncation budget is `max_length − 2` computed with wrap-around, as the
    /// `tokenizers` library does in release builds: a `max_length` below 2 with special
    /// tokens disables truncation, exactly as in Python.
    pub fn encode(
        &self,
        text: &str,
        add_special_tokens: bool,
        truncate_to: Option<(usize, PaddingSide)>,
    ) -> Result<Vec<u32>, TokenizeError> {
        let mut enc: Encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TokenizeError(e.to_string()))?;
        if let Some((max_length, side)) = truncate_to {
            let n_added = self
                .inner
                .get_post_processor()
                .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false));
            let budget = if add_special_tokens && n_added > 0 {
                max_length.wrapping_sub(n_added)
            } else {
                max_length
            };
            if enc.get_ids().len() > budget {
                let dir = match side {
                    PaddingSide::Right => TruncationDirection::Right,
                    PaddingSide::Left => TruncationDirection::Left,
                };
                enc.truncate(budget, 0, dir);
            }
        }
        let enc = self
            .inner
            .post_process(enc, None, add_special_tokens)
            .map_err(|e| TokenizeError(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes one sequence like HF's `decode`: the `tokenizers` decoder, then
    /// `clean_up_tokenization` when `clean_up` (default: the `tokenizer_config.json`
    /// value). Unknown ids are skipped, as the library does.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool, clean_up: Option<bool>) -> String {
        // The library only fails on decoder errors, which the Metaspace decoder never
        // raises; an empty string mirrors "nothing decodable".
        let text = self
            .inner
            .decode(ids, skip_special_tokens)
            .unwrap_or_default();
        if clean_up.unwrap_or(self.config.clean_up_tokenization_spaces) {
            clean_up_tokenization(&text)
        } else {
            text
        }
    }
}

/// HF's `clean_up_tokenization`: the ten replacements, applied left to right.
pub fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_token_format() {
        assert_eq!(patch_index_token(0), "<patch_index_0000>");
        assert_eq!(patch_index_token(44), "<patch_index_0044>");
        assert_eq!(patch_index_token(1023), "<patch_index_1023>");
    }

    #[test]
    fn cleanup_rules() {
        assert_eq!(
            clean_up_tokenization("hello , world . is n't it ? I 'm ok ' yes ' we 're"),
            "hello, world. isn't it? I'm ok'yes'we're"
        );
    }
}
