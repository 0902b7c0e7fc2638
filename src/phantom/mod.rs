//! Procedural short-axis LGE phantom: the built-in demo case and test data.
//!
//! [`generate`] draws a heart from a seed and images it like a clinical
//! late-gadolinium-enhancement short-axis stack: the same seed gives
//! bit-identical volumes, different seeds give different hearts.
//!
//! # Anatomy
//!
//! - **LV**: nested half-prolate spheroids (endocardium, epicardium) whose
//!   radii shrink from base to apex; the cavity ends before the epicardium
//!   does, so the most apical slice holds the **apex cap** (myocardium
//!   without cavity). End-diastolic adult sizes: LV length 86–94 mm,
//!   endocardial radius 22–26 mm at the widest, wall 8–9.5 mm (±10 % around
//!   the circumference), apex wall 7–9 mm. Contours are slightly elliptical
//!   and irregular (low angular harmonics that twist from base to apex).
//! - **RV**: a crescent of blood wrapping the septum, attached to the LV
//!   epicardium at two insertion points about ±60° from the septal
//!   direction, with a 2.5–3.5 mm free wall; it starts about a fifth of the
//!   way up from the apex and is thickest at the base.
//! - **Scar** (optional, [`PhantomParams::with_scar`]): an ischaemic infarct
//!   in the LAD territory (anteroseptal/anterior wall, mid-ventricle),
//!   growing from the endocardium outwards and transmural in its centre,
//!   with a microvascular-obstruction core inside the transmural part.
//! - **Chest**: epicardial fat, torso soft tissue, lungs, liver, spine and
//!   descending aorta, air outside the body.
//!
//! # Orientation
//!
//! All anatomy is placed in LPS world coordinates: the long axis points from
//! base to apex towards the patient's left, front and feet (35–55° left of
//! the sagittal plane, 15–35° below the axial plane), and the RV lies to the
//! patient's right and front of the LV (smaller x, smaller y). The voxel grid
//! is a short-axis stack through it: i and j span the short-axis plane (i
//! towards the lateral wall, j towards the inferior wall, rotated in-plane
//! by up to ±15°), k runs along the long axis **from apex (k = 0) to base
//! (high k)**, as in the AHA atlas. The direction matrix is a proper
//! rotation (determinant +1) and oblique, as in real scanner geometry.
//!
//! # Stack
//!
//! The stack size and spacing are parameters (defaults: 192 × 192 pixels of
//! 1.5625 mm, 10 slices 9 mm apart — a 300 mm field of view covering the
//! heart from apex cap to base). The seed varies the anatomy, the
//! orientation and where the heart sits in the field of view (±10 mm); the
//! first slice is always centred inside the apex cap.
//!
//! # Image
//!
//! LGE contrast on a 0–1000 scale (f32): LV blood ≈ 720, RV blood ≈ 660,
//! healthy myocardium nulled ≈ 70, scar ≈ 950, MVO ≈ 100, fat ≈ 550, soft
//! tissue ≈ 300–400, lungs and air near 0; times a smooth anterior-coil bias
//! field (1 at the heart), with a slight in-plane blur for partial-volume
//! edges and Rician noise (the magnitude of complex Gaussian noise).
//!
//! Labels follow [`LABEL_SCHEME`]: EMIDEC (1 LV cavity, 2 myocardium, 3 scar,
//! 4 MVO) plus 5 for the RV blood pool.

mod anatomy;
mod imaging;

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::volume::{checked_voxel_count, Geometry, LabelScheme, Volume};
use anatomy::{Anatomy, Material};

/// The label scheme of phantom label maps: EMIDEC plus RV = 5.
pub const LABEL_SCHEME: LabelScheme = LabelScheme::EMIDEC_WITH_RV;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct PhantomParams {
    /// Seed of every random choice (anatomy, orientation, texture, noise).
    pub seed: u64,
    /// Add an LAD-territory infarct (label 3) with an MVO core (label 4).
    /// The anatomy and the rest of the image do not depend on this flag.
    pub with_scar: bool,
    /// In-plane matrix size (pixels along i and along j), 32–1024.
    pub matrix_size: usize,
    /// Number of short-axis slices, 1–128.
    pub slice_count: usize,
    /// In-plane pixel spacing in mm, 0.3–5.
    pub pixel_spacing_mm: f64,
    /// Distance between slice centres in mm, 0.5–20.
    pub slice_spacing_mm: f64,
    /// Standard deviation of the Gaussian noise in each quadrature channel,
    /// as a fraction of full scale (1000), 0–0.5.
    pub noise_level: f64,
}

impl Default for PhantomParams {
    fn default() -> Self {
        PhantomParams {
            seed: 0,
            with_scar: false,
            matrix_size: 192,
            slice_count: 10,
            pixel_spacing_mm: 1.5625,
            slice_spacing_mm: 9.0,
            noise_level: 0.02,
        }
    }
}

impl PhantomParams {
    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if !(32..=1024).contains(&self.matrix_size) {
            return Err(Error::invalid(format!(
                "phantom matrix_size must be 32–1024 pixels, got {}",
                self.matrix_size
            )));
        }
        if !(1..=128).contains(&self.slice_count) {
            return Err(Error::invalid(format!(
                "phantom slice_count must be 1–128, got {}",
                self.slice_count
            )));
        }
        let ranged = [
            ("pixel_spacing_mm", self.pixel_spacing_mm, 0.3, 5.0),
            ("slice_spacing_mm", self.slice_spacing_mm, 0.5, 20.0),
            ("noise_level", self.noise_level, 0.0, 0.5),
        ];
        for (name, value, lo, hi) in ranged {
            // `contains` is false for NaN, so non-finite values are refused too.
            if !(lo..=hi).contains(&value) {
                return Err(Error::invalid(format!(
                    "phantom {name} must be within {lo}–{hi}, got {value}"
                )));
            }
        }
        Ok(())
    }
}

/// A generated case: an LGE image and its ground-truth labels on the same grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Phantom {
    /// LGE magnitude image, 0–1000-ish.
    pub image: Volume<f32>,
    /// Labels in [`LABEL_SCHEME`] (EMIDEC + RV = 5).
    pub labels: Volume<i32>,
}

/// Independent random streams, so that adding draws to one part (say, the
/// noise) never changes another (the anatomy).
const STREAM_ANATOMY: u64 = 1;
const STREAM_SCAN: u64 = 2;
const STREAM_IMAGE: u64 = 3;

/// Generates the phantom described by `params`.
///
/// ```
/// let params = claim::phantom::PhantomParams { seed: 7, with_scar: true, ..Default::default() };
/// let case = claim::phantom::generate(&params)?;
/// assert_eq!(case.labels.dims(), [192, 192, 10]);
/// assert!(case.labels.data.iter().any(|&l| l == 3));
/// # Ok::<(), claim::Error>(())
/// ```
pub fn generate(params: &PhantomParams) -> Result<Phantom> {
    params.validate()?;
    let root = Rng::new(params.seed);
    let anatomy = Anatomy::draw(&mut root.fork(STREAM_ANATOMY), params.with_scar);
    let geometry = scan_plan(&anatomy, params, &mut root.fork(STREAM_SCAN));
    geometry.validate("phantom geometry")?;

    let dims = [params.matrix_size, params.matrix_size, params.slice_count];
    let count = checked_voxel_count(dims)?;
    // The voxel limit covers volumes claim makes, not only those it reads.
    crate::limits::check_voxels(&dims.map(|d| d as u64), "the phantom volume")?;
    let [ni, nj, nk] = dims;
    let mut materials = Vec::with_capacity(count);
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let world = geometry.index_to_world([i as f64, j as f64, k as f64]);
                materials.push(anatomy.material_at(world));
            }
        }
    }
    confine_mvo(&mut materials, dims);

    let labels: Vec<i32> = materials.iter().map(|m| label_of(*m)).collect();
    let heart_centre = anatomy.axis_point(anatomy.lv_length() * 0.5);
    let image = imaging::render(
        &materials,
        dims,
        &geometry,
        heart_centre,
        params.noise_level,
        &mut root.fork(STREAM_IMAGE),
    );
    Ok(Phantom {
        image: Volume::from_vec(dims, image, geometry)?,
        labels: Volume::from_vec(dims, labels, geometry)?,
    })
}

/// Places the short-axis stack: in-plane axes in the short-axis plane
/// (rotated by a seeded angle), k from apex to base, the first slice inside
/// the apex cap and the long axis near the centre of the field of view.
fn scan_plan(anatomy: &Anatomy, params: &PhantomParams, rng: &mut Rng) -> Geometry {
    let frame = &anatomy.frame;
    let rotation = rng.uniform_range(-15.0, 15.0).to_radians();
    let (sin_r, cos_r) = rotation.sin_cos();
    let mut i_axis = [0.0; 3];
    let mut j_axis = [0.0; 3];
    let mut k_axis = [0.0; 3];
    for a in 0..3 {
        i_axis[a] = cos_r * frame.lateral[a] + sin_r * frame.anterior[a];
        j_axis[a] = sin_r * frame.lateral[a] - cos_r * frame.anterior[a];
        k_axis[a] = -frame.apexward[a];
    }
    let first_slice_s = anatomy.apex_wall() * rng.uniform_range(0.35, 0.6);
    let offset_mm = [
        rng.uniform_range(-10.0, 10.0),
        rng.uniform_range(-10.0, 10.0),
    ];

    let spacing = params.pixel_spacing_mm;
    let centre = (params.matrix_size as f64 - 1.0) / 2.0;
    // The long axis pierces slice 0 at pixel (centre + offset) of the grid.
    let on_axis = anatomy.axis_point(first_slice_s);
    let mut origin = on_axis;
    for a in 0..3 {
        origin[a] -= (centre * spacing + offset_mm[0]) * i_axis[a]
            + (centre * spacing + offset_mm[1]) * j_axis[a];
    }
    let mut direction = [[0.0; 3]; 3];
    for (row, line) in direction.iter_mut().enumerate() {
        *line = [i_axis[row], j_axis[row], k_axis[row]];
    }
    Geometry {
        spacing: [spacing, spacing, params.slice_spacing_mm],
        origin,
        direction,
    }
}

/// Keeps MVO strictly inside the scar: an MVO voxel with an in-slice
/// neighbour that is not lesion (or lies outside the grid) becomes scar, so
/// every no-reflow core is rimmed by enhancement, as in real infarcts.
fn confine_mvo(materials: &mut [Material], dims: [usize; 3]) {
    let [ni, nj, nk] = dims;
    let is_lesion = |m: Material| matches!(m, Material::Scar | Material::Mvo);
    let mut exposed = Vec::new();
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let n = (k * nj + j) * ni + i;
                if materials[n] != Material::Mvo {
                    continue;
                }
                let rimmed = i > 0
                    && j > 0
                    && i + 1 < ni
                    && j + 1 < nj
                    && [n - 1, n + 1, n - ni, n + ni]
                        .iter()
                        .all(|&m| is_lesion(materials[m]));
                if !rimmed {
                    exposed.push(n);
                }
            }
        }
    }
    // Demoting MVO to scar keeps it a lesion, so one pass suffices.
    for n in exposed {
        materials[n] = Material::Scar;
    }
}

/// The label of a material in [`LABEL_SCHEME`].
fn label_of(material: Material) -> i32 {
    match material {
        Material::LvBlood => LABEL_SCHEME.lv_cavity,
        Material::Myocardium => LABEL_SCHEME.myocardium,
        Material::Scar => LABEL_SCHEME.scar,
        Material::Mvo => LABEL_SCHEME.mvo,
        Material::RvBlood => LABEL_SCHEME.rv.unwrap_or(0),
        Material::Air
        | Material::Lung
        | Material::SoftTissue
        | Material::Liver
        | Material::Bone
        | Material::AorticBlood
        | Material::Fat
        | Material::RvWall => 0,
    }
}

#[cfg(test)]
mod tests;
