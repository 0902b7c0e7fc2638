//! Golden tests of the 3-D convolutions against PyTorch
//! (`tools/conv3d_reference.py`, fixture `tests/fixtures/ops/conv3d.safetensors`).

use claim::nn::{Conv3dParams, Tensor, Weights};
use claim::testing::{fixture_path, tensor_errors};
use std::time::Instant;

fn fixture() -> Weights {
    Weights::load(&fixture_path("ops/conv3d.safetensors")).unwrap()
}

/// Three integers stored as an f32 tensor.
fn triple(t: &Tensor) -> (usize, usize, usize) {
    let v = t.to_vec().unwrap();
    assert_eq!(v.len(), 3);
    (v[0] as usize, v[1] as usize, v[2] as usize)
}

/// Runs every case whose name starts with `prefix`; returns how many ran.
fn check_cases(prefix: &str) -> usize {
    let io = fixture();
    let mut names: Vec<&str> = io
        .keys()
        .filter_map(|k| k.strip_suffix(".out"))
        .filter(|k| k.starts_with(prefix))
        .collect();
    names.sort_unstable();
    for name in &names {
        let get = |what: &str| io.peek(&format!("{name}.{what}"));
        let (x, weight) = (get("x").unwrap(), get("weight").unwrap());
        let p = Conv3dParams {
            stride: triple(get("stride").unwrap()),
            pad: triple(get("pad").unwrap()),
        };
        let out = if prefix.starts_with("conv_transpose3d") {
            x.conv_transpose3d(weight, get("bias"), p)
        } else {
            x.conv3d(weight, get("bias"), p)
        }
        .unwrap();
        let (abs, rel) = tensor_errors(&out, get("out").unwrap());
        println!("{name}: max abs {abs:.2e}, rel {rel:.2e}");
        assert!(rel < 1e-5, "{name}: relative error {rel}");
    }
    names.len()
}

#[test]
fn conv3d_matches_pytorch() {
    // 3x3x3 at strides 1, (1,2,2), 2 and on Winograd-sized frames; 1x3x3 at
    // strides 1 and (1,2,2); 1x1x1 with and without bias; an uneven kernel.
    assert_eq!(check_cases("conv3d_"), 9);
}

#[test]
fn conv_transpose3d_matches_pytorch() {
    // kernel = stride (2,2,2) and (1,2,2), and k 3, stride 2, pad 1.
    assert_eq!(check_cases("conv_transpose3d_"), 3);
}

/// Seeded values in [-1, 1) without the library's RNG.
fn pseudo_random(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    let data = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as f32 / 2_147_483_648.0 - 1.0
        })
        .collect();
    Tensor::from_vec(data, shape).unwrap()
}

/// Timing of an nnU-Net-like 3D stage, for comparison with
/// `python tools/conv3d_reference.py --time --threads N`. Run with
/// `RAYON_NUM_THREADS=N cargo test --release --test engine conv3d_golden --
/// --ignored --nocapture`.
#[test]
#[ignore = "timing; run in release with --nocapture"]
fn nnunet_stage_timing() {
    let x = pseudo_random(&[1, 32, 32, 64, 64], 1);
    let w = pseudo_random(&[32, 32, 3, 3, 3], 2);
    let b = pseudo_random(&[32], 3);
    let xt = pseudo_random(&[1, 64, 16, 32, 32], 4);
    let wt = pseudo_random(&[64, 32, 2, 2, 2], 5);
    let best = |f: &dyn Fn() -> Tensor, reps: usize| {
        let out = f();
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t0 = Instant::now();
            f();
            best = best.min(t0.elapsed().as_secs_f64());
        }
        (best, out)
    };
    let (conv, out) = best(
        &|| x.conv3d(&w, Some(&b), Conv3dParams::new(1, 1)).unwrap(),
        5,
    );
    assert_eq!(out.dims(), &[1, 32, 32, 64, 64]);
    let (up, out) = best(
        &|| {
            xt.conv_transpose3d(&wt, Some(&b), Conv3dParams::new(2, 0))
                .unwrap()
        },
        5,
    );
    assert_eq!(out.dims(), &[1, 32, 32, 64, 64]);
    println!("{} rayon threads, best of 5:", rayon::current_num_threads());
    println!(
        "  conv3d [1,32,32,64,64] 3x3x3 32->32 pad 1: {:.1} ms",
        conv * 1e3
    );
    println!(
        "  conv_transpose3d [1,64,16,32,32] k=s=2 64->32: {:.1} ms",
        up * 1e3
    );
}
