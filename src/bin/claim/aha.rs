//! `claim aha`: the AHA 17-segment map of a label map.

use crate::label_maps::{
    check_nifti_output, create_parent, format_direction, orientation_note, parcellate,
    read_heart_box, SchemeArgs,
};
use claim::smile::territory::SEGMENT_COUNT;
use claim::{Image, LabelScheme, Result};
use std::path::PathBuf;

/// Arguments of `claim aha`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Label map (.nii / .nii.gz, any voxel type) with LV cavity and myocardium.
    labels: PathBuf,
    /// Output segment map (.nii / .nii.gz): u8, 0 outside the myocardium,
    /// segment 1–17 on every myocardium voxel; the input's geometry.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    #[command(flatten)]
    scheme: SchemeArgs,
    /// Label of microvascular obstruction (`--mvo N` works too).
    #[arg(long = "mvo-label", visible_alias = "mvo", value_name = "N", default_value_t = LabelScheme::EMIDEC.mvo)]
    mvo_label: i32,
}

pub fn run(args: &Args) -> Result<()> {
    check_nifti_output(&args.output)?;
    let params = args.scheme.aha_params(args.mvo_label)?;
    let map = read_heart_box(&args.labels)?;
    let (parcellation, took) = parcellate(&map, &params)?;
    create_parent(&args.output)?;
    let segments = &parcellation.segments;
    claim::io::write_image(&Image::U8(segments.clone()), &args.output)?;

    let myocardium_ml =
        parcellation.voxels.len() as f64 * segments.geometry.voxel_volume_mm3() / 1000.0;
    let mut present = [false; SEGMENT_COUNT];
    for voxel in &parcellation.voxels {
        if let Some(p) = usize::from(voxel.segment)
            .checked_sub(1)
            .and_then(|i| present.get_mut(i))
        {
            *p = true;
        }
    }
    let missing: Vec<String> = (1..=SEGMENT_COUNT)
        .filter(|s| !present[s - 1])
        .map(|s| s.to_string())
        .collect();
    let missing = if missing.is_empty() {
        String::new()
    } else {
        format!(", segments without voxels: {}", missing.join(" "))
    };
    outln!(
        "aha: {} myocardium voxels ({myocardium_ml:.1} mL) in 17 segments{missing}; {}; long axis {} (LPS, apex to base); {:.3} s; wrote {}",
        parcellation.voxels.len(),
        orientation_note(&parcellation, &params.labels),
        format_direction(parcellation.long_axis),
        took.as_secs_f64(),
        args.output.display()
    );
    Ok(())
}
