fn main() {
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
        let t = std::time::Instant::now();
        let rgb = kosmos_processor::image::decode_rgb(&bytes, &Default::default()).unwrap();
        let dt = t.elapsed();
        let want = std::fs::read(format!("/tmp/kp/{name}.rgb")).unwrap();
        let got = rgb.as_raw();
        let n = got.iter().zip(want.iter()).filter(|(a, b)| a != b).count();
        println!("{name} mismatches {n} (man_ball: alpha composited vs dropped) {dt:?}");
    }
}
