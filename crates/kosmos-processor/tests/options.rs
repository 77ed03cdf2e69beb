//! `return_length`, `pad_to_multiple_of`, truncation with `add_eos_token` and the
//! `padding_side` keyword, against outputs recorded from HF 5.24 (tokenizers 0.23.3).

mod support;

use kosmos_processor::{Padding, PaddingSide, ProcessOptions, ProcessorInput};
use support::cached_processor;

fn texts() -> Vec<ProcessorInput> {
    vec![
        ProcessorInput::text("hello world foo bar"),
        ProcessorInput::text("a"),
    ]
}

#[test]
fn return_length_and_pad_to_multiple_of() {
    let Some(p) = cached_processor("return_length_and_pad_to_multiple_of") else {
        return;
    };
    // p(text=[...], padding=True, pad_to_multiple_of=8, return_length=True)
    let opts = ProcessOptions {
        padding: Padding::Longest,
        pad_to_multiple_of: Some(8),
        return_length: true,
        ..Default::default()
    };
    let out = p.process(&texts(), &opts).unwrap();
    assert_eq!(
        out.input_ids,
        vec![
            vec![0, 13976, 210, 54177, 1582, 1, 1, 1],
            vec![0, 10, 1, 1, 1, 1, 1, 1]
        ]
    );
    assert_eq!(out.attention_mask[1], vec![1, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(out.length, Some(vec![8, 8]));

    // padding="max_length", max_length=3: pads short rows, never truncates.
    let opts = ProcessOptions {
        padding: Padding::MaxLength,
        max_length: Some(3),
        return_length: true,
        ..Default::default()
    };
    let out = p.process(&texts(), &opts).unwrap();
    assert_eq!(
        out.input_ids,
        vec![vec![0, 13976, 210, 54177, 1582], vec![0, 10, 1]]
    );
    assert_eq!(out.length, Some(vec![5, 3]));

    // padding=True, padding_side="left" (text only: the keyword applies).
    let opts = ProcessOptions {
        padding: Padding::Longest,
        padding_side: Some(PaddingSide::Left),
        return_length: true,
        ..Default::default()
    };
    let out = p.process(&texts(), &opts).unwrap();
    assert_eq!(out.input_ids[1], vec![1, 1, 1, 0, 10]);
    assert_eq!(out.length, Some(vec![5, 5]));

    // With images `length` is the tokenizer's unpadded count (71, 68) while the rows are
    // padded to 71.
    let img = image::RgbImage::new(4, 4);
    let inputs: Vec<_> = texts()
        .into_iter()
        .map(|t| t.with_image(img.clone()))
        .collect();
    let opts = ProcessOptions {
        return_length: true,
        ..Default::default()
    };
    let out = p.process(&inputs, &opts).unwrap();
    assert_eq!(out.length, Some(vec![71, 68]));
    assert!(out.input_ids.iter().all(|r| r.len() == 71));
}

#[test]
fn truncation_with_eos_follows_the_tokenizers_library() {
    let Some(p) = cached_processor("truncation_with_eos") else {
        return;
    };
    let one = [ProcessorInput::text("hello world foo bar")];
    // p(text=[...], add_eos_token=True, max_length=m, truncation=True): a budget below the
    // two special tokens wraps around and disables truncation.
    let with_eos: [(usize, Vec<u32>); 4] = [
        (0, vec![0, 13976, 210, 54177, 1582, 2]),
        (1, vec![0, 13976, 210, 54177, 1582, 2]),
        (2, vec![0, 2]),
        (3, vec![0, 13976, 2]),
    ];
    for (m, want) in with_eos {
        let opts = ProcessOptions {
            add_eos_token: true,
            max_length: Some(m),
            truncation: Some(true),
            ..Default::default()
        };
        assert_eq!(
            p.process(&one, &opts).unwrap().input_ids[0],
            want,
            "eos, max_length {m}"
        );
    }
    // Without eos the literal "<s>" is text, so it is truncated like any token.
    let plain: [(usize, Vec<u32>); 4] = [
        (0, vec![]),
        (1, vec![0]),
        (2, vec![0, 13976]),
        (3, vec![0, 13976, 210]),
    ];
    for (m, want) in plain {
        let opts = ProcessOptions {
            max_length: Some(m),
            truncation: Some(true),
            ..Default::default()
        };
        assert_eq!(
            p.process(&one, &opts).unwrap().input_ids[0],
            want,
            "max_length {m}"
        );
    }
}
