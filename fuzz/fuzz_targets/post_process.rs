//! Grounding post-processing on arbitrary text: must never panic, and the spans it
//! reports must be consistent.
#![no_main]

use kosmos_processor::post_process_generation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = post_process_generation(&text, false);
    if let Ok(g) = post_process_generation(&text, true) {
        for e in &g.entities {
            if let Some((s, t)) = e.byte_span {
                assert!(s <= t && t <= g.caption.len());
                assert!(g.caption.is_char_boundary(s) && g.caption.is_char_boundary(t));
            }
            for b in &e.boxes {
                assert!(b.iter().all(|v| v.is_finite()));
            }
        }
        // HF's tuple form must round-trip.
        let json = serde_json::to_string(&g).expect("serialise");
        let back: kosmos_processor::Grounded = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, g);
    }
});
