//! `claim info`: what a NIfTI file holds, or (`--build`) what this build of
//! claim can run on, as text or JSON.

use claim::metrics::volumes::{label_histogram, LabelVolume, MAX_LABELS};
use claim::{Error, Image, Result};
use serde::Serialize;
use std::path::PathBuf;

/// Arguments of `claim info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .nii or .nii.gz file.
    #[arg(required_unless_present = "build", conflicts_with = "build")]
    file: Option<PathBuf>,
    /// Describe this build instead: the CUDA back-end, the GPU targets of
    /// its kernels, and the CUDA driver and devices found (or why none).
    #[arg(long)]
    build: bool,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Everything `info` reports. The JSON form is this struct.
#[derive(Debug, Serialize)]
struct ImageInfo {
    file: String,
    dtype: &'static str,
    /// [ni, nj, nk], i fastest.
    dims: [usize; 3],
    /// mm along i, j, k.
    spacing: [f64; 3],
    /// LPS mm of the centre of voxel (0, 0, 0).
    origin: [f64; 3],
    /// Row-major; columns are the i, j, k axes in LPS.
    direction: [[f64; 3]; 3],
    /// ITK orientation code.
    orientation: String,
    voxel_volume_mm3: f64,
    /// Smallest and largest finite value, mean of the finite values
    /// (null when there is none).
    min: Option<f64>,
    max: Option<f64>,
    mean: Option<f64>,
    /// NaN and infinite voxels.
    non_finite_voxels: u64,
    /// Voxels and mL per value, for integer-valued images with at most
    /// 64 distinct values (label maps); null otherwise.
    labels: Option<Vec<LabelVolume>>,
}

/// What `claim info --build` reports. The JSON form is this struct.
#[derive(Debug, Serialize)]
struct BuildReport {
    version: &'static str,
    /// Built with the `cuda` feature.
    cuda_feature: bool,
    /// GPU targets of the embedded kernels (empty when none).
    kernel_archs: Vec<String>,
    /// A CUDA driver and at least one device were found.
    cuda_available: bool,
    /// `major * 1000 + minor * 10`, when a driver was found.
    cuda_driver_version: Option<i32>,
    /// One line per device found.
    cuda_devices: Vec<String>,
    /// Why CUDA is not usable, when it is not.
    cuda_unavailable_reason: Option<String>,
}

fn build_report() -> BuildReport {
    let info = claim::backend::build_info();
    let (driver, devices, reason) = match info.cuda_runtime {
        Ok(runtime) => {
            let reason = runtime
                .devices
                .is_empty()
                .then(|| "CUDA driver found, but no device".to_string());
            (Some(runtime.driver_version), runtime.devices, reason)
        }
        Err(why) => (None, Vec::new(), Some(why)),
    };
    BuildReport {
        version: info.version,
        cuda_feature: info.cuda_feature,
        kernel_archs: info.kernel_archs,
        cuda_available: !devices.is_empty(),
        cuda_driver_version: driver,
        cuda_devices: devices,
        cuda_unavailable_reason: reason,
    }
}

fn build_text(report: &BuildReport) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut out = format!(
        "claim {}
",
        report.version
    );
    out.push_str(&format!(
        "CUDA back-end built in: {}
",
        yes_no(report.cuda_feature)
    ));
    let archs = if report.kernel_archs.is_empty() {
        "none".to_string()
    } else {
        report.kernel_archs.join(", ")
    };
    out.push_str(&format!(
        "embedded GPU kernels:   {archs}
"
    ));
    match report.cuda_driver_version {
        Some(v) => out.push_str(&format!(
            "CUDA driver:            {}.{}
",
            v / 1000,
            (v % 1000) / 10
        )),
        None => out.push_str(
            "CUDA driver:            none
",
        ),
    }
    for device in &report.cuda_devices {
        out.push_str(&format!(
            "CUDA device:            {device}
"
        ));
    }
    out.push_str(&format!(
        "CUDA usable:            {}
",
        match &report.cuda_unavailable_reason {
            None => "yes".to_string(),
            Some(why) => format!("no ({why})"),
        }
    ));
    out
}

pub fn run(args: &Args) -> Result<()> {
    let Some(file) = args.file.as_ref().filter(|_| !args.build) else {
        let report = build_report();
        if args.json {
            let text = serde_json::to_string_pretty(&report)
                .map_err(|e| Error::Internal(format!("build info as JSON: {e}")))?;
            outln!("{text}");
        } else {
            out!("{}", build_text(&report));
        }
        return Ok(());
    };
    let image = claim::io::read_image(file)?;
    let info = describe(&image, file.display().to_string());
    if args.json {
        let text = serde_json::to_string_pretty(&info)
            .map_err(|e| Error::Internal(format!("info as JSON: {e}")))?;
        outln!("{text}");
    } else {
        out!("{}", as_text(&info));
    }
    Ok(())
}

/// Every voxel as f64 (exact for all stored types).
fn values(image: &Image) -> Box<dyn Iterator<Item = f64> + '_> {
    match image {
        Image::U8(v) => Box::new(v.data.iter().map(|x| f64::from(*x))),
        Image::I16(v) => Box::new(v.data.iter().map(|x| f64::from(*x))),
        Image::U16(v) => Box::new(v.data.iter().map(|x| f64::from(*x))),
        Image::I32(v) => Box::new(v.data.iter().map(|x| f64::from(*x))),
        Image::F32(v) => Box::new(v.data.iter().map(|x| f64::from(*x))),
    }
}

fn describe(image: &Image, file: String) -> ImageInfo {
    let geometry = image.geometry();
    let (mut min, mut max, mut sum, mut finite, mut non_finite) =
        (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0u64, 0u64);
    for value in values(image) {
        if value.is_finite() {
            min = min.min(value);
            max = max.max(value);
            sum += value;
            finite += 1;
        } else {
            non_finite += 1;
        }
    }
    let voxel_volume_mm3 = geometry.voxel_volume_mm3();
    let some_finite = finite > 0;
    ImageInfo {
        file,
        dtype: image.dtype().name(),
        dims: image.dims(),
        spacing: geometry.spacing,
        origin: geometry.origin,
        direction: geometry.direction,
        orientation: geometry.orientation_code(),
        voxel_volume_mm3,
        min: some_finite.then_some(min),
        max: some_finite.then_some(max),
        mean: some_finite.then(|| sum / finite as f64),
        non_finite_voxels: non_finite,
        labels: label_histogram(values(image), voxel_volume_mm3),
    }
}

fn triple(v: [f64; 3]) -> String {
    format!("({}, {}, {})", round6(v[0]), round6(v[1]), round6(v[2]))
}

/// Six decimals at most, without trailing noise like 1.5625000000001 (and
/// without a "-0").
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6 + 0.0
}

fn as_text(info: &ImageInfo) -> String {
    let d = &info.direction;
    let column = |c: usize| triple([d[0][c], d[1][c], d[2][c]]);
    let [ni, nj, nk] = info.dims;
    let [si, sj, sk] = info.spacing.map(round6);
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{key:<12} {value}\n"));
    line("file", info.file.clone());
    line("dtype", info.dtype.to_string());
    line("dims", format!("{ni} x {nj} x {nk} (i, j, k)"));
    line("spacing", format!("{si} x {sj} x {sk} mm"));
    line("origin", format!("{} mm, LPS", triple(info.origin)));
    line(
        "direction",
        format!("i {}  j {}  k {}  (LPS)", column(0), column(1), column(2)),
    );
    line("orientation", format!("{} (ITK code)", info.orientation));
    line("voxel", format!("{} mm3", round6(info.voxel_volume_mm3)));
    match (info.min, info.max, info.mean) {
        (Some(min), Some(max), Some(mean)) => line(
            "values",
            format!("min {}, max {}, mean {mean:.4}", round6(min), round6(max)),
        ),
        _ => line("values", "no finite value".to_string()),
    }
    if info.non_finite_voxels > 0 {
        line(
            "non-finite",
            format!("{} voxels (NaN or infinite)", info.non_finite_voxels),
        );
    }
    match &info.labels {
        Some(labels) => {
            line("labels", format!("{} distinct values", labels.len()));
            out.push_str(&format!("{:>8} {:>12} {:>12}\n", "label", "voxels", "mL"));
            for l in labels {
                out.push_str(&format!("{:>8} {:>12} {:>12.3}\n", l.label, l.voxels, l.ml));
            }
        }
        None => line(
            "labels",
            format!("none (not integer-valued with at most {MAX_LABELS} distinct values)"),
        ),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use claim::{Geometry, Volume};

    #[test]
    fn describes_a_label_map() {
        let v = Volume::from_vec(
            [4, 1, 1],
            vec![0u8, 1, 1, 2],
            Geometry::with_spacing([10.0, 10.0, 10.0]),
        )
        .unwrap();
        let info = describe(&Image::U8(v), "x.nii".into());
        assert_eq!(info.dtype, "u8");
        assert_eq!((info.min, info.max), (Some(0.0), Some(2.0)));
        assert_eq!(info.orientation, "RAI");
        let labels = info.labels.as_ref().unwrap();
        assert_eq!(labels.len(), 3);
        assert!((labels[1].ml - 2.0).abs() < 1e-12);
        let text = as_text(&info);
        assert!(text.contains("4 x 1 x 1"), "{text}");
        assert!(text.contains("RAI"), "{text}");
    }

    #[test]
    fn intensity_images_have_no_histogram() {
        let v =
            Volume::from_vec([3, 1, 1], vec![0.5f32, f32::NAN, 2.0], Geometry::default()).unwrap();
        let info = describe(&Image::F32(v), "x.nii".into());
        assert!(info.labels.is_none());
        assert_eq!(info.non_finite_voxels, 1);
        assert_eq!(info.mean, Some(1.25));
    }
}
