//! Property tests: boxes round-trip within a grid cell, post-processing never panics,
//! encoding is stable under the whitespace rules, image batches are rectangular.

mod support;

use kosmos_processor::boxes::{coordinate_to_patch_index, patch_index_to_coordinate};
use kosmos_processor::{post_process_generation, ProcessOptions, ProcessorInput};
use proptest::prelude::*;

fn unit_pair() -> impl Strategy<Value = (f64, f64)> {
    (0.0f64..1.0, 0.0f64..1.0).prop_filter_map("x2 > x1", |(a, b)| {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        (hi > lo).then_some((lo, hi))
    })
}

proptest! {
    #[test]
    fn box_round_trip_lands_within_one_cell((x1, x2) in unit_pair(), (y1, y2) in unit_pair()) {
        let (ul, lr) = coordinate_to_patch_index([x1, y1, x2, y2], 32).unwrap();
        prop_assert!(ul < 1024 && lr < 1024);
        let b = patch_index_to_coordinate(ul as u64, lr as u64, 32);
        let cell = 1.0 / 32.0;
        for (got, want) in b.iter().zip([x1, y1, x2, y2]) {
            prop_assert!((got - want).abs() <= cell, "{b:?} vs {:?}", [x1, y1, x2, y2]);
        }
        prop_assert!(b[0] <= b[2] && b[1] <= b[3]);
    }

    #[test]
    fn post_process_never_panics_on_arbitrary_strings(s in "\\PC{0,200}") {
        let _ = post_process_generation(&s, true);
        let _ = post_process_generation(&s, false);
    }

    #[test]
    fn post_process_never_panics_on_tag_soup(parts in prop::collection::vec(prop_oneof![
        Just("<phrase>".to_string()), Just("</phrase>".to_string()),
        Just("<object>".to_string()), Just("</object>".to_string()),
        Just("</delimiter_of_multi_objects/>".to_string()), Just("</image>".to_string()),
        Just("<grounding>".to_string()), Just("<".to_string()), Just(">".to_string()),
        Just("\n".to_string()), Just(" ".to_string()), Just("\u{3000}".to_string()),
        "<patch_index_[0-9\u{660}-\u{669}]{0,6}>",
        "[a-z \u{e9}\u{1F436}]{0,4}",
    ], 0..40)) {
        let text: String = parts.concat();
        if let Ok(g) = post_process_generation(&text, true) {
            for e in &g.entities {
                if let Some((s, t)) = e.byte_span {
                    prop_assert!(s <= t && t <= g.caption.len());
                    prop_assert!(g.caption.is_char_boundary(s) && g.caption.is_char_boundary(t));
                }
            }
        }
    }
}

/// Words, tags and whitespace for the encoding-stability properties.
fn prompt_words() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop_oneof![
            "[a-zA-Z]{1,8}",
            Just("<grounding>".to_string()),
            Just("<phrase>".to_string()),
            Just("</phrase>".to_string()),
            Just("café".to_string()),
        ],
        1..12,
    )
}

fn whitespace() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just(' '),
            Just('\t'),
            Just('\n'),
            Just('\u{3000}'),
            Just('\u{a0}')
        ],
        1..4,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encoding_is_stable_under_whitespace_rules(
        words in prompt_words(),
        seps in prop::collection::vec(whitespace(), 12),
        lead in whitespace(),
        trail in whitespace(),
    ) {
        let Some(p) = support::cached_processor("encoding_is_stable_under_whitespace_rules") else {
            return Ok(());
        };
        // Single spaces versus arbitrary runs of whitespace between words, plus outer
        // whitespace (stripped by the processor): WhitespaceSplit, lstrip on the tags and
        // `text.strip()` make the ids identical.
        let plain = words.join(" ");
        let mut noisy = lead.clone();
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                noisy.push_str(&seps[i]);
            }
            noisy.push_str(w);
        }
        noisy.push_str(&trail);
        let opts = ProcessOptions::default();
        let a = p.process(&[ProcessorInput::text(plain.clone())], &opts).unwrap();
        let b = p.process(&[ProcessorInput::text(noisy.clone())], &opts).unwrap();
        prop_assert_eq!(&a.input_ids, &b.input_ids, "{:?} vs {:?}", plain, noisy);
    }

    #[test]
    fn image_batches_are_rectangular(words in prop::collection::vec(prompt_words(), 1..4)) {
        let Some(p) = support::cached_processor("image_batches_are_rectangular") else {
            return Ok(());
        };
        let img = image::RgbImage::new(2, 2);
        let inputs: Vec<ProcessorInput> = words
            .iter()
            .map(|w| ProcessorInput::text(w.join(" ")).with_image(img.clone()))
            .collect();
        let out = p.process(&inputs, &ProcessOptions::default()).unwrap();
        let ids = out.input_ids_array().unwrap();
        let mask = out.image_embeds_position_mask_array().unwrap().unwrap();
        prop_assert_eq!(ids.dim(), mask.dim());
        for row in mask.rows() {
            prop_assert_eq!(row.iter().filter(|&&v| v == 1).count(), 64);
        }
    }
}
