//! The `sentencepiece.bpe.model` fallback gives the same ids as `tokenizer.json` on the
//! whole prompt corpus, and `from_dir` uses it when `tokenizer.json` is absent.

mod support;

use kosmos_processor::spm::tokenizer_from_sentencepiece;
use kosmos_processor::tokenizer::TokenizerSource;
use kosmos_processor::{Kosmos2Processor, ProcessorError, TokenizerConfig};
use support::{common, read_json, real_processor};

#[test]
fn sentencepiece_matches_tokenizer_json_on_the_corpus() {
    let Some(dir) = common::real_model_dir("sentencepiece_matches_tokenizer_json") else {
        return;
    };
    let Some(p) = real_processor("sentencepiece_matches_tokenizer_json") else {
        return;
    };
    let cfg = TokenizerConfig::from_file(&dir.join("tokenizer_config.json")).unwrap();
    let spm = tokenizer_from_sentencepiece(&dir.join("sentencepiece.bpe.model"), cfg).unwrap();
    assert_eq!(spm.source(), TokenizerSource::Sentencepiece);
    let json = p.tokenizer();
    assert_eq!(spm.vocab_size(), json.vocab_size());
    assert_eq!(spm.special_ids(), json.special_ids());
    assert_eq!(spm.tag_ids(), json.tag_ids());

    let mut texts: Vec<String> = Vec::new();
    for c in read_json("tokenizer_ids.json")["cases"].as_array().unwrap() {
        texts.push(c["text"].as_str().unwrap().to_string());
    }
    for c in read_json("prompts.json")["cases"].as_array().unwrap() {
        for t in c["expected"]["processed_text"].as_array().unwrap() {
            let t = t.as_str().unwrap();
            texts.push(t.to_string());
            texts.push(format!("<s>{t}"));
        }
    }
    assert!(texts.len() > 1000);
    for t in &texts {
        for special in [false, true] {
            let a = spm.encode(t, special, None).unwrap();
            let b = json.encode(t, special, None).unwrap();
            assert_eq!(a, b, "{t:?} (special {special})");
            assert_eq!(
                spm.decode(&a, true, None),
                json.decode(&b, true, None),
                "{t:?}"
            );
        }
    }
}

#[test]
fn from_dir_falls_back_to_sentencepiece() {
    let Some(dir) = common::real_model_dir("from_dir_falls_back_to_sentencepiece") else {
        return;
    };
    let tmp = std::env::temp_dir().join(format!("kosmos-spm-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for f in ["tokenizer_config.json", "preprocessor_config.json"] {
        std::fs::copy(dir.join(f), tmp.join(f)).unwrap();
    }
    // Without either tokenizer file the error names tokenizer.json.
    let err = Kosmos2Processor::from_dir(&tmp).unwrap_err();
    assert!(
        matches!(&err, ProcessorError::MissingFile { path } if path.ends_with("tokenizer.json")),
        "{err}"
    );
    std::fs::copy(
        dir.join("sentencepiece.bpe.model"),
        tmp.join("sentencepiece.bpe.model"),
    )
    .unwrap();
    let p = Kosmos2Processor::from_dir(&tmp).unwrap();
    assert_eq!(p.tokenizer().source(), TokenizerSource::Sentencepiece);
    let ids = p
        .tokenizer()
        .encode("<s><grounding>An image of", false, None)
        .unwrap();
    assert_eq!(ids, [0, 64012, 712, 1648, 9]);
    // A corrupt model is a typed error naming the file.
    std::fs::write(tmp.join("sentencepiece.bpe.model"), b"\x0a\xff\xff").unwrap();
    let err = Kosmos2Processor::from_dir(&tmp).unwrap_err();
    assert!(matches!(err, ProcessorError::Sentencepiece { .. }), "{err}");
    assert!(err.to_string().contains("sentencepiece.bpe.model"), "{err}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
