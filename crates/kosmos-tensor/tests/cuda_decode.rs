//! The decode-loop kernels on the GPU: input embedding (image insertion, √d scale, sinusoidal
//! positions) against the reference recipe, argmax / top-k against the CPU, sampling, the
//! device KV cache, and a decode chain captured in a CUDA graph replayed against direct launches.
#![cfg(feature = "cuda")]

#[path = "cuda_support/mod.rs"]
mod support;

use kosmos_tensor::cuda::{
    image_rows_from_mask, sinusoid_freqs, CudaBackend, CudaElement, DeviceKvCache, EmbeddingTable,
    HeadLayout, ImageInsert, TokenPositions,
};
use kosmos_tensor::{bf16, f16, ops, DType};
use support::*;

/// The reference embedding of one token (§4.1-4.2), rounded to `T`.
fn embed_ref<T: CudaElement>(
    row: &[f32],
    pos: Option<i64>,
    freqs: &[f32],
    scale: f32,
    padding_idx: i64,
) -> Vec<f32> {
    let dim = row.len();
    let half = dim / 2;
    (0..dim)
        .map(|d| {
            let mut e = T::from_f32(row[d]).to_f32() * scale;
            if let Some(p) = pos {
                let mut pe = 0f32;
                if p != padding_idx && d < 2 * half {
                    let j = if d < half { d } else { d - half };
                    let arg = p as f32 * freqs[j];
                    pe = if d < half {
                        (arg as f64).sin() as f32
                    } else {
                        (arg as f64).cos() as f32
                    };
                }
                e += pe;
            }
            T::from_f32(e).to_f32()
        })
        .collect()
}

fn check_embed<T: CudaElement>(be: &CudaBackend) {
    let (vocab, dim) = (50, 2048);
    let table = rand_vec(400, vocab * dim, 0.05);
    let ids = [0u32, 5, 1, 1, 49, 7, 3, 2];
    // Two rows of four tokens: positions from HF's rule with a left pad in row 1.
    let positions = [2i32, 3, 4, 5, 1, 2, 3, 4];
    let mask = [false, true, true, false, false, true, true, false];
    let image = rand_vec(401, 4 * dim, 1.0);
    let scale = (dim as f32).sqrt();
    let freqs = sinusoid_freqs(dim);

    let table_g = up::<T>(be, &table);
    let freqs_g = be.htod(&freqs).unwrap();
    let ids_g = be.upload_ids(&ids, vocab).unwrap();
    assert!(
        be.upload_ids(&[3, 50], vocab).is_err(),
        "out-of-range id accepted"
    );
    let image_g = up::<T>(be, &image);
    let rows_g = be.htod(&image_rows_from_mask(&mask, 4).unwrap()).unwrap();
    let pos_g = be.htod(&positions).unwrap();
    let t = EmbeddingTable {
        table: &table_g,
        vocab,
        dim,
        freqs: &freqs_g,
        scale,
        padding_idx: 1,
    };
    let mut out = poisoned::<T>(be, ids.len() * dim);
    let img = ImageInsert {
        embeds: &image_g,
        rows: 4,
        row_of_token: &rows_g,
    };
    be.embed_tokens(
        &t,
        &ids_g,
        ids.len(),
        Some(img),
        TokenPositions::PerToken(&pos_g),
        &mut out,
    )
    .unwrap();
    let mut want = Vec::new();
    let mut img_row = 0;
    for (i, &id) in ids.iter().enumerate() {
        let row: Vec<f32> = if mask[i] {
            img_row += 1;
            image[(img_row - 1) * dim..img_row * dim].to_vec()
        } else {
            table[id as usize * dim..(id as usize + 1) * dim].to_vec()
        };
        want.extend(embed_ref::<T>(
            &row,
            Some(positions[i] as i64),
            &freqs,
            scale,
            1,
        ));
    }
    let got = down(be, &out);
    assert_close::<T>("embed_tokens", &got, &want, 0.5);
    if T::DTYPE == DType::F32 {
        // Row 2 of the reference table (§4.2 check values) comes through unchanged when the
        // token row is zero: token 0 at position 2 minus its scaled embedding.
        let e0: Vec<f32> = (0..4).map(|d| got[d] - table[d] * scale).collect();
        for (g, w) in e0
            .iter()
            .zip([0.9092974f32, 0.91661066, 0.923_567_8, 0.930175])
        {
            assert!((g - w).abs() < 1e-5, "sinusoid {g} vs {w}");
        }
    }

    // Counter positions (decode in a graph): every token gets counter + 2; no image.
    let counter = be.htod(&[9i32]).unwrap();
    let mut out = poisoned::<T>(be, 2 * dim);
    be.embed_tokens(
        &t,
        &ids_g,
        2,
        None,
        TokenPositions::Counter {
            counter: &counter,
            add: 2,
        },
        &mut out,
    )
    .unwrap();
    let mut want = Vec::new();
    for &id in &ids[..2] {
        let row = &table[id as usize * dim..(id as usize + 1) * dim];
        want.extend(embed_ref::<T>(row, Some(11), &freqs, scale, 1));
    }
    assert_close::<T>("embed_tokens counter", &down(be, &out), &want, 0.5);
}

#[test]
fn embedding_follows_the_reference_recipe() {
    let Some(be) = backend("embedding_follows_the_reference_recipe") else {
        return;
    };
    check_embed::<f32>(&be);
    check_embed::<bf16>(&be);
    check_embed::<f16>(&be);
}

fn check_argmax_topk<T: CudaElement>(be: &CudaBackend) {
    let cols = 1000;
    let mut x = rand_vec(500, 6 * cols, 10.0);
    x[3] = 50.0; // row 0: tie between 3 and 700, first wins
    x[700] = 50.0;
    x[cols + 10] = f32::NAN; // row 1: NaN ranks first
    x[2 * cols..3 * cols].fill(-0.0); // row 2: -0.0 == +0.0, index 0
    x[2 * cols + 5] = 0.0;
    x[3 * cols..4 * cols].fill(f32::NEG_INFINITY); // row 3: all -inf -> 0
    x[4 * cols + 999] = f32::INFINITY;
    let xt = cpu(&x, &[6, cols], T::DTYPE);
    let xg = up::<T>(be, &x);
    let got = be.argmax_to_host(&xg, 6, cols).unwrap();
    assert_eq!(got, ops::argmax_last_dim(&xt).unwrap());
    assert_eq!(&got[..5], &[3, 10, 0, 0, 999]);

    for k in [1, 5, 64] {
        let got = be.top_k(&xg, 6, cols, k).unwrap();
        let want = ops::top_k_last_dim(&xt, k).unwrap();
        for (r, (g, w)) in got.iter().zip(&want).enumerate() {
            let gi: Vec<u32> = g.iter().map(|p| p.0).collect();
            let wi: Vec<u32> = w.iter().map(|p| p.0).collect();
            assert_eq!(gi, wi, "top-{k} indices of row {r}");
            for (a, b) in g.iter().zip(w) {
                assert!(a.1 == b.1 || (a.1.is_nan() && b.1.is_nan()), "row {r}");
            }
        }
    }
    assert!(be.top_k(&xg, 6, cols, 0).is_err());
    assert!(be.top_k(&xg, 6, cols, cols + 1).is_err());
}

#[test]
fn argmax_and_top_k_match_the_cpu() {
    let Some(be) = backend("argmax_and_top_k_match_the_cpu") else {
        return;
    };
    check_argmax_topk::<f32>(&be);
    check_argmax_topk::<bf16>(&be);
    check_argmax_topk::<f16>(&be);
}

#[test]
fn sampling_draws_from_the_truncated_distribution() {
    let Some(be) = backend("sampling_draws_from_the_truncated_distribution") else {
        return;
    };
    // N identical rows [2, 1, 0, -1, -9, ...] with draws on a uniform grid: the histogram is
    // the softmax of the top-k at temperature 0.5, up to grid granularity.
    let (rows, cols, k, temp) = (4000, 10, 3, 0.5f32);
    let base = [2.0f32, 1.0, 0.0, -1.0, -9.0, -9.0, -9.0, -9.0, -9.0, 5.0];
    let x: Vec<f32> = (0..rows).flat_map(|_| base).collect();
    let u: Vec<f32> = (0..rows).map(|i| (i as f32 + 0.5) / rows as f32).collect();
    let xg = up::<f32>(&be, &x);
    let ug = be.htod(&u).unwrap();
    let mut out = be.zeros::<u32>(rows).unwrap();
    be.sample_top_k(&xg, rows, cols, k, temp, 1.0, &ug, &mut out)
        .unwrap();
    let ids: Vec<u32> = be.dtoh(&out).unwrap();
    // Candidates in rank order: 9 (5.0), 0 (2.0), 1 (1.0).
    let logits = [5.0f64, 2.0, 1.0];
    let z: f64 = logits.iter().map(|l| (l / temp as f64).exp()).sum();
    for (cand, l) in [9u32, 0, 1].iter().zip(logits) {
        let share = ids.iter().filter(|&&i| i == *cand).count() as f64 / rows as f64;
        let p = (l / temp as f64).exp() / z;
        assert!(
            (share - p).abs() < 2.0 / rows as f64 + 1e-9,
            "id {cand}: {share} vs {p}"
        );
    }
    assert!(ids.iter().all(|i| [9, 0, 1].contains(i)));

    // top_p below the first probability keeps only the best; k = 1 is argmax.
    be.sample_top_k(&xg, rows, cols, k, temp, 1e-4, &ug, &mut out)
        .unwrap();
    assert!(be.dtoh(&out).unwrap().iter().all(|&i| i == 9));
    be.sample_top_k(&xg, rows, cols, 1, 1.0, 1.0, &ug, &mut out)
        .unwrap();
    assert!(be.dtoh(&out).unwrap().iter().all(|&i| i == 9));
    assert!(be
        .sample_top_k(&xg, rows, cols, k, 0.0, 1.0, &ug, &mut out)
        .is_err());
}

#[test]
fn kv_cache_appends_and_tracks_its_length() {
    let Some(be) = backend("kv_cache_appends_and_tracks_its_length") else {
        return;
    };
    let (layers, b, h, cap, d) = (2, 2, 3, 8, 4);
    let mut cache = DeviceKvCache::<f16>::new(&be, layers, b, h, cap, d).unwrap();
    let prompt = rand_vec(600, b * 5 * h * d, 1.0);
    let pg = up::<f16>(&be, &prompt);
    for l in 0..layers {
        cache
            .append(
                &be,
                l,
                (&pg, HeadLayout::bthd(h, 5, d)),
                (&pg, HeadLayout::bthd(h, 5, d)),
                5,
                false,
            )
            .unwrap();
    }
    cache.advance(&be, 5).unwrap();
    assert_eq!(cache.len(), 5);
    assert_eq!(be.dtoh(cache.len_device()).unwrap(), vec![5]);
    let step = rand_vec(601, b * h * d, 1.0);
    let sg = up::<f16>(&be, &step);
    cache
        .append(
            &be,
            1,
            (&sg, HeadLayout::bthd(h, 1, d)),
            (&sg, HeadLayout::bthd(h, 1, d)),
            1,
            true,
        )
        .unwrap();
    let (k1, _) = cache.layer(1).unwrap();
    let got = down(&be, k1);
    for bi in 0..b {
        for hi in 0..h {
            for e in 0..d {
                let g = got[((bi * h + hi) * cap + 5) * d + e];
                let w = f16::from_f32(step[(bi * h + hi) * d + e]).to_f32();
                assert_eq!(g, w);
            }
        }
    }
    assert!(cache.advance(&be, cap).is_err(), "overflow accepted");
    assert!(cache.layer(layers).is_err());
}

#[test]
fn captured_decode_chain_replays_like_direct_launches() {
    let Some(be) = backend("captured_decode_chain_replays_like_direct_launches") else {
        return;
    };
    // A miniature decode step: embed(last ids, position counter + 2) -> layer norm -> argmax
    // -> ids, then counter += 1. Replayed from a graph and launched directly, from the same
    // start; ids, counter and hidden states must agree exactly.
    let (vocab, dim, batch, steps) = (64, 64, 3, 5i32);
    let table = rand_vec(700, vocab * dim, 1.0);
    let (w, bias) = (rand_vec(701, dim, 1.0), rand_vec(702, dim, 0.2));
    let freqs = sinusoid_freqs(dim);
    let (tg, fg) = (up::<bf16>(&be, &table), be.htod(&freqs).unwrap());
    let (wg, bg) = (up::<bf16>(&be, &w), up::<bf16>(&be, &bias));
    let table_ref = EmbeddingTable {
        table: &tg,
        vocab,
        dim,
        freqs: &fg,
        scale: 8.0,
        padding_idx: 1,
    };
    let run = |graph: bool| -> (Vec<u32>, Vec<i32>, Vec<f32>) {
        let mut ids = be.htod(&[3u32, 17, 60]).unwrap();
        let mut counter = be.htod(&[4i32]).unwrap();
        let mut x = be.zeros::<bf16>(batch * dim).unwrap();
        let mut y = be.zeros::<bf16>(batch * dim).unwrap();
        let step = |be: &CudaBackend,
                    ids: &mut kosmos_tensor::cuda::CudaSlice<u32>,
                    counter: &mut kosmos_tensor::cuda::CudaSlice<i32>,
                    x: &mut kosmos_tensor::cuda::CudaSlice<bf16>,
                    y: &mut kosmos_tensor::cuda::CudaSlice<bf16>| {
            let pos = TokenPositions::Counter {
                counter: &*counter,
                add: 2,
            };
            be.embed_tokens(&table_ref, &*ids, batch, None, pos, x)?;
            be.layer_norm(&*x, &wg, &bg, y, batch, dim, 1e-5)?;
            be.argmax(&*y, batch, dim, ids)?;
            be.counter_add(counter, 1)
        };
        if graph {
            let g = be
                .capture(|be| step(be, &mut ids, &mut counter, &mut x, &mut y))
                .unwrap();
            for _ in 0..steps {
                g.launch().unwrap();
            }
        } else {
            for _ in 0..steps {
                step(&be, &mut ids, &mut counter, &mut x, &mut y).unwrap();
            }
        }
        (
            be.dtoh(&ids).unwrap(),
            be.dtoh(&counter).unwrap(),
            down(&be, &y),
        )
    };
    let direct = run(false);
    let replayed = run(true);
    assert_eq!(direct.1, vec![4 + steps]);
    assert_eq!(replayed, direct);
}
