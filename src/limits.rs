//! Resource limits: the largest volume claim accepts, and fallible
//! allocation of buffers whose size an input decides.
//!
//! claim runs inside other people's processes, where an allocation failure
//! would abort the host. Two guards keep that from happening:
//!
//! - **A voxel limit** ([`max_voxels`], default [`DEFAULT_MAX_VOXELS`] =
//!   2²⁸ ≈ 268 million voxels: 1 GiB as f32, far beyond any cardiac image).
//!   NIfTI files are refused from their header, before any voxel is
//!   decompressed, and C callers' volumes before they are copied. It is set
//!   by the environment variable `CLAIM_MAX_VOXELS` (read once, at first
//!   use), by `claim_max_voxels_set` in the C API, by `claim --max-voxels N`
//!   on the command line, or by [`set_max_voxels`]; at most
//!   [`crate::volume::MAX_VOXELS`]. A refusal is
//!   [`Error::OutOfMemory`] naming the volume, its voxels and the limit.
//! - **Fallible allocation** ([`try_vec`], [`try_filled`]): buffers sized by
//!   an input are reserved with `try_reserve_exact`, so a refused allocation
//!   is an [`Error::OutOfMemory`] giving the size and what it was for.

use crate::error::{Error, Result};
use crate::volume::MAX_VOXELS;
use std::sync::atomic::{AtomicU64, Ordering};

/// The default voxel limit: 2²⁸ voxels (1 GiB as f32, 256 MiB as u8).
pub const DEFAULT_MAX_VOXELS: u64 = 1 << 28;

/// The environment variable that sets the voxel limit at first use.
pub const MAX_VOXELS_ENV: &str = "CLAIM_MAX_VOXELS";

/// 0 = not decided yet (the environment or the default decides at first use).
static LIMIT: AtomicU64 = AtomicU64::new(0);

/// Parses a voxel limit: a whole number from 1 to [`MAX_VOXELS`].
pub fn parse_max_voxels(text: &str) -> Result<u64> {
    let n: u64 = text.trim().parse().map_err(|_| {
        Error::invalid(format!(
            "voxel limit {text:?} is not a whole number from 1 to {MAX_VOXELS}"
        ))
    })?;
    check_limit(n)
}

fn check_limit(n: u64) -> Result<u64> {
    if (1..=MAX_VOXELS).contains(&n) {
        Ok(n)
    } else {
        Err(Error::invalid(format!(
            "voxel limit {n} must be from 1 to {MAX_VOXELS}"
        )))
    }
}

/// The voxel limit in force: set by [`set_max_voxels`], else
/// `$CLAIM_MAX_VOXELS` (when it parses), else [`DEFAULT_MAX_VOXELS`].
pub fn max_voxels() -> u64 {
    match LIMIT.load(Ordering::Relaxed) {
        0 => {
            let from_env = std::env::var(MAX_VOXELS_ENV)
                .ok()
                .and_then(|t| parse_max_voxels(&t).ok())
                .unwrap_or(DEFAULT_MAX_VOXELS);
            // Another thread may have set a limit meanwhile: keep theirs.
            match LIMIT.compare_exchange(0, from_env, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => from_env,
                Err(set) => set,
            }
        }
        n => n,
    }
}

/// Sets the voxel limit for the whole process (1 to [`MAX_VOXELS`]); 0
/// goes back to the environment's or the default. Returns the limit now
/// in force.
pub fn set_max_voxels(n: u64) -> Result<u64> {
    if n == 0 {
        LIMIT.store(0, Ordering::Relaxed);
        return Ok(max_voxels());
    }
    LIMIT.store(check_limit(n)?, Ordering::Relaxed);
    Ok(n)
}

/// Refuses a volume `what` of `dims` when it has more voxels than
/// [`max_voxels`]: [`Error::OutOfMemory`] saying how to raise the limit.
pub fn check_voxels(dims: &[u64], what: &str) -> Result<()> {
    let count = dims
        .iter()
        .try_fold(1u64, |acc, d| acc.checked_mul(*d))
        .unwrap_or(u64::MAX);
    let limit = max_voxels();
    if count > limit {
        let shown: Vec<String> = dims.iter().map(u64::to_string).collect();
        return Err(Error::OutOfMemory(format!(
            "{what}: {} voxels ({count}) exceed the limit of {limit} voxels per volume \
             (raise it with {MAX_VOXELS_ENV}, claim --max-voxels or claim_max_voxels_set)",
            shown.join("×")
        )));
    }
    Ok(())
}

/// An empty `Vec` with room for `count` elements, or [`Error::OutOfMemory`]
/// naming the size and `what` it was for, instead of an abort.
pub fn try_vec<T>(count: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(count)
        .map_err(|_| out_of_memory(count, size_of::<T>(), what))?;
    Ok(v)
}

/// `count` copies of `value`, allocated as [`try_vec`] does.
pub fn try_filled<T: Clone>(count: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = try_vec(count, what)?;
    v.resize(count, value);
    Ok(v)
}

/// The error of a refused allocation of `count` elements of `size` bytes.
pub fn out_of_memory(count: usize, size: usize, what: &str) -> Error {
    let bytes = (count as u128) * (size as u128);
    Error::OutOfMemory(format!(
        "{what}: cannot allocate {count} elements of {size} bytes ({})",
        human_bytes(bytes)
    ))
}

/// `1.5 GiB`, `12.0 MiB`, `512 bytes`.
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_default_is_the_default() {
        assert_eq!(
            crate::ffi::image::CLAIM_MAX_VOXELS_DEFAULT,
            DEFAULT_MAX_VOXELS
        );
    }

    #[test]
    fn limits_parse_and_refuse_nonsense() {
        assert_eq!(parse_max_voxels(" 1000 ").unwrap(), 1000);
        for bad in ["0", "-1", "lots", "", "18446744073709551615"] {
            let err = parse_max_voxels(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn oversized_volumes_are_refused_with_the_limit_named() {
        let limit = max_voxels();
        assert!(check_voxels(&[64, 64, 64], "small").is_ok());
        let err = check_voxels(&[2048, 1024, 1024], "bomb.nii.gz").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::OutOfMemory(_)), "{msg}");
        assert!(
            msg.contains("bomb.nii.gz") && msg.contains("2048×1024×1024"),
            "{msg}"
        );
        assert!(
            msg.contains(&limit.to_string()) && msg.contains(MAX_VOXELS_ENV),
            "{msg}"
        );
        let err = check_voxels(&[u64::MAX, 2, 2], "overflow").unwrap_err();
        assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
    }

    #[test]
    fn refused_allocations_name_size_and_purpose() {
        let err = try_vec::<f32>(usize::MAX / 2, "the sliding-window weights").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::OutOfMemory(_)), "{msg}");
        assert!(
            msg.contains("sliding-window weights") && msg.contains("bytes"),
            "{msg}"
        );
        assert_eq!(try_filled(3, 7u8, "x").unwrap(), vec![7, 7, 7]);
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
