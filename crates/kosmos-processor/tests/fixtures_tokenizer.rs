//! `tokenizer_ids.json` and `postprocess.json`: the tokenizer, decoding and
//! `post_process_generation` against HF.

mod support;

use kosmos_processor::post_process_generation;
use serde_json::Value;
use support::{read_json, real_processor, rows_u32};

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_u64().unwrap_or(u64::MAX) as u32)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn tokenizer_ids_match_hf() {
    let Some(p) = real_processor("tokenizer_ids_match_hf") else {
        return;
    };
    let fx = read_json("tokenizer_ids.json");
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 100);
    let tok = p.tokenizer();
    for c in cases {
        let text = c["text"].as_str().expect("text");
        let got = tok.encode(text, false, None).expect("encode");
        assert_eq!(got, ids(&c["ids"]), "ids of {text:?}");
        let got = tok.encode(text, true, None).expect("encode");
        assert_eq!(
            got,
            ids(&c["ids_with_special"]),
            "ids_with_special of {text:?}"
        );
        let tokens: Vec<String> = ids(&c["ids"])
            .iter()
            .map(|&i| tok.id_to_token(i).unwrap_or_default())
            .collect();
        assert_eq!(tokens, strings(&c["tokens"]), "tokens of {text:?}");
    }
}

#[test]
fn post_process_generation_matches_hf() {
    let fx = read_json("postprocess.json");
    assert_eq!(fx["num_patches_per_side"], 32);
    let gens = fx["generation"].as_array().expect("generation");
    assert!(gens.len() >= 500);
    for g in gens {
        let name = g["name"].as_str().unwrap_or("?");
        let text = g["text"].as_str().expect("text");
        let raw = post_process_generation(text, false).expect("no cleanup");
        assert_eq!(
            raw.caption,
            g["caption"].as_str().unwrap_or_default(),
            "{name}: caption"
        );
        assert!(raw.entities.is_empty());
        let got = post_process_generation(text, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            got.caption,
            g["clean_text"].as_str().unwrap_or_default(),
            "{name}: text"
        );
        // The serde form mirrors HF's (caption, [(name, (start, end), [boxes])]) exactly,
        // floats included (serde_json and Python both print the shortest round-trip form).
        let ours = serde_json::to_value(&got).expect("serialise");
        assert_eq!(ours[1], g["entities"], "{name}: entities");
        for e in &got.entities {
            if let Some((s, t)) = e.byte_span {
                let cps: String = got
                    .caption
                    .chars()
                    .skip(e.span.0 as usize)
                    .take((e.span.1 - e.span.0) as usize)
                    .collect();
                assert_eq!(&got.caption[s..t], cps, "{name}: byte span");
            }
        }
    }
}

#[test]
fn decoding_matches_hf() {
    let Some(p) = real_processor("decoding_matches_hf") else {
        return;
    };
    let fx = read_json("postprocess.json");
    let default_cleanup = fx["clean_up_tokenization_spaces"].as_bool().expect("flag");
    assert_eq!(
        p.tokenizer().config().clean_up_tokenization_spaces,
        default_cleanup
    );
    let decs = fx["decode"].as_array().expect("decode");
    assert!(decs.len() >= 100);
    let tok = p.tokenizer();
    for d in decs {
        let name = d["name"].as_str().unwrap_or("?");
        let rows = rows_u32(&d["ids"]);
        assert_eq!(
            p.batch_decode(&rows, true),
            strings(&d["skip"]),
            "{name}: skip"
        );
        assert_eq!(
            p.batch_decode(&rows, false),
            strings(&d["keep"]),
            "{name}: keep"
        );
        let noclean = |skip: bool| -> Vec<String> {
            rows.iter()
                .map(|r| tok.decode(r, skip, Some(false)))
                .collect()
        };
        assert_eq!(
            noclean(true),
            strings(&d["skip_noclean"]),
            "{name}: skip_noclean"
        );
        assert_eq!(
            noclean(false),
            strings(&d["keep_noclean"]),
            "{name}: keep_noclean"
        );
        assert_eq!(
            p.post_process_image_text_to_text(&rows, true),
            strings(&d["image_text_to_text"]),
            "{name}: image_text_to_text"
        );
    }
}
