//! Whole-network parameter gradients against PyTorch autograd: the fixtures
//! of `tools/grad_reference.py` (tests/fixtures/grad/) hold tiny denoisers
//! and PlainConvUNets, their inputs, and every parameter's gradient
//! computed in float64 from the same f32 weights. claim's f32 gradients
//! must match each parameter to a relative L2 error of 1e-4.

use claim::models::plain_unet::{PlainConvUNet, PlainUNetConfig};
use claim::models::{Denoiser, DenoiserConfig};
use claim::nn::{Tensor, Weights};
use claim::testing::{fixture_path, tensor_errors};

/// The fixture's weights (`w.` keys) as variables, except the rotary
/// frequencies (a fixed buffer upstream), and the fixture itself.
fn load(name: &str) -> (Weights, Vec<(String, Tensor)>) {
    let path = fixture_path("grad").join(format!("{name}.safetensors"));
    let fixture = Weights::load(&path).unwrap();
    let params = fixture
        .keys()
        .filter_map(|k| k.strip_prefix("w.").map(|s| (s.to_string(), k.to_string())))
        .map(|(key, full)| {
            let t = fixture.peek(&full).unwrap().clone();
            let t = if key.ends_with("rotary_emb.freqs") {
                t
            } else {
                t.variable()
            };
            (key, t)
        })
        .collect();
    (fixture, params)
}

/// Compares every parameter gradient with the fixture's `g.<key>`: the
/// largest absolute error relative to the larger of the parameter's own
/// largest gradient and 1e-3 of the network's largest. The floor matters
/// for gradients that are zero up to rounding: a conv bias right before an
/// instance norm (the norm removes it), or a relative-position bias over a
/// single frame (a softmax over one element).
fn compare(
    name: &str,
    fixture: &Weights,
    params: &[(String, Tensor)],
    grads: &claim::nn::Gradients,
) {
    let max_abs = |t: &Tensor| t.to_vec().unwrap().iter().fold(0f32, |m, v| m.max(v.abs()));
    let network_scale = params
        .iter()
        .filter_map(|(key, _)| fixture.peek(&format!("g.{key}")))
        .map(max_abs)
        .fold(0f32, f32::max);
    assert!(
        network_scale > 0.0,
        "{name}: the reference gradients are all zero"
    );
    let mut worst = (0f32, String::new());
    let mut checked = 0;
    for (key, p) in params {
        let Some(want) = fixture.peek(&format!("g.{key}")) else {
            assert!(
                !p.is_variable() || grads.get(p).is_none(),
                "{name}: {key} has a gradient PyTorch lacks"
            );
            continue;
        };
        let Some(got) = grads.get(p) else {
            // A parameter the loss does not reach (the position bias and the
            // query/key rows' only path with one frame) must have a zero
            // reference gradient.
            assert!(
                max_abs(want) <= 1e-6 * network_scale,
                "{name}: no gradient for {key}"
            );
            continue;
        };
        let (abs, _) = tensor_errors(got, want);
        let rel = abs / max_abs(want).max(1e-3 * network_scale);
        assert!(rel < 1e-4, "{name}: {key} relative error {rel:.3e}");
        if rel > worst.0 {
            worst = (rel, key.clone());
        }
        checked += 1;
    }
    println!(
        "{name}: {checked} parameter gradients, worst relative error {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(checked > 40, "{name}: only {checked} gradients compared");
}

fn denoiser_case(name: &str, channels: usize, cond_dim: usize) {
    let (fixture, params) = load(name);
    let config = DenoiserConfig {
        dim: 8,
        dim_mults: vec![1, 2],
        channels,
        cond_dim: Some(cond_dim),
        attn_heads: 2,
        attn_dim_head: 4,
        init_kernel_size: 7,
        resnet_groups: 2,
        use_sparse_linear_attn: true,
    };
    let weights = Weights::from_tensors(params.clone()).unwrap();
    let model = Denoiser::new(&weights.root(), &config).unwrap();
    let io = |k: &str| fixture.peek(k).unwrap().clone();
    let t = io("t").to_vec().unwrap();
    // Row 1 takes the learned null condition, as in classifier-free dropout.
    let cond = io("cond");
    let null = model.null_condition().unwrap();
    let rows = Tensor::cat(&[&cond.narrow(0, 0, 1).unwrap(), null], 0).unwrap();
    let out = model.predict_noise(&io("x"), &t, Some(&rows)).unwrap();
    let (_, rel) = tensor_errors(&out, &io("out"));
    assert!(rel < 1e-4, "{name}: forward relative error {rel}");
    let loss = out.masked_l1_loss(&io("noise"), &io("mask")).unwrap();
    let (l, want) = (loss.to_vec().unwrap()[0], io("loss").to_vec().unwrap()[0]);
    assert!(
        (l - want).abs() <= 1e-5 * want.abs(),
        "{name}: loss {l} vs {want}"
    );
    let grads = loss.backward().unwrap();
    compare(name, &fixture, &params, &grads);
}

#[test]
fn denoiser_2d_gradients_match_pytorch() {
    denoiser_case("denoiser_2d", 1, 16);
}

#[test]
fn denoiser_3d_two_channel_gradients_match_pytorch() {
    denoiser_case("denoiser_3d", 2, 32);
}

fn unet_case(name: &str, dims: usize) {
    let (fixture, params) = load(name);
    let cfg = PlainUNetConfig::standard(dims, 1, 3, vec![4, 8, 16]);
    let net = PlainConvUNet::from_state_dict(params.clone(), &cfg).unwrap();
    let x = fixture.peek("x").unwrap();
    let out = net.forward(x).unwrap();
    let (_, rel) = tensor_errors(&out, fixture.peek("out").unwrap());
    assert!(rel < 1e-4, "{name}: forward relative error {rel}");
    let grads = out.backward_with(fixture.peek("r").unwrap()).unwrap();
    compare(name, &fixture, &params, &grads);
}

#[test]
fn plain_unet_2d_gradients_match_pytorch() {
    unet_case("plain_unet_2d", 2);
}

#[test]
fn plain_unet_3d_gradients_match_pytorch() {
    unet_case("plain_unet_3d", 3);
}
