//! Two-channel (scar + MVO) 3-D synthesis, LeFusion-EMIDEC's layout: a
//! full RePaint run against the PyTorch reference of upstream's composition
//! (`tools/twochan_reference.py`, fixtures
//! `tests/fixtures/synthesis/twochan_{lefusion.pt,repaint.safetensors}`),
//! the phantom (only lesion voxels change; MVO from channel 1, scar from
//! channel 0), 3-D windows, measured per-channel histograms, and the
//! errors that name what is wrong.

use claim::io::torch::{read_torch_file, state_dict_tensors};
use claim::models::Denoiser;
use claim::nn::{Tensor, Weights};
use claim::phantom::{self, PhantomParams};
use claim::synthesis::{
    measure_channel_histograms, synthesize, ChannelHistogram, Condition, JumpParams, Layout,
    SynthesisParams,
};
use claim::testing::{fixture_path, max_rel_error};
use claim::{Image, LabelScheme, Volume};
use safetensors::SafeTensors;
use std::sync::OnceLock;

/// The `model` (or `ema`) weights of the trainer checkpoint, with
/// `edit` applied to the named tensors first.
fn checkpoint_model(part: &str, edit: impl Fn(&str, Tensor) -> Tensor) -> Denoiser {
    let ckpt = read_torch_file(&fixture_path("synthesis/twochan_lefusion.pt")).unwrap();
    let sd = state_dict_tensors(ckpt.get(part).unwrap()).unwrap();
    let sd = sd.into_iter().map(|(k, t)| {
        let t = edit(&k, t);
        (k, t)
    });
    Denoiser::load(&Weights::from_tensors(sd).unwrap()).unwrap()
}

fn model() -> &'static Denoiser {
    static MODEL: OnceLock<Denoiser> = OnceLock::new();
    MODEL.get_or_init(|| checkpoint_model("model", |_, t| t))
}

/// A model whose channels cannot be confused: the last convolution
/// predicts ε = −1000 on channel 0 and +1000 on channel 1, so the clipped
/// x̂₀ — and the final sample — is +1 (the window's maximum) on channel 0
/// and −1 (its minimum) on channel 1, whatever the input.
fn distinguishable_model() -> &'static Denoiser {
    static MODEL: OnceLock<Denoiser> = OnceLock::new();
    MODEL.get_or_init(|| {
        checkpoint_model("model", |k, t| {
            if k.ends_with("final_conv.1.weight") {
                Tensor::zeros(t.dims()).unwrap()
            } else if k.ends_with("final_conv.1.bias") {
                Tensor::from_vec(vec![-1000.0, 1000.0], &[2]).unwrap()
            } else {
                t
            }
        })
    })
}

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn i64s(st: &SafeTensors, name: &str) -> Vec<i64> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn checkpoint_is_a_two_channel_conditional_model() {
    let cfg = model().config();
    assert_eq!((cfg.channels, cfg.cond_dim, cfg.dim), (2, Some(32), 8));
    let layout = Layout::resolve(cfg, &SynthesisParams::default()).unwrap();
    assert_eq!(layout.channel_labels, vec![3, 4]);
    assert_eq!(layout.frames, 10);
}

/// One full RePaint run (t_T 300, L 20, R 2: 580 network evaluations) of
/// the two-channel model on a 16 × 16 × 3 case with F = 4 (one padding
/// frame first), against PyTorch with the same counter-based noise:
/// whole-window output (`keep_network_output`) and the default lesion-only
/// paste.
#[test]
fn two_channel_repaint_matches_pytorch_composition() {
    let bytes = std::fs::read(fixture_path("synthesis/twochan_repaint.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let dims = [16, 16, 3];
    let geometry = claim::volume::Geometry::default();
    let image = Image::F32(Volume::from_vec(dims, f32s(&st, "image"), geometry).unwrap());
    let labels = Volume::from_vec(
        dims,
        f32s(&st, "labels").iter().map(|v| *v as i32).collect(),
        geometry,
    )
    .unwrap();
    let jump = i64s(&st, "jump");
    let params = SynthesisParams {
        seed: i64s(&st, "seed")[0] as u64,
        jump: JumpParams {
            t_start: jump[0] as usize,
            jump_length: jump[1] as usize,
            jump_n_sample: jump[2] as usize,
        },
        condition: Condition::Values(f32s(&st, "cond")),
        perturb_condition: false,
        batch_size: 1,
        crop_size: 16,
        frames: i64s(&st, "frames")[0] as usize,
        keep_network_output: true,
        labels: LabelScheme::EMIDEC,
        ..SynthesisParams::default()
    };
    let mut last = (0, 0);
    let result = synthesize(model(), &image, &labels, &params, &mut |d, t| {
        last = (d, t);
        true
    })
    .unwrap();
    assert_eq!(last, (580, 580));
    assert_eq!(result.items, 1);
    assert_eq!(result.layout.frames, 4);
    assert!(result.warnings.is_empty(), "{:?}", result.warnings);
    let Image::F32(got) = &result.image else {
        panic!("dtype changed")
    };
    let got = got.as_slice().unwrap();
    let want = f32s(&st, "expected");
    let rel = max_rel_error(got, &want);
    println!("two-channel RePaint, 580 evaluations: max relative error {rel:.2e}");
    assert!(rel <= 1e-4, "{rel}");

    // The fixture tells the channels apart: swapping the map (scar from
    // channel 1, MVO from channel 0) misses the reference.
    let swapped = SynthesisParams {
        channel_labels: vec![4, 3],
        ..params.clone()
    };
    let result = synthesize(model(), &image, &labels, &swapped, &mut |_, _| true).unwrap();
    let Image::F32(other) = &result.image else {
        panic!()
    };
    let off = max_rel_error(other.as_slice().unwrap(), &want);
    assert!(off > 1e-2, "swapped channels: {off}");

    // The default paste: lesion voxels as PyTorch's, the rest bit-identical.
    let lesion_only = SynthesisParams {
        keep_network_output: false,
        ..params
    };
    let result = synthesize(model(), &image, &labels, &lesion_only, &mut |_, _| true).unwrap();
    let (Image::F32(before), Image::F32(after)) = (&image, &result.image) else {
        panic!()
    };
    let (before, after) = (before.as_slice().unwrap(), after.as_slice().unwrap());
    let (mut lesion_got, mut lesion_want) = (Vec::new(), Vec::new());
    for (p, l) in labels.data.iter().enumerate() {
        if *l == 3 || *l == 4 {
            lesion_got.push(after[p]);
            lesion_want.push(want[p]);
        } else {
            assert_eq!(after[p].to_bits(), before[p].to_bits(), "voxel #{p}");
        }
    }
    assert!(lesion_got.len() > 20);
    assert!(max_rel_error(&lesion_got, &lesion_want) <= 1e-4);
}

/// The phantom with an MVO core: every scar voxel with (i + j) % 3 == 0
/// becomes MVO when the phantom has none.
fn phantom_with_mvo(slices: usize) -> (Image, Volume<i32>) {
    let case = phantom::generate(&PhantomParams {
        seed: 5,
        with_scar: true,
        matrix_size: 48,
        slice_count: slices,
        pixel_spacing_mm: 3.0,
        slice_spacing_mm: 12.0,
        ..PhantomParams::default()
    })
    .unwrap();
    let mut labels = case.labels;
    let scheme = phantom::LABEL_SCHEME;
    if !labels.data.iter().any(|l| *l == scheme.mvo) {
        for ((_, j, i), l) in labels.data.indexed_iter_mut() {
            if *l == scheme.scar && (i + j) % 3 == 0 {
                *l = scheme.mvo;
            }
        }
    }
    (Image::F32(case.image), labels)
}

fn quick(frames: usize) -> SynthesisParams {
    SynthesisParams {
        seed: 3,
        jump: JumpParams {
            t_start: 12,
            jump_length: 2,
            jump_n_sample: 2,
        },
        crop_size: 24,
        batch_size: 2,
        frames,
        labels: phantom::LABEL_SCHEME,
        ..SynthesisParams::default()
    }
}

/// Counts lesion voxels that changed and asserts every other voxel kept
/// its bits.
fn changed_lesion_voxels(before: &Image, after: &Image, labels: &Volume<i32>) -> usize {
    let (Image::F32(a), Image::F32(b)) = (before, after) else {
        panic!("dtype changed")
    };
    let scheme = phantom::LABEL_SCHEME;
    let mut changed = 0;
    for ((x, y), l) in a.data.iter().zip(b.data.iter()).zip(&labels.data) {
        if scheme.is_lesion(*l) {
            assert!(y.is_finite());
            changed += usize::from(x.to_bits() != y.to_bits());
        } else {
            assert_eq!(
                x.to_bits(),
                y.to_bits(),
                "a voxel outside the lesion changed"
            );
        }
    }
    changed
}

#[test]
fn phantom_changes_only_scar_and_mvo_voxels() {
    // Default frames (10) on a 6-slice phantom: one zero-padded window.
    let (image, labels) = phantom_with_mvo(6);
    let params = quick(0);
    let result = synthesize(model(), &image, &labels, &params, &mut |_, _| true).unwrap();
    assert_eq!((result.items, result.layout.frames), (1, 10));
    assert!(result.warnings.is_empty(), "{:?}", result.warnings);
    assert!(changed_lesion_voxels(&image, &result.image, &labels) > 0);
    let again = synthesize(model(), &image, &labels, &params, &mut |_, _| true).unwrap();
    assert_eq!(again.image, result.image, "same seed, same image");

    // Two frames on 6 slices: overlapping windows, blended inside the
    // lesion; still nothing else changes.
    let result = synthesize(model(), &image, &labels, &quick(2), &mut |_, _| true).unwrap();
    let span = result.slices.last().unwrap() - result.slices.first().unwrap() + 1;
    assert!(span > 2, "the phantom's lesion spans {span} slices");
    assert_eq!(result.items, (span - 2).div_ceil(1) + 1);
    assert!(changed_lesion_voxels(&image, &result.image, &labels) > 0);
}

/// Scar voxels take channel 0 (→ the window's maximum with the
/// distinguishable model), MVO voxels channel 1 (→ its minimum); swapping
/// the channel map swaps them.
#[test]
fn mvo_comes_from_channel_one_and_scar_from_channel_zero() {
    let (image, labels) = phantom_with_mvo(6);
    let Image::F32(values) = &image else { panic!() };
    let (lo, hi) = values
        .data
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let scheme = phantom::LABEL_SCHEME;
    for (map, scar_value, mvo_value) in [(vec![], hi, lo), (vec![4, 3], lo, hi)] {
        let params = SynthesisParams {
            channel_labels: map.clone(),
            ..quick(0)
        };
        let result = synthesize(
            distinguishable_model(),
            &image,
            &labels,
            &params,
            &mut |_, _| true,
        )
        .unwrap();
        let Image::F32(out) = &result.image else {
            panic!()
        };
        let (mut scar, mut mvo) = (0, 0);
        for (v, l) in out.data.iter().zip(&labels.data) {
            let tol = 1e-4 * (hi - lo);
            if *l == scheme.scar {
                assert!((v - scar_value).abs() <= tol, "map {map:?}: scar {v}");
                scar += 1;
            } else if *l == scheme.mvo {
                assert!((v - mvo_value).abs() <= tol, "map {map:?}: MVO {v}");
                mvo += 1;
            }
        }
        assert!(scar > 0 && mvo > 0, "{scar} scar, {mvo} MVO voxels");
    }
}

#[test]
fn errors_name_what_is_wrong() {
    let (image, labels) = phantom_with_mvo(6);
    let run = |model: &Denoiser, params: SynthesisParams| {
        synthesize(model, &image, &labels, &params, &mut |_, _| true)
            .unwrap_err()
            .to_string()
    };
    for (params, needle) in [
        (
            SynthesisParams {
                channel_labels: vec![3],
                ..quick(0)
            },
            "the channel↔label map names 1 label(s) [3], but the model has 2 channel(s)",
        ),
        (
            SynthesisParams {
                channel_labels: vec![3, 2],
                ..quick(0)
            },
            "channel 1 of the channel↔label map is label 2",
        ),
        (
            SynthesisParams {
                condition: Condition::Values(vec![0.0625; 16]),
                ..quick(0)
            },
            "histogram condition has 16 values, the model expects 32 (2 channel(s), 16 per \
             channel)",
        ),
        (
            SynthesisParams {
                condition: Condition::Channels(vec![ChannelHistogram::Preset]),
                ..quick(0)
            },
            "1 histogram(s) given, the model has 2 channel(s)",
        ),
        (
            SynthesisParams {
                condition: Condition::Channels(vec![
                    ChannelHistogram::Preset,
                    ChannelHistogram::Values(vec![0.1; 10]),
                ]),
                ..quick(0)
            },
            "histogram of channel 1 has 10 values, expected 16",
        ),
    ] {
        let e = run(model(), params);
        assert!(e.contains(needle), "{needle}\n{e}");
    }

    // A one-channel model given MVO labels paints them with its channel, as
    // scar, and says so.
    let one = Denoiser::from_file(&fixture_path("denoiser/unet2d_weights.safetensors")).unwrap();
    let result = synthesize(&one, &image, &labels, &quick(0), &mut |_, _| true).unwrap();
    assert_eq!(result.layout.channel_labels, vec![3]);
    let n_mvo = labels.data.iter().filter(|l| **l == 4).count();
    assert_eq!(
        result.warnings,
        vec![format!(
            "{n_mvo} MVO voxel(s) (label 4) are painted by channel 0 (label 3): the model has no \
             MVO channel"
        )]
    );
    assert!(changed_lesion_voxels(&image, &result.image, &labels) > 0);
    let e = run(
        &one,
        SynthesisParams {
            channel_labels: vec![3, 4],
            ..quick(0)
        },
    );
    assert!(e.contains("but the model has 1 channel(s)"), "{e}");
}

#[test]
fn measured_histograms_condition_each_channel() {
    let (image, labels) = phantom_with_mvo(6);
    let params = quick(0);
    let layout = Layout::resolve(model().config(), &params).unwrap();
    let h = measure_channel_histograms(&image, &labels, &params.labels, &layout, 24).unwrap();
    assert_eq!(h.len(), 32);
    for (c, half) in h.chunks(16).enumerate() {
        let sum: f32 = half.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "channel {c}: {sum}");
    }
    // Without MVO the MVO channel's histogram is zeros (upstream's rule).
    let no_mvo = labels.map(|l| if *l == 4 { 3 } else { *l });
    let h0 = measure_channel_histograms(&image, &no_mvo, &params.labels, &layout, 24).unwrap();
    assert!(h0[16..].iter().all(|v| *v == 0.0));
    // And the measured values drive the sampler.
    let measured = SynthesisParams {
        condition: Condition::Values(h),
        ..params
    };
    synthesize(model(), &image, &labels, &measured, &mut |_, _| true).unwrap();
    // A reference without any lesion is refused.
    let plain = labels.map(|l| if *l == 3 || *l == 4 { 2 } else { *l });
    let e = measure_channel_histograms(&image, &plain, &measured.labels, &layout, 24)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no voxel of the channels' labels [3, 4]"), "{e}");
}
