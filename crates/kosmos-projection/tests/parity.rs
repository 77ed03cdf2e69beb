//! Parity of `ImageToTextProjection` with HF `Kosmos2ImageToTextProjection` on the committed
//! tiny-model fixtures (`tests/fixtures/models/<model>/`).
//!
//! Error metric (shared, `tests/common/mod.rs`): per tensor, `max|got − want| / max|want|`.
//! Tolerance 1e-4 in f32.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/common/model_fixtures.rs"]
mod model_fixtures;

use kosmos_projection::{Error, ImageToTextProjection, ProjectionConfig};
use kosmos_tensor::{DType, Device, Tensor, WeightStore};
use kosmos_vision::{Kosmos2VisionConfig, VisionForwardOptions, VisionModel};

const TOL: f64 = 1e-4;

use model_fixtures::{config_json, model_dir, reference, FIXTURE_MODELS as MODELS};

fn check(component: &str, got: &Tensor, want: &Tensor) -> f64 {
    model_fixtures::check(component, got, want, TOL)
}

/// The projection sizes, gathered from `Kosmos2Config` as HF does (defaults where absent).
fn projection_config(json: &serde_json::Value) -> ProjectionConfig {
    let d = ProjectionConfig::default();
    let get = |v: &serde_json::Value, default: usize| v.as_u64().map_or(default, |x| x as usize);
    ProjectionConfig {
        latent_query_num: get(&json["latent_query_num"], d.latent_query_num),
        vision_hidden_size: get(&json["vision_config"]["hidden_size"], d.vision_hidden_size),
        embed_dim: get(&json["text_config"]["embed_dim"], d.embed_dim),
        attention_heads: get(&json["text_config"]["attention_heads"], d.attention_heads),
    }
}

#[test]
fn projection_matches_hf_on_every_fixture_model() {
    for name in MODELS {
        let dir = model_dir(name);
        let cfg = projection_config(&config_json(&dir));
        let store = WeightStore::open(&dir.join("model.safetensors")).unwrap();
        let proj = ImageToTextProjection::load(&store, &cfg, DType::F32, &Device::Cpu).unwrap();
        let refs = WeightStore::open(&dir.join("reference.safetensors")).unwrap();
        // The projection alone, on HF's own input.
        let features = reference(&refs, "projection.input");
        let out = proj.forward(&features, true).unwrap();
        assert_eq!(out.image_embeds.dims()[1], cfg.latent_query_num);
        check(
            &format!("{name}/image_embeds (from projection.input)"),
            &out.image_embeds,
            &reference(&refs, "image_embeds"),
        );
        let attn = out.attentions.unwrap();
        let n = features.dims()[1];
        assert_eq!(
            attn.dims(),
            [
                features.dims()[0],
                cfg.attention_heads,
                cfg.latent_query_num,
                n + cfg.latent_query_num
            ]
        );
        check(
            &format!("{name}/projection_attentions"),
            &attn,
            &reference(&refs, "projection_attentions"),
        );
        let no_attn = proj.forward(&features, false).unwrap();
        assert!(no_attn.attentions.is_none());
    }
}

#[test]
fn pixels_to_image_embeds_matches_hf_on_every_fixture_model() {
    for name in MODELS {
        let dir = model_dir(name);
        let json = config_json(&dir);
        let vcfg: Kosmos2VisionConfig =
            serde_json::from_value(json["vision_config"].clone()).unwrap();
        let pcfg = projection_config(&json);
        let store = WeightStore::open(&dir.join("model.safetensors")).unwrap();
        let vision = VisionModel::load(&store, &vcfg, DType::F32, &Device::Cpu).unwrap();
        let proj = ImageToTextProjection::load(&store, &pcfg, DType::F32, &Device::Cpu).unwrap();
        for (file, interpolate) in [
            ("reference.safetensors", false),
            ("reference_interpolate.safetensors", true),
        ] {
            let path = dir.join(file);
            if interpolate && !path.is_file() {
                continue;
            }
            let refs = WeightStore::open(&path).unwrap();
            let pixels = reference(&refs, "pixel_values");
            let opts = VisionForwardOptions {
                interpolate_pos_encoding: interpolate,
                ..Default::default()
            };
            let out = vision.forward(&pixels, &opts).unwrap();
            let features = vision.image_features(&out.last_hidden_state).unwrap();
            let embeds = proj.forward(&features, false).unwrap().image_embeds;
            check(
                &format!("{name}/image_embeds (from pixels, {file})"),
                &embeds,
                &reference(&refs, "image_embeds"),
            );
        }
    }
}

#[test]
fn bad_features_are_typed_errors() {
    let dir = model_dir("tiny");
    let cfg = projection_config(&config_json(&dir));
    let store = WeightStore::open(&dir.join("model.safetensors")).unwrap();
    let proj = ImageToTextProjection::load(&store, &cfg, DType::F32, &Device::Cpu).unwrap();
    for shape in [
        vec![1, 5, cfg.vision_hidden_size + 1],
        vec![5, cfg.vision_hidden_size],
        vec![0, 5, cfg.vision_hidden_size],
    ] {
        let x = Tensor::zeros(&shape, DType::F32, &Device::Cpu).unwrap();
        assert!(
            matches!(proj.forward(&x, false), Err(Error::FeatureShape { .. })),
            "{shape:?}"
        );
    }
    // A config that disagrees with the file fails at load with the key's name.
    let wrong = ProjectionConfig {
        latent_query_num: cfg.latent_query_num + 1,
        ..cfg.clone()
    };
    let err = ImageToTextProjection::load(&store, &wrong, DType::F32, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("latent_query"), "{err}");
}

/// Machine epsilon of a reduced-precision dtype (2^-8 for bf16, 2^-11 for f16).
fn epsilon(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => 2f64.powi(-8),
        DType::F16 => 2f64.powi(-11),
        DType::F32 => f32::EPSILON as f64,
    }
}

/// bf16 / f16 projection weights on HF's f32 `projection.input`, and on that input rounded to the
/// same dtype, against the f32 `image_embeds`. Documented tolerance: 8 epsilons of the storage
/// dtype (bf16 3.1e-2, f16 3.9e-3) in the same max-relative metric.
#[test]
fn reduced_precision_tracks_the_f32_reference() {
    for name in MODELS {
        let dir = model_dir(name);
        let cfg = projection_config(&config_json(&dir));
        let store = WeightStore::open(&dir.join("model.safetensors")).unwrap();
        let refs = WeightStore::open(&dir.join("reference.safetensors")).unwrap();
        let features = reference(&refs, "projection.input");
        let want = reference(&refs, "image_embeds").to_vec_f32().unwrap();
        for dtype in [DType::BF16, DType::F16] {
            let tol = 8.0 * epsilon(dtype);
            let proj = ImageToTextProjection::load(&store, &cfg, dtype, &Device::Cpu).unwrap();
            for (label, x) in [
                ("f32 features", features.clone()),
                ("same-dtype features", features.to_dtype(dtype).unwrap()),
            ] {
                let got = proj.forward(&x, false).unwrap().image_embeds;
                let component = format!("{name}/image_embeds ({dtype:?} weights, {label})");
                let p = common::assert_parity(&component, &got.to_vec_f32().unwrap(), &want, tol);
                eprintln!("{component}: max_rel {:.3e} (tol {tol:.1e})", p.max_rel);
            }
        }
    }
}
