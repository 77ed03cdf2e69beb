fn main() {
    let list = std::fs::read_to_string("/tmp/kp/jpg/list.txt").unwrap();
    let mut bad = 0;
    for name in list.lines() {
        let bytes = std::fs::read(format!("/tmp/kp/jpg/{name}")).unwrap();
        let want = std::fs::read(format!("/tmp/kp/jpg/{name}.rgb")).unwrap();
        match kosmos_processor::image::decode_rgb(&bytes, &Default::default()) {
            Ok(rgb) => {
                let n = rgb
                    .as_raw()
                    .iter()
                    .zip(want.iter())
                    .filter(|(a, b)| a != b)
                    .count();
                if n != 0 || rgb.as_raw().len() != want.len() {
                    bad += 1;
                    println!("{name}: {n} mismatches");
                }
            }
            Err(e) => {
                bad += 1;
                println!("{name}: error {e}");
            }
        }
    }
    println!("{} files, {bad} bad", list.lines().count());
}
