//! Placeholder until the Philox4x32-10 generator lands (kernels branch).

use crate::backend::desc::NoiseKey;

/// Fills `out` with standard normals for elements `first_element..`.
pub fn philox_normals(key: NoiseKey, item: u32, first_element: u64, out: &mut [f32]) {
    let mut rng = crate::rng::Rng::new(
        key.seed ^ (u64::from(item) << 32) ^ (u64::from(key.step) << 8) ^ u64::from(key.stream),
    );
    let _ = first_element;
    for v in out {
        *v = rng.normal() as f32;
    }
}
