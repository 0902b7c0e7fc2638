//! Peak memory per operation, as `docs/ARCHITECTURE.md` states it: every
//! heart-analysis command on a label map whose field of view is mostly
//! empty, measured with `claim --report-memory` (the kernel's high-water
//! mark of the process), checked against a bound in bytes per voxel of the
//! map plus a fixed allowance. Widening the whole map to 32-bit labels
//! (4 bytes a voxel) breaks the bounds of `aha`, `smile`, `stats` and
//! `bullseye`, whose work is on the heart's box.

use crate::common::{assert_ok, claim, stderr};
use claim::Image;
use std::path::Path;
use std::process::Output;

/// The field of view: 560×560×48 voxels (15 M), u8, around a 64×64×12
/// phantom heart.
const WIDE_DIMS: [usize; 3] = [560, 560, 48];

/// Fixed allowance on top of the per-voxel bound: the heart box's tables,
/// thread stacks, allocator slack, and the write path's buffers.
const ALLOWANCE_MIB: f64 = 48.0;

/// `peak memory: N KiB` from `--report-memory`, in MiB.
fn peak_mib(out: &Output) -> f64 {
    let err = stderr(out);
    let kib: f64 = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("peak memory: ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no peak memory line in {err}"));
    kib / 1024.0
}

/// Writes `wide.nii` (u8, uncompressed): the phantom's labels placed in a
/// field of view of [`WIDE_DIMS`], with their world positions kept.
fn wide_label_map(d: &Path) {
    assert_ok(&claim(
        &[
            "phantom", "--size", "64", "--slices", "12", "--seed", "2", "-o", "ph",
        ],
        d,
    ));
    let heart = claim::io::read_image(&d.join("ph/labels.nii.gz"))
        .unwrap()
        .to_labels()
        .unwrap()
        .map(|l| *l as u8);
    let wide = claim::testing::in_wide_field(&heart, [250, 190, 20], WIDE_DIMS);
    claim::io::write_image(&Image::U8(wide), &d.join("wide.nii")).unwrap();
}

#[test]
fn each_command_stays_within_its_stated_peak_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    wide_label_map(d);
    let voxels = WIDE_DIMS.iter().product::<usize>() as f64;
    let mib_per_byte_per_voxel = voxels / (1024.0 * 1024.0);
    let baseline = peak_mib(&claim(&["--report-memory", "info", "ph/labels.nii.gz"], d));
    // (command, bytes per voxel of the map): the bounds of ARCHITECTURE.
    let cases: [(&[&str], f64); 7] = [
        (&["info", "wide.nii"], 2.0),
        (&["aha", "wide.nii", "--rv", "5", "-o", "aha.nii"], 3.0),
        (
            &[
                "smile", "wide.nii", "--rv", "5", "--seed", "4", "-o", "scar.nii",
            ],
            3.0,
        ),
        (&["stats", "wide.nii", "--rv", "5", "--json"], 3.0),
        (
            &["bullseye", "wide.nii", "--rv", "5", "-o", "plot.svg"],
            3.0,
        ),
        (
            &["stats", "wide.nii", "--rv", "5", "--segments", "aha.nii"],
            3.0,
        ),
        (
            &["eval", "scar.nii", "wide.nii", "--labels", "emidec-rv"],
            3.0,
        ),
    ];
    let mut failures = Vec::new();
    for (args, bytes_per_voxel) in cases {
        let mut with_report = vec!["--report-memory"];
        with_report.extend_from_slice(args);
        let out = claim(&with_report, d);
        assert_ok(&out);
        let peak = peak_mib(&out);
        let bound = baseline + bytes_per_voxel * mib_per_byte_per_voxel + ALLOWANCE_MIB;
        println!(
            "{:<45} peak {peak:7.1} MiB = baseline {baseline:.1} + {:5.2} B/voxel; bound {bound:.1}",
            args.join(" "),
            (peak - baseline) / mib_per_byte_per_voxel
        );
        if peak > bound {
            failures.push(format!("{}: {peak:.1} MiB > {bound:.1}", args.join(" ")));
        }
    }
    assert!(failures.is_empty(), "over the stated bounds: {failures:?}");
}
