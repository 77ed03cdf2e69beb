//! `bandwidth`: the DRAM read-bandwidth probe behind the decode floors.

use super::*;

/// Sums a slice with 8 independent accumulators (vectorises without fast-math: integer adds).
fn sum_u64(xs: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(x);
        }
    }
    let t: u64 = tail.iter().fold(0, |a, &x| a.wrapping_add(x));
    acc.iter().fold(t, |a, &x| a.wrapping_add(x))
}

/// DRAM read bandwidth: a `gb`-GB buffer summed by `threads` threads, `reps` times.
pub(super) fn bandwidth(args: &Args) -> Res<()> {
    let gb = args.num("gb", 2)?;
    let threads = args.num("threads", 2)?.max(1);
    let reps = args.num("reps", 5)?.max(1);
    let n = gb * (1 << 30) / 8;
    let buf: Vec<u64> = (0..n as u64).collect();
    let chunk = n.div_ceil(threads);
    let mut rates = Vec::with_capacity(reps);
    let mut check = 0u64;
    for _ in 0..reps {
        let t = Instant::now();
        let sum = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(chunk)
                .map(|part| s.spawn(move || sum_u64(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        let secs = t.elapsed().as_secs_f64();
        check = check.wrapping_add(sum);
        rates.push((n * 8) as f64 / secs / 1e9);
    }
    std::hint::black_box(check);
    rates.sort_by(f64::total_cmp);
    println!(
        "RESULT\tread_gb_s_median={:.2} read_gb_s_best={:.2} read_gb_s_worst={:.2} gb={gb} threads={threads} reps={reps}",
        rates[rates.len() / 2],
        rates[rates.len() - 1],
        rates[0]
    );
    Ok(())
}
