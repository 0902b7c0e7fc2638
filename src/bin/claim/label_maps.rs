//! What the SMILE subcommands (`aha`, `smile`, `stats`, `bullseye`) share:
//! the label-scheme flags, reading label and segment maps, parcellating, and
//! writing label maps back in the input's voxel type.

pub use claim::io::emidec::is_nifti_name;
use claim::smile::aha::{self, AhaParams, AhaParcellation};
use claim::smile::stats::crop_segment_map;
use claim::volume::{voxel_type_holds, CroppedLabels, LABEL_CROP_MARGIN};
use claim::{DType, Error, LabelScheme, Result, Volume};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Label-scheme and parcellation flags. The MVO label flag is declared by
/// each command, because `claim smile` uses `--mvo` as the on/off switch of
/// the MVO core: there it is only `--mvo-label`.
#[derive(Debug, Clone, clap::Args)]
pub struct SchemeArgs {
    /// Label of the LV blood pool.
    #[arg(long, value_name = "N", default_value_t = LabelScheme::EMIDEC.lv_cavity)]
    pub lv: i32,
    /// Label of healthy myocardium.
    #[arg(long, value_name = "N", default_value_t = LabelScheme::EMIDEC.myocardium)]
    pub myo: i32,
    /// Label of scar.
    #[arg(long, value_name = "N", default_value_t = LabelScheme::EMIDEC.scar)]
    pub scar: i32,
    /// Label of the RV blood pool (none by default). With it the septum and
    /// the RV insertion points come from the RV; without it the
    /// orientation is approximated from the image geometry.
    #[arg(long, value_name = "N")]
    pub rv: Option<i32>,
    /// Turn the AHA segments by DEG degrees, counter-clockwise as seen from
    /// the apex (the bull's-eye view), when parcellating.
    #[arg(
        long,
        value_name = "DEG",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub rotation: f64,
}

impl SchemeArgs {
    /// The label scheme these flags and the command's MVO label describe.
    pub fn scheme(&self, mvo_label: i32) -> Result<LabelScheme> {
        let scheme = LabelScheme {
            lv_cavity: self.lv,
            myocardium: self.myo,
            scar: self.scar,
            mvo: mvo_label,
            rv: self.rv,
        };
        scheme.validate()?;
        Ok(scheme)
    }

    /// Parcellation options: the scheme and the rotation.
    pub fn aha_params(&self, mvo_label: i32) -> Result<AhaParams> {
        let params = AhaParams {
            labels: self.scheme(mvo_label)?,
            rotation_deg: self.rotation,
            ..AhaParams::default()
        };
        params.validate()?;
        Ok(params)
    }
}

/// The flags that give a scheme, as a user would type them.
fn scheme_flags(scheme: &LabelScheme) -> String {
    let rv = match scheme.rv {
        Some(rv) => format!("--rv {rv}"),
        None => "no --rv".to_string(),
    };
    format!(
        "--lv {} --myo {} --scar {} --mvo-label {}, {rv}",
        scheme.lv_cavity, scheme.myocardium, scheme.scar, scheme.mvo
    )
}

/// Puts the file name in front of an error about it, unless the message
/// already names it (the library's I/O and format errors do).
pub fn in_file(path: &Path, err: Error) -> Error {
    let shown = path.display().to_string();
    if err.to_string().contains(&shown) {
        err
    } else {
        err.context(shown)
    }
}

/// A label map as read from a file.
pub struct LabelMap {
    /// Where it was read from.
    pub path: PathBuf,
    /// The file's voxel type; outputs keep it.
    pub dtype: DType,
    /// The labels: the whole map, or the box around its heart (see
    /// [`read_heart_box`]).
    pub cropped: CroppedLabels,
}

impl LabelMap {
    /// The labels held: the whole map from [`read_label_map`], the box of
    /// [`CroppedLabels::placement`] from [`read_heart_box`].
    pub fn labels(&self) -> &Volume<i32> {
        &self.cropped.labels
    }
}

/// Reads a label map (any voxel type; float labels must be integral).
pub fn read_label_map(path: &Path) -> Result<LabelMap> {
    let image = claim::io::read_image(path)?;
    let labels = image.to_labels().map_err(|e| in_file(path, e))?;
    Ok(LabelMap {
        path: path.to_path_buf(),
        dtype: image.dtype(),
        cropped: CroppedLabels::whole(labels),
    })
}

/// Reads a label map for the heart's analysis (`aha`, `smile`, `stats`,
/// `bullseye`): only the box around its labelled voxels is widened to
/// 32-bit labels, so a large field of view costs its file's voxel type, not
/// 4 bytes a voxel. Results are those of the whole map.
pub fn read_heart_box(path: &Path) -> Result<LabelMap> {
    let image = claim::io::read_image(path)?;
    let cropped =
        CroppedLabels::from_image(&image, LABEL_CROP_MARGIN).map_err(|e| in_file(path, e))?;
    Ok(LabelMap {
        path: path.to_path_buf(),
        dtype: image.dtype(),
        cropped,
    })
}

/// Reads an AHA segment map: any voxel type, values 0 (none) or 1–17.
pub fn read_segment_map(path: &Path) -> Result<Volume<u8>> {
    claim::io::read_image(path)?
        .to_segments()
        .map_err(|e| in_file(path, e))
}

/// Refuses label values the scheme does not name, with the flags to fix it.
/// (The library refuses them too; this message speaks in CLI flags.)
pub fn check_named(map: &LabelMap, scheme: &LabelScheme) -> Result<()> {
    let mut unnamed: Vec<i32> = Vec::new();
    for l in map.labels().data.iter() {
        if scheme.tissue(*l).is_none() && !unnamed.contains(l) {
            unnamed.push(*l);
        }
    }
    if unnamed.is_empty() {
        return Ok(());
    }
    unnamed.sort_unstable();
    let hint = if scheme.rv.is_none() {
        "; if one of them is the RV blood pool, give it with --rv N"
    } else {
        ""
    };
    Err(Error::invalid(format!(
        "{}: holds labels {unnamed:?} that the label flags ({}) do not name{hint}",
        map.path.display(),
        scheme_flags(scheme)
    )))
}

/// Parcellates a label map, timing it.
pub fn parcellate(map: &LabelMap, params: &AhaParams) -> Result<(AhaParcellation, Duration)> {
    check_named(map, &params.labels)?;
    let started = Instant::now();
    let parcellation =
        aha::parcellate_cropped(&map.cropped, params).map_err(|e| in_file(&map.path, e))?;
    Ok((parcellation, started.elapsed()))
}

/// How the septum was placed, in a few words for the console.
pub fn orientation_note(parcellation: &AhaParcellation, scheme: &LabelScheme) -> String {
    match (parcellation.used_rv, scheme.rv) {
        (true, Some(rv)) => format!("septum from the RV (label {rv})"),
        (false, Some(rv)) => format!(
            "no RV voxel (label {rv}) touches the LV: orientation approximated from the image geometry (check it, or turn it with --rotation DEG)"
        ),
        _ => "no RV label: orientation approximated from the image geometry (give --rv N, or turn it with --rotation DEG)".to_string(),
    }
}

/// A unit vector as `(x, y, z)` with three decimals.
pub fn format_direction(v: [f64; 3]) -> String {
    // `+ 0.0` turns a rounded -0.000 into 0.000.
    let r = |x: f64| (x * 1000.0).round() / 1000.0 + 0.0;
    format!("({:.3}, {:.3}, {:.3})", r(v[0]), r(v[1]), r(v[2]))
}

/// The segment map to measure with, over the box `map` holds: read from
/// `segments` when given, else parcellated from the labels. Returns it with
/// a line saying where it came from.
pub fn segments_for(
    map: &LabelMap,
    segments: Option<&Path>,
    params: &AhaParams,
) -> Result<(Volume<u8>, String)> {
    match segments {
        Some(path) => {
            let whole = read_segment_map(path)?;
            let part = crop_segment_map(&map.cropped, &whole).map_err(|e| in_file(path, e))?;
            Ok((part, format!("segments from {}", path.display())))
        }
        None => {
            let (parcellation, took) = parcellate(map, params)?;
            let note = format!(
                "segments parcellated in {:.3} s, {}",
                took.as_secs_f64(),
                orientation_note(&parcellation, &params.labels)
            );
            let part = map
                .cropped
                .placement
                .crop(&parcellation.segments, "segment map")?;
            Ok((part, note))
        }
    }
}

/// Refuses an output voxel type that cannot hold a label of the scheme the
/// command will write (`what` names the label, e.g. "scar").
pub fn check_dtype_holds(dtype: DType, label: i32, what: &str, input: &Path) -> Result<()> {
    if voxel_type_holds(dtype, label) {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "the output keeps the voxel type of {} ({}), which cannot hold the {what} label {label}; \
         choose a label that fits or convert the input to a wider type",
        input.display(),
        dtype.name()
    )))
}

/// Refuses an output file name that is not `.nii` / `.nii.gz`.
pub fn check_nifti_output(path: &Path) -> Result<()> {
    if is_nifti_name(&path.to_string_lossy()) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "output {}: expected a NIfTI file name ending in .nii or .nii.gz",
            path.display()
        )))
    }
}

/// Creates the folder an output file goes into.
pub fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => crate::phantom::create_output_dir(parent),
        _ => Ok(()),
    }
}

/// Writes a file, creating its folder, with an error naming it.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    create_parent(path)?;
    claim::io::atomic::write_atomically(path, |file| std::io::Write::write_all(file, bytes))
}
