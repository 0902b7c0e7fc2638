//! Helpers shared by unit tests, integration tests and benches: test-data
//! discovery, comparisons, seeded random data, and the op harness
//! ([`op_harness`]) that checks every op of every device against the CPU.
//! Plain library code (not `#[cfg(test)]`) so that every test binary, the
//! GPU parity binaries included, can use it.

pub mod op_harness;

use crate::nn::Tensor;
use crate::rng::Rng;
use crate::Volume;
use std::path::PathBuf;

/// Where the AHA-17 atlas (`AHA17_model_ED.nii.gz`) lives: `$CLAIM_ATLAS_DIR`,
/// else `../shared/data/aha-template` beside the crate. `None` when absent —
/// callers then skip and say so — unless `CLAIM_REQUIRE_ATLAS=1` (set by CI),
/// which turns a missing atlas into a test failure.
pub fn atlas_dir() -> Option<PathBuf> {
    let candidates = std::env::var_os("CLAIM_ATLAS_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::iter::once(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/aha-template"),
        ));
    for dir in candidates {
        if dir.join("AHA17_model_ED.nii.gz").is_file() {
            return Some(dir);
        }
    }
    if std::env::var("CLAIM_REQUIRE_ATLAS").is_ok_and(|v| v == "1") {
        // Test-only helper: CI demands the atlas, so its absence is a failure.
        panic!("CLAIM_REQUIRE_ATLAS=1 but the AHA atlas was not found (set CLAIM_ATLAS_DIR)");
    }
    eprintln!(
        "skipped: AHA atlas not found (set CLAIM_ATLAS_DIR or place ../shared beside the crate)"
    );
    None
}

// ---- comparisons ----

/// Relative L2 error `‖got − want‖ / ‖want‖`, accumulated in f64: the
/// parity measure of `GPU.md` (a zero reference gives `‖got‖`, so two zero
/// vectors compare equal). Panics when the lengths differ (a test bug).
pub fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "rel_l2 of different lengths");
    let (mut diff, mut norm) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let d = f64::from(g) - f64::from(w);
        diff += d * d;
        norm += f64::from(w) * f64::from(w);
    }
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

/// `max |got − want|` (NaN when any difference is NaN, so a poisoned
/// element is never hidden by `f32::max`).
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "max_abs_diff of different lengths");
    got.iter().zip(want).fold(0f32, |m, (a, b)| {
        let d = (a - b).abs();
        if d.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.max(d)
        }
    })
}

/// `max |got − want| / max |want|`: the golden tests' measure against a
/// PyTorch reference.
pub fn max_rel_error(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    max_abs_diff(got, want) / scale
}

/// `(max abs error, max abs error / max |reference|)` of two tensors of one
/// shape (panics on a shape mismatch or a failed download: test code).
pub fn tensor_errors(got: &Tensor, want: &Tensor) -> (f32, f32) {
    assert_eq!(got.dims(), want.dims(), "shapes differ");
    let (g, w) = (got.to_vec().unwrap(), want.to_vec().unwrap());
    (max_abs_diff(&g, &w), max_rel_error(&g, &w))
}

// ---- seeded random data ----

/// `n` standard normal values from seed `seed` (the crate's own generator,
/// so the data is the same on every machine).
pub fn random_normal(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// `n` values uniform in `[lo, hi)` from seed `seed`.
pub fn random_uniform(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| rng.uniform_range(f64::from(lo), f64::from(hi)) as f32)
        .collect()
}

/// A CPU tensor of standard normal values.
pub fn random_tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(random_normal(n, seed), shape).expect("a valid test shape")
}

// ---- fixtures and the phantom ----

/// `tests/fixtures/<relative>` of this crate, or of `$CLAIM_FIXTURES_DIR`
/// when set (test binaries run away from their source tree, as on the GPU
/// machine).
pub fn fixture_path(relative: &str) -> PathBuf {
    std::env::var_os("CLAIM_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
        .join(relative)
}

/// The phantom's label map (EMIDEC + RV) for `seed`, with or without scar,
/// at the default size.
pub fn phantom_labels(seed: u64, with_scar: bool) -> Volume<i32> {
    crate::phantom::generate(&crate::phantom::PhantomParams {
        seed,
        with_scar,
        ..Default::default()
    })
    .expect("the default phantom generates")
    .labels
}

/// `heart` placed at voxel `offset` of a map of `dims` that is 0 around it,
/// every voxel keeping its world position: a label map with a wide field
/// of view, for tests of the heart box ([`crate::volume::CroppedLabels`]).
pub fn in_wide_field<T: Clone + Default>(
    heart: &Volume<T>,
    offset: [usize; 3],
    dims: [usize; 3],
) -> Volume<T> {
    let mut full_geometry = heart.geometry;
    full_geometry.origin = heart.geometry.index_to_world(offset.map(|o| -(o as f64)));
    let placement = crate::volume::CropPlacement {
        offset,
        dims: heart.dims(),
        full_dims: dims,
        full_geometry,
    };
    placement
        .uncrop(heart, "the wide field")
        .expect("the heart fits the field")
}

// ---- full-size denoisers with random weights ----

/// Random weights of a full-size denoiser (dim 72, four levels, 8 heads of
/// 32), from the exact CLAIM key list (`tests/fixtures/denoiser/
/// claim_state_dict.json`) with the input/output channels and the
/// condition length changed: `(1, 16)` is CLAIM's 2-D model, `(2, 32)`
/// LeFusion's EMIDEC model. Weights are normal with std 1/√fan-in, biases
/// and norms alike, so activations stay O(1) through the network.
pub fn random_denoiser_weights(
    channels: usize,
    cond_dim: usize,
    seed: u64,
) -> crate::Result<crate::nn::Weights> {
    use crate::Error;
    let path = fixture_path("denoiser/claim_state_dict.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Format(format!("{}: {e}", path.display())))?;
    let keys = json["keys"]
        .as_array()
        .ok_or_else(|| Error::Format(format!("{}: no key list", path.display())))?;
    let (claim_cond, claim_total) = (16usize, 304usize);
    let mut shapes = Vec::with_capacity(keys.len());
    for entry in keys {
        let name = entry[0].as_str().unwrap_or_default().to_string();
        let mut shape: Vec<usize> = entry[1]
            .as_array()
            .map(|dims| {
                dims.iter()
                    .map(|d| d.as_u64().unwrap_or(0) as usize)
                    .collect()
            })
            .unwrap_or_default();
        match name.as_str() {
            "null_cond_emb" => shape[1] = cond_dim,
            "init_conv.weight" => shape[1] = channels,
            "final_conv.weight" | "final_conv.bias" => shape[0] = channels,
            _ if name.ends_with("mlp.1.weight") && shape.get(1) == Some(&claim_total) => {
                shape[1] = claim_total - claim_cond + cond_dim
            }
            _ => {}
        }
        shapes.push((name, shape));
    }
    fan_in_normal_weights(shapes, seed)
}

/// Weights under the given names and shapes, each tensor normal with std
/// 1/√fan-in (the product of all but its first dimension), drawn in order
/// from `seed`.
fn fan_in_normal_weights(
    shapes: impl IntoIterator<Item = (String, Vec<usize>)>,
    seed: u64,
) -> crate::Result<crate::nn::Weights> {
    let mut rng = Rng::new(seed);
    let named = shapes
        .into_iter()
        .map(|(name, shape)| {
            let std = 1.0 / (shape.iter().skip(1).product::<usize>().max(1) as f64).sqrt();
            let data = (0..shape.iter().product())
                .map(|_| (rng.normal() * std) as f32)
                .collect();
            Ok((name, Tensor::from_vec(data, &shape)?))
        })
        .collect::<crate::Result<Vec<_>>>()?;
    crate::nn::Weights::from_tensors(named)
}

/// Random weights for any denoiser `config` (its keys and shapes from
/// [`crate::models::Denoiser::initial_parameters`]), drawn like
/// [`random_denoiser_weights`]: normal with std 1/√fan-in for every tensor,
/// so activations stay O(1) where PyTorch's initialisation would zero some
/// paths. Small configurations keep device parity tests short enough for
/// the CUDA emulator.
pub fn random_weights_for(
    config: &crate::models::DenoiserConfig,
    seed: u64,
) -> crate::Result<crate::nn::Weights> {
    let shapes = crate::models::Denoiser::initial_parameters(config, 0)?
        .into_iter()
        .map(|(name, t)| (name, t.dims().to_vec()));
    fan_in_normal_weights(shapes, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_measure_what_they_say() {
        let want = [3.0, 4.0];
        assert_eq!(rel_l2(&want, &want), 0.0);
        assert!((rel_l2(&[3.0, 4.5], &want) - 0.1).abs() < 1e-12);
        assert_eq!(rel_l2(&[0.0], &[0.0]), 0.0);
        assert_eq!(max_abs_diff(&[1.0, 5.0], &[1.5, 4.0]), 1.0);
        assert!(max_abs_diff(&[f32::NAN, 5.0], &[1.5, 4.0]).is_nan());
        assert!(max_abs_diff(&[1.0, f32::NAN], &[1.5, 4.0]).is_nan());
        assert_eq!(max_rel_error(&[1.0, 5.0], &[1.5, 4.0]), 0.25);
    }

    #[test]
    fn random_weights_load_as_the_configured_denoiser() {
        use crate::models::{Denoiser, DenoiserConfig};
        let config = DenoiserConfig {
            dim: 16,
            dim_mults: vec![1, 2],
            attn_heads: 2,
            attn_dim_head: 16,
            ..DenoiserConfig::claim()
        };
        let weights = random_weights_for(&config, 3).unwrap();
        let model = Denoiser::load(&weights).unwrap();
        assert_eq!(model.config(), &config);
        // std 1/√fan-in: the 7×7 first convolution of one channel.
        let init = weights
            .root()
            .pp("init_conv")
            .get("weight", &[16, 1, 1, 7, 7])
            .unwrap();
        let values = init.to_vec().unwrap();
        let std = (values.iter().map(|v| v * v).sum::<f32>() / values.len() as f32).sqrt();
        assert!((std - 1.0 / 7.0).abs() < 0.02, "std {std}");
        let again = random_weights_for(&config, 3).unwrap();
        let first = again
            .root()
            .pp("init_conv")
            .get("weight", &[16, 1, 1, 7, 7])
            .unwrap();
        assert_eq!(first.to_vec().unwrap(), values, "not seeded");
    }

    #[test]
    fn random_data_is_seeded_and_in_range() {
        assert_eq!(random_normal(8, 3), random_normal(8, 3));
        assert_ne!(random_normal(8, 3), random_normal(8, 4));
        let u = random_uniform(1000, 0.5, 2.0, 1);
        assert!(u.iter().all(|v| (0.5..2.0).contains(v)));
        assert_eq!(random_tensor(&[2, 3], 5).dims(), &[2, 3]);
    }
}
