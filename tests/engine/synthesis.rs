//! Golden and end-to-end tests of scar synthesis: the schedule and one
//! RePaint step against the PyTorch reference (`tools/repaint_reference.py`,
//! fixture `tests/fixtures/synthesis/repaint_steps.safetensors`), the jump
//! time lists, and the volume pipeline on the phantom with a small random
//! model (`tests/fixtures/denoiser/unet2d_weights.safetensors`).

use claim::models::Denoiser;
use claim::nn::Tensor;
use claim::phantom::{self, PhantomParams};
use claim::rng::Rng;
use claim::synthesis::repaint::{repaint, BatchNoise, InpaintBatch, Progress, SamplerParams};
use claim::synthesis::{
    jump_schedule, measure_histogram, synthesize, Condition, JumpParams, Schedule, SynthesisParams,
    TIMESTEPS,
};
use claim::testing::{fixture_path, max_rel_error};
use claim::{Error, Image, LabelScheme, Volume};
use safetensors::{Dtype, SafeTensors};
use std::sync::OnceLock;

struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    fn load() -> Fixture {
        let path = fixture_path("synthesis/repaint_steps.safetensors");
        Fixture {
            bytes: std::fs::read(path).unwrap(),
        }
    }
    fn f32s(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let v = st.tensor(name).unwrap();
        assert_eq!(v.dtype(), Dtype::F32, "{name}");
        v.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
    fn i64s(&self, name: &str) -> Vec<i64> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let v = st.tensor(name).unwrap();
        assert_eq!(v.dtype(), Dtype::I64, "{name}");
        v.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}

fn model() -> &'static Denoiser {
    static MODEL: OnceLock<Denoiser> = OnceLock::new();
    MODEL.get_or_init(|| {
        Denoiser::from_file(&fixture_path("denoiser/unet2d_weights.safetensors")).unwrap()
    })
}

#[test]
fn schedule_matches_pytorch() {
    let fx = Fixture::load();
    let s = Schedule::cosine(TIMESTEPS).unwrap();
    for (name, ours) in [
        ("betas", &s.betas),
        ("alphas_cumprod", &s.alphas_cumprod),
        (
            "posterior_log_variance_clipped",
            &s.posterior_log_variance_clipped,
        ),
        ("posterior_mean_coef1", &s.posterior_mean_coef1),
        ("posterior_mean_coef2", &s.posterior_mean_coef2),
    ] {
        let want = fx.f32s(name);
        assert_eq!(ours.len(), want.len());
        for (t, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                "{name}[{t}]: {a} vs {b}"
            );
        }
    }
}

#[test]
fn jump_lists_match_the_reference() {
    let fx = Fixture::load();
    for (t, l, r) in [(10, 1, 1), (10, 2, 2), (12, 3, 3), (20, 5, 5)] {
        let ours = jump_schedule(JumpParams {
            t_start: t,
            jump_length: l,
            jump_n_sample: r,
        })
        .unwrap();
        assert_eq!(ours, fx.i64s(&format!("jump_{t}_{l}_{r}")), "{t}/{l}/{r}");
    }
    // Spec's counts of network evaluations at t_T = 300.
    for (l, r, want) in [(1, 1, 300), (2, 2, 598), (5, 5, 1480), (10, 10, 2910)] {
        let times = jump_schedule(JumpParams {
            t_start: 300,
            jump_length: l,
            jump_n_sample: r,
        })
        .unwrap();
        assert_eq!(times.windows(2).filter(|w| w[1] < w[0]).count(), want);
    }
}

/// One RePaint denoising step (re-noise the known region, evaluate the
/// network, ancestral step) with the reference's noise, at t = 137 and 0,
/// with and without guidance; and one jump back up.
#[test]
fn repaint_steps_match_pytorch() {
    let fx = Fixture::load();
    let s = Schedule::cosine(TIMESTEPS).unwrap();
    let shape = [2, 1, 1, 24, 24];
    let (x, gt, known, cond) = (
        fx.f32s("x"),
        fx.f32s("gt"),
        fx.f32s("known"),
        fx.f32s("cond"),
    );
    let cond_t = Tensor::from_vec(cond, &[2, 16]).unwrap();
    for (t, guidance, name) in [
        (137, 1.0, "step137"),
        (0, 1.0, "step0"),
        (137, 3.0, "step137_guided"),
    ] {
        let tensor = |name: &str| Tensor::from_vec(fx.f32s(name), &shape).unwrap();
        let xt = Tensor::from_vec(x.clone(), &shape)
            .unwrap()
            .known_blend(
                &Tensor::from_vec(gt.clone(), &shape).unwrap(),
                &Tensor::from_vec(known.clone(), &shape).unwrap(),
                &tensor("z_known"),
                s.known_blend(t).unwrap(),
            )
            .unwrap();
        let eps = model()
            .predict_noise_guided(&xt, &[t as f32; 2], &cond_t, guidance)
            .unwrap();
        let xs = xt
            .ancestral_step(&eps, &tensor("z_step"), s.ancestral_step(t).unwrap())
            .unwrap()
            .to_vec()
            .unwrap();
        let rel = max_rel_error(&xs, &fx.f32s(name));
        println!("{name}: relative error {rel:.2e}");
        assert!(rel < 1e-4, "{name}: {rel}");
    }
    let (a, b) = s.jump_up(137).unwrap();
    let up = Tensor::from_vec(x.clone(), &shape)
        .unwrap()
        .lincomb(a, &Tensor::from_vec(fx.f32s("z_up"), &shape).unwrap(), b)
        .unwrap()
        .to_vec()
        .unwrap();
    let rel = max_rel_error(&up, &fx.f32s("up137"));
    assert!(rel < 1e-6, "up137: {rel}");
}

fn small_phantom(seed: u64) -> (Image, Volume<i32>) {
    let case = phantom::generate(&PhantomParams {
        seed,
        with_scar: true,
        matrix_size: 48,
        slice_count: 6,
        pixel_spacing_mm: 3.0,
        slice_spacing_mm: 12.0,
        ..PhantomParams::default()
    })
    .unwrap();
    (Image::F32(case.image), case.labels)
}

fn quick_params(seed: u64) -> SynthesisParams {
    SynthesisParams {
        seed,
        jump: JumpParams {
            t_start: 12,
            jump_length: 2,
            jump_n_sample: 2,
        },
        crop_size: 24,
        batch_size: 2,
        labels: phantom::LABEL_SCHEME,
        ..SynthesisParams::default()
    }
}

#[test]
fn phantom_synthesis_changes_only_the_lesion() {
    let (image, labels) = small_phantom(5);
    let scheme = phantom::LABEL_SCHEME;
    let params = quick_params(9);
    let mut calls = Vec::new();
    let result = synthesize(model(), &image, &labels, &params, &mut |d, t| {
        calls.push((d, t));
        true
    })
    .unwrap();
    // t_T 12, L 2, R 2: jump points 0, 2, 4, 6, 8 (j + L < 12), each going
    // back up 2 steps once: 12 + 5 × 2 = 22 evaluations per batch.
    assert_eq!(claim::synthesis::evaluation_count(params.jump).unwrap(), 22);
    assert!(!result.slices.is_empty());
    assert_eq!(result.items, result.slices.len());
    assert_eq!(result.batches, result.items.div_ceil(2));
    let total = 22 * result.batches as u64;
    assert_eq!(result.network_evaluations, total);
    assert_eq!(calls.first(), Some(&(0, total)));
    assert_eq!(calls.last(), Some(&(total, total)));
    assert_eq!(calls.len() as u64, total + 1);

    let (Image::F32(before), Image::F32(after)) = (&image, &result.image) else {
        panic!("dtype changed")
    };
    let mut changed_lesion = 0;
    for ((a, b), l) in before.data.iter().zip(after.data.iter()).zip(&labels.data) {
        if scheme.is_lesion(*l) {
            changed_lesion += usize::from(a != b);
            assert!(b.is_finite());
        } else {
            assert_eq!(a.to_bits(), b.to_bits(), "voxel outside the lesion changed");
        }
    }
    assert!(changed_lesion > 0);

    // Same seed → same image; another seed → another image.
    let again = synthesize(model(), &image, &labels, &params, &mut |_, _| true).unwrap();
    assert_eq!(again.image, result.image);
    let other = synthesize(model(), &image, &labels, &quick_params(10), &mut |_, _| {
        true
    })
    .unwrap();
    assert_ne!(other.image, result.image);

    // Batching does not change the result (one noise stream per item).
    let single = SynthesisParams {
        batch_size: 1,
        ..params.clone()
    };
    let by_one = synthesize(model(), &image, &labels, &single, &mut |_, _| true).unwrap();
    let (Image::F32(a), Image::F32(b)) = (&by_one.image, &result.image) else {
        panic!()
    };
    let diff = a
        .data
        .iter()
        .zip(b.data.iter())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(diff < 1e-2, "batch size changed the result by {diff}");
}

#[test]
fn keep_network_output_replaces_the_window() {
    let (image, labels) = small_phantom(5);
    let params = SynthesisParams {
        keep_network_output: true,
        ..quick_params(9)
    };
    let result = synthesize(model(), &image, &labels, &params, &mut |_, _| true).unwrap();
    let (Image::F32(before), Image::F32(after)) = (&image, &result.image) else {
        panic!()
    };
    let scheme = phantom::LABEL_SCHEME;
    let changed_known = before
        .data
        .iter()
        .zip(after.data.iter())
        .zip(&labels.data)
        .filter(|((a, b), l)| !scheme.is_lesion(**l) && a != b)
        .count();
    assert!(changed_known > 100, "{changed_known}");
    // Slices without lesion stay untouched.
    for k in 0..labels.dims()[2] {
        if !result.slices.contains(&k) {
            let (sa, sb) = (
                before.data.index_axis(ndarray::Axis(0), k),
                after.data.index_axis(ndarray::Axis(0), k),
            );
            assert_eq!(sa, sb);
        }
    }
}

#[test]
fn defaults_report_1480_evaluations_and_cancel_stops() {
    let (image, labels) = small_phantom(5);
    let params = SynthesisParams {
        crop_size: 24,
        batch_size: 64,
        labels: phantom::LABEL_SCHEME,
        ..SynthesisParams::default()
    };
    assert_eq!(params.jump.t_start, 300);
    let mut seen = Vec::new();
    let err = synthesize(model(), &image, &labels, &params, &mut |d, t| {
        seen.push((d, t));
        d < 3
    })
    .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert_eq!(seen.last(), Some(&(3, 1480)), "one batch: 1480 evaluations");
    assert_eq!(seen.len(), 4);
}

#[test]
fn integer_images_stay_integer_and_untouched_outside() {
    let (image, labels) = small_phantom(6);
    let Image::F32(f) = &image else { panic!() };
    let ints = Image::I16(f.map(|v| v.round() as i16));
    let result = synthesize(model(), &ints, &labels, &quick_params(1), &mut |_, _| true).unwrap();
    let (Image::I16(a), Image::I16(b)) = (&ints, &result.image) else {
        panic!("dtype changed")
    };
    let scheme = phantom::LABEL_SCHEME;
    for ((x, y), l) in a.data.iter().zip(b.data.iter()).zip(&labels.data) {
        if !scheme.is_lesion(*l) {
            assert_eq!(x, y);
        }
    }
}

#[test]
fn two_threads_one_model_same_seed_same_image() {
    let (image, labels) = small_phantom(5);
    let params = quick_params(21);
    let results: Vec<Image> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    synthesize(model(), &image, &labels, &params, &mut |_, _| true)
                        .unwrap()
                        .image
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results[0], results[1]);
}

#[test]
fn bad_requests_are_refused_with_reasons() {
    let (image, labels) = small_phantom(5);
    let no_scar = labels.map(|l| if *l == 3 || *l == 4 { 2 } else { *l });
    let err = synthesize(model(), &image, &no_scar, &quick_params(1), &mut |_, _| {
        true
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("no scar"), "{err}");
    for (params, needle) in [
        (
            SynthesisParams {
                crop_size: 26,
                ..quick_params(1)
            },
            "crop_size",
        ),
        (
            SynthesisParams {
                condition: Condition::Values(vec![0.1; 32]),
                ..quick_params(1)
            },
            "expects 16",
        ),
        (
            SynthesisParams {
                jump: JumpParams {
                    t_start: 301,
                    ..JumpParams::default()
                },
                ..quick_params(1)
            },
            "t_start",
        ),
        (
            SynthesisParams {
                batch_size: 1025,
                ..quick_params(1)
            },
            "batch_size",
        ),
        (
            SynthesisParams {
                labels: LabelScheme::EMIDEC,
                ..quick_params(1)
            },
            "label scheme",
        ),
    ] {
        let err = synthesize(model(), &image, &labels, &params, &mut |_, _| true)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn measured_histogram_is_a_distribution_over_scar() {
    let (image, labels) = small_phantom(5);
    let h = measure_histogram(&image, &labels, &phantom::LABEL_SCHEME, 24).unwrap();
    assert_eq!(h.len(), 16);
    let sum: f32 = h.iter().sum();
    assert!((sum - 1.0).abs() < 1e-5, "{sum}");
    // Bright scar: most mass in the upper half.
    assert!(h[8..].iter().sum::<f32>() > 0.5, "{h:?}");
    // And it drives the sampler.
    let params = SynthesisParams {
        condition: Condition::Values(h),
        perturb_condition: false,
        ..quick_params(3)
    };
    synthesize(model(), &image, &labels, &params, &mut |_, _| true).unwrap();
}

/// The sampler's per-item noise streams: the same item gives the same
/// sample alone or in a batch with another.
#[test]
fn repaint_items_are_independent_of_their_batch() {
    let s = Schedule::cosine(TIMESTEPS).unwrap();
    let n = 24 * 24;
    let mut rng = Rng::new(4);
    let gt: Vec<f32> = (0..2 * n)
        .map(|_| rng.uniform() as f32 * 2.0 - 1.0)
        .collect();
    let known: Vec<f32> = (0..2 * n).map(|i| f32::from(i % 7 != 0)).collect();
    let cond = vec![1.0 / 16.0; 32];
    let params = SamplerParams {
        jump: JumpParams {
            t_start: 6,
            jump_length: 2,
            jump_n_sample: 2,
        },
        guidance: 1.0,
        ..SamplerParams::default()
    };
    let mut cb = |_: u64, _: u64| true;
    let mut progress = Progress::new(0, &mut cb);
    let both = repaint(
        model(),
        &s,
        &InpaintBatch {
            shape: [2, 1, 1, 24, 24],
            ground_truth: gt.clone(),
            known: known.clone(),
            conditions: Some(cond.clone()),
        },
        &params,
        &BatchNoise {
            seed: 9,
            items: vec![1, 2],
        },
        &mut progress,
    )
    .unwrap();
    let second = repaint(
        model(),
        &s,
        &InpaintBatch {
            shape: [1, 1, 1, 24, 24],
            ground_truth: gt[n..].to_vec(),
            known: known[n..].to_vec(),
            conditions: Some(cond[16..].to_vec()),
        },
        &params,
        &BatchNoise {
            seed: 9,
            items: vec![2],
        },
        &mut progress,
    )
    .unwrap();
    let rel = max_rel_error(&both[n..], &second);
    assert!(rel < 1e-4, "{rel}");
}

/// Times sampler steps of the full-size CLAIM network (dim 72, 72×72,
/// random weights shaped as `claim_state_dict.json`): one RePaint denoising
/// step (re-noise, one evaluation, ancestral step) at batch 1 and 4.
/// Prints only; run with `cargo test --release --test engine synthesis -- --ignored
/// --nocapture claim_size`.
#[test]
#[ignore = "timing of the 44.75 M-parameter network; run on demand"]
fn claim_size_repaint_step_timing() {
    use claim::nn::Weights;
    let text = std::fs::read_to_string(fixture_path("denoiser/claim_state_dict.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut rng = Rng::new(1);
    let named = json["keys"].as_array().unwrap().iter().map(|entry| {
        let key = entry[0].as_str().unwrap().to_string();
        let shape: Vec<usize> = entry[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let n: usize = shape.iter().product();
        let fan_in = shape
            .get(1..)
            .map_or(1, |s| s.iter().product::<usize>().max(1));
        let scale = (1.0 / fan_in as f64).sqrt();
        let values = (0..n).map(|_| (rng.normal() * scale) as f32).collect();
        (key, Tensor::from_vec(values, &shape).unwrap())
    });
    let weights = Weights::from_tensors(named.collect::<Vec<_>>()).unwrap();
    let model = Denoiser::load(&weights).unwrap();
    let s = Schedule::cosine(TIMESTEPS).unwrap();
    for batch in [1usize, 4] {
        let n = batch * 72 * 72;
        let gt = vec![0.1f32; n];
        let known: Vec<f32> = (0..n).map(|i| f32::from(i % 9 != 0)).collect();
        let params = SamplerParams {
            jump: JumpParams {
                t_start: 3,
                jump_length: 1,
                jump_n_sample: 1,
            },
            guidance: 1.0,
            ..SamplerParams::default()
        };
        let mut cb = |_: u64, _: u64| true;
        let mut progress = Progress::new(0, &mut cb);
        let noise = BatchNoise {
            seed: 1,
            items: (0..batch as u32).collect(),
        };
        let start = std::time::Instant::now();
        repaint(
            &model,
            &s,
            &InpaintBatch {
                shape: [batch, 1, 1, 72, 72],
                ground_truth: gt,
                known,
                conditions: Some(vec![1.0 / 16.0; 16 * batch]),
            },
            &params,
            &noise,
            &mut progress,
        )
        .unwrap();
        let per_step = start.elapsed().as_secs_f64() / 3.0;
        println!(
            "CLAIM size, batch {batch}: {:.1} ms per RePaint step ({:.1} ms per slice); 1480 steps ≈ {:.1} min per batch",
            per_step * 1e3,
            per_step * 1e3 / batch as f64,
            per_step * 1480.0 / 60.0
        );
    }
}

/// A 3-D (multi-frame), unconditional model: stacks of 4 consecutive
/// slices around the scar, preset condition replaced by the null one.
#[test]
fn three_d_unconditional_model_takes_slice_stacks() {
    let model =
        Denoiser::from_file(&fixture_path("denoiser/unet3d_uncond_weights.safetensors")).unwrap();
    let (image, labels) = small_phantom(5);
    let params = SynthesisParams {
        frames: 4,
        ..quick_params(2)
    };
    let mut last = (0, 0);
    let result = synthesize(&model, &image, &labels, &params, &mut |d, t| {
        last = (d, t);
        true
    })
    .unwrap();
    assert_eq!(
        last,
        (22 * result.batches as u64, 22 * result.batches as u64)
    );
    let scheme = phantom::LABEL_SCHEME;
    let (Image::F32(a), Image::F32(b)) = (&image, &result.image) else {
        panic!()
    };
    let mut changed = 0;
    for ((x, y), l) in a.data.iter().zip(b.data.iter()).zip(&labels.data) {
        if scheme.is_lesion(*l) {
            changed += usize::from(x != y);
        } else {
            assert_eq!(x.to_bits(), y.to_bits());
        }
    }
    assert!(changed > 0);
    // 6 slices, stacks of 4: at most two stacks cover any lesion.
    assert!((1..=2).contains(&result.items), "{}", result.items);
    let guided = SynthesisParams {
        guidance: 2.0,
        ..params
    };
    let e = synthesize(&model, &image, &labels, &guided, &mut |_, _| true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unconditional"), "{e}");
}
