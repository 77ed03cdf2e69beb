use kosmos_processor::{ImageProcessor, PreprocessorConfig};
fn main() {
    let p = ImageProcessor::new(PreprocessorConfig::kosmos2());
    for name in [
        "astronaut.png",
        "camera.png",
        "chelsea.png",
        "coffee.png",
        "corgi.jpg",
        "grace_hopper.jpg",
        "man_ball.png",
        "rocket.jpg",
        "snowman.jpg",
        "snowman.png",
        "two_dogs.jpg",
    ] {
        let bytes = std::fs::read(format!("/work/shared/assets/images/{name}")).unwrap();
        let n = 15;
        let mut rgb = None;
        let mut dec = std::time::Duration::MAX;
        for _ in 0..n {
            let t = std::time::Instant::now();
            rgb = Some(kosmos_processor::image::decode_rgb(&bytes, &Default::default()).unwrap());
            dec = dec.min(t.elapsed());
        }
        let rgb = rgb.unwrap();
        let mut rs = std::time::Duration::MAX;
        for _ in 0..n {
            let t = std::time::Instant::now();
            std::hint::black_box(p.resize_and_crop(&rgb).unwrap());
            rs = rs.min(t.elapsed());
        }
        let mut all = std::time::Duration::MAX;
        for _ in 0..n {
            let t = std::time::Instant::now();
            std::hint::black_box(p.preprocess_rgb(&rgb).unwrap());
            all = all.min(t.elapsed());
        }
        println!("{name:18} decode {dec:>10.2?} resize {rs:>10.2?} resize+norm {all:>10.2?}");
    }
}
