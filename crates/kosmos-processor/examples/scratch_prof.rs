fn main() {
    let name = std::env::args().nth(1).unwrap_or("corgi.jpg".into());
    let mode = std::env::args().nth(2).unwrap_or("all".into());
    let iters: usize = std::env::args()
        .nth(3)
        .map(|s| s.parse().unwrap())
        .unwrap_or(20);
    let bytes = std::fs::read(format!("/work/shared/assets/images/{name}")).unwrap();
    let p = kosmos_processor::ImageProcessor::new(Default::default());
    let rgb = kosmos_processor::image::decode_rgb(&bytes, &Default::default()).unwrap();
    for _ in 0..iters {
        match mode.as_str() {
            "decode" => {
                std::hint::black_box(
                    kosmos_processor::image::decode_rgb(&bytes, &Default::default()).unwrap(),
                );
            }
            "resize" => {
                std::hint::black_box(p.preprocess_rgb(&rgb).unwrap());
            }
            _ => {
                let rgb = kosmos_processor::image::decode_rgb(&bytes, &Default::default()).unwrap();
                std::hint::black_box(p.preprocess_rgb(&rgb).unwrap());
            }
        }
    }
}
