//! Scar mask generation: parameters, the reusable per-heart context, results.
//!
//! ```no_run
//! use claim::smile::generate::{SmileContext, SmileParams};
//! use claim::smile::{Pattern, Territory};
//! # fn run(labels: &claim::Volume<i32>) -> claim::Result<()> {
//! let params = SmileParams::default()
//!     .with_pattern(Pattern::Ischemic)
//!     .with_territory(Territory::Lad)
//!     .with_burden(0.15);
//! let ctx = SmileContext::new(labels, &params)?; // parcellates once
//! for seed in 0..10 {
//!     let draw = ctx.draw(seed)?;
//!     println!("seed {seed}: burden {:.3}", draw.burden);
//! }
//! # Ok(()) }
//! ```
//!
//! Input scar and MVO voxels are first reset to healthy myocardium: a draw
//! replaces any lesion the map had. Every other voxel is copied unchanged,
//! and the output uses the input's label scheme.

use super::aha::{self, AhaParams};
use super::pattern::{self, Draw, Pattern};
use super::stats::check_segment_map;
use super::territory::{Territory, SEGMENT_COUNT};
use crate::error::{Error, Result};
use crate::imgproc::bounding_box;
use crate::imgproc::components::{neighbour_index, unflatten, Connectivity};
use crate::imgproc::distance::squared_distance_mm;
use crate::rng::Rng;
use crate::volume::{CropPlacement, CroppedLabels, Geometry, LabelScheme, Volume};
use serde::Serialize;

/// Parameters of a scar draw. Build with [`SmileParams::default`] and the
/// `with_*` methods; every field is checked by [`SmileParams::validate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmileParams {
    /// Scar pattern (default [`Pattern::Ischemic`]).
    pub pattern: Pattern,
    /// Culprit territory for the ischaemic pattern (default
    /// [`Territory::Any`]: drawn by [`Territory::CULPRIT_PRIOR`]). Must stay
    /// `Any` for the other patterns.
    pub territory: Territory,
    /// Lesion (scar + MVO) volume as a fraction 0–1 of the whole myocardium;
    /// the draw hits it within ±0.02 (the ischaemic and non-ischaemic
    /// patterns hit it to the voxel). `None` draws it: uniform 0.05–0.40
    /// (ischaemic, capped at 90 % of the culprit territory), 0.03–0.15
    /// (non-ischaemic); for [`Pattern::Claim`] `None` keeps the upstream
    /// threshold of 0.3 and whatever burden it gives.
    pub burden: Option<f64>,
    /// Ischaemic only: how deep the wavefront reaches at the infarct's core,
    /// as a fraction 0–1 of the local wall thickness (0 = the innermost
    /// voxel layer only, 1 = transmural); the scar thins towards its lateral
    /// border. `None` draws it uniform in 0.3–1.0 (0.75–1.0 with `mvo`).
    /// Deepened when the culprit territory cannot hold the burden otherwise.
    pub transmurality: Option<f64>,
    /// Ischaemic only: add a microvascular-obstruction core (10–25 % of the
    /// lesion; less if the scar has less interior) at the scar's
    /// sub-endocardial centre, wrapped in scar: no MVO voxel shares a face
    /// with healthy myocardium. Needs a transmurality of at least 0.5 when
    /// one is given. Default false.
    pub mvo: bool,
    /// Label scheme of the input and output maps (default EMIDEC).
    pub labels: LabelScheme,
    /// Options of the AHA parcellation that [`generate`] and
    /// [`SmileContext::new`] run; its `labels` field is replaced by
    /// [`SmileParams::labels`].
    pub aha: AhaParams,
}

impl Default for SmileParams {
    fn default() -> Self {
        SmileParams {
            pattern: Pattern::Ischemic,
            territory: Territory::Any,
            burden: None,
            transmurality: None,
            mvo: false,
            labels: LabelScheme::EMIDEC,
            aha: AhaParams::default(),
        }
    }
}

impl SmileParams {
    /// Sets the pattern.
    pub fn with_pattern(mut self, pattern: Pattern) -> Self {
        self.pattern = pattern;
        self
    }
    /// Sets the culprit territory (ischaemic pattern).
    pub fn with_territory(mut self, territory: Territory) -> Self {
        self.territory = territory;
        self
    }
    /// Sets the lesion burden (fraction 0–1 of the myocardium).
    pub fn with_burden(mut self, burden: f64) -> Self {
        self.burden = Some(burden);
        self
    }
    /// Sets the transmurality (fraction 0–1 of the wall; ischaemic pattern).
    pub fn with_transmurality(mut self, transmurality: f64) -> Self {
        self.transmurality = Some(transmurality);
        self
    }
    /// Turns the MVO core on or off (ischaemic pattern).
    pub fn with_mvo(mut self, mvo: bool) -> Self {
        self.mvo = mvo;
        self
    }
    /// Sets the label scheme of input and output.
    pub fn with_labels(mut self, labels: LabelScheme) -> Self {
        self.labels = labels;
        self
    }
    /// Sets the parcellation options.
    pub fn with_aha(mut self, aha: AhaParams) -> Self {
        self.aha = aha;
        self
    }

    /// Checks every field: burden and transmurality finite and in [0, 1],
    /// territory / transmurality / MVO only with the ischaemic pattern, MVO
    /// only with a transmurality ≥ 0.5, a valid label scheme.
    pub fn validate(&self) -> Result<()> {
        self.labels.validate()?;
        self.aha_params().validate()?;
        if let Some(b) = self.burden {
            if !b.is_finite() || !(0.0..=1.0).contains(&b) {
                return Err(Error::invalid(format!(
                    "SMILE burden must be a fraction of the myocardium in [0, 1], got {b}"
                )));
            }
        }
        if let Some(t) = self.transmurality {
            if !t.is_finite() || !(0.0..=1.0).contains(&t) {
                return Err(Error::invalid(format!(
                    "SMILE transmurality must be a fraction of the wall in [0, 1], got {t}"
                )));
            }
        }
        if self.pattern != Pattern::Ischemic {
            let only_ischemic = [
                ("territory", self.territory != Territory::Any),
                ("transmurality", self.transmurality.is_some()),
                ("mvo", self.mvo),
            ];
            if let Some((name, _)) = only_ischemic.iter().find(|(_, set)| *set) {
                return Err(Error::invalid(format!(
                    "SMILE {name} applies to the ischemic pattern only, not to {}",
                    self.pattern
                )));
            }
        }
        if self.mvo {
            if let Some(t) = self
                .transmurality
                .filter(|t| *t < pattern::MVO_MIN_TRANSMURALITY)
            {
                return Err(Error::invalid(format!(
                    "SMILE mvo needs a transmural scar: transmurality ≥ {}, got {t}",
                    pattern::MVO_MIN_TRANSMURALITY
                )));
            }
        }
        Ok(())
    }

    /// The parcellation options with this scheme.
    pub fn aha_params(&self) -> AhaParams {
        AhaParams {
            labels: self.labels,
            ..self.aha
        }
    }
}

/// One generated scar mask and what was drawn to make it.
#[derive(Debug, Clone, Serialize)]
pub struct SmileResult {
    /// The input map with the lesion written in: myocardium voxels relabelled
    /// scar / MVO, every other voxel unchanged (input scar / MVO reset to
    /// myocardium first). Same dims, geometry and label scheme as the input.
    #[serde(skip)]
    pub labels: Volume<i32>,
    /// The seed of the draw.
    pub seed: u64,
    /// The pattern drawn.
    pub pattern: Pattern,
    /// The culprit artery (ischaemic pattern), never `Any`.
    pub territory: Option<Territory>,
    /// Segments the draw centred the lesion on: the contiguous culprit
    /// segments (ischaemic), the preferred segment(s) (non-ischaemic) or the
    /// upstream segment pick (CLAIM preset). The lesion may reach beyond
    /// them; [`crate::smile::stats`] says where it is.
    pub segments_chosen: Vec<u8>,
    /// The burden aimed at (asked or drawn); `None` for the CLAIM preset
    /// without a burden.
    pub burden_target: Option<f64>,
    /// The burden reached: (scar + MVO) / whole myocardium.
    pub burden: f64,
    /// The transmurality used (ischaemic): the asked or drawn one, raised
    /// when the territory could not hold the burden otherwise.
    pub transmurality: Option<f64>,
    /// Ischaemic: fraction of the lesion inside the culprit territory (below
    /// 1 only when the burden exceeds the whole territory).
    pub territory_fraction: Option<f64>,
    /// Voxels labelled scar.
    pub scar_voxels: usize,
    /// Voxels labelled MVO.
    pub mvo_voxels: usize,
}

/// Sentinel of [`MyoGrid::slot`] for voxels outside the myocardium.
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// One voxel of the whole myocardium, with everything a draw needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MyoVoxel {
    /// Flat index in the crop.
    pub crop: u32,
    /// Flat index in the full volume.
    pub full: usize,
    /// Position (mm) in the crop's voxel frame: index × spacing.
    pub pos: [f32; 3],
    /// Normalised transmural depth: distance to the cavity / (distance to
    /// the cavity + distance to the outside), 0 endocardium → 1 epicardium.
    pub depth: f32,
    /// AHA segment 1–17, 0 when the segment map leaves it unassigned.
    pub segment: u8,
    /// Shares a face with the LV cavity.
    pub endocardial: bool,
}

/// The myocardium of one heart, cropped to its bounding box, precomputed
/// once per context.
#[derive(Debug, Clone)]
pub(crate) struct MyoGrid {
    /// Crop dims `[ni, nj, nk]`.
    pub dims: [usize; 3],
    /// Geometry of the crop.
    pub geometry: Geometry,
    /// Crop flat index → index into `voxels`, or [`NO_SLOT`].
    pub slot: Vec<u32>,
    /// Myocardium voxels in crop scan order.
    pub voxels: Vec<MyoVoxel>,
    /// `segment_distance[(s − 1) * n + v]`: mm from voxel `v` to the nearest
    /// voxel of segment `s` (0 inside it; infinite when `s` is absent).
    pub segment_distance: Vec<f32>,
    /// Voxel count per segment (index = segment − 1).
    pub segment_counts: [usize; SEGMENT_COUNT],
    /// Unit long axis (apex → base) in the crop's mm frame.
    pub long_axis: [f64; 3],
    /// Crop extent in mm.
    pub extent_mm: [f64; 3],
}

impl MyoGrid {
    /// Distance (mm) from voxel `v` to segment `segment` (1–17).
    pub fn distance_to_segment(&self, segment: u8, v: usize) -> f32 {
        usize::from(segment)
            .checked_sub(1)
            .and_then(|s| self.segment_distance.get(s * self.voxels.len() + v))
            .copied()
            .unwrap_or(f32::INFINITY)
    }

    /// Voxel count of segment 1–17 (0 otherwise).
    pub fn segment_count(&self, segment: u8) -> usize {
        usize::from(segment)
            .checked_sub(1)
            .and_then(|s| self.segment_counts.get(s))
            .copied()
            .unwrap_or(0)
    }

    /// Indices (into `voxels`) of the myocardium neighbours of voxel `v`.
    pub fn neighbours(&self, v: usize, offsets: &[[isize; 3]], out: &mut Vec<usize>) {
        out.clear();
        let Some(voxel) = self.voxels.get(v) else {
            return;
        };
        let n = voxel.crop as usize;
        let ijk = unflatten(self.dims, n);
        let interior = (0..3).all(|a| ijk[a] > 0 && ijk[a] + 1 < self.dims[a]);
        let (sj, sk) = (
            self.dims[0] as isize,
            (self.dims[0] * self.dims[1]) as isize,
        );
        for off in offsets {
            // Away from the crop's faces every neighbour exists: skip the bounds checks.
            let m = if interior {
                n.checked_add_signed(off[0] + off[1] * sj + off[2] * sk)
            } else {
                neighbour_index(self.dims, ijk, *off)
            };
            if let Some(&s) = m.and_then(|m| self.slot.get(m)) {
                if s != NO_SLOT {
                    out.push(s as usize);
                }
            }
        }
    }
}

/// Precomputed data of one heart and one parameter set: draw many masks
/// cheaply with [`SmileContext::draw`]. `Sync`: draws may run on several
/// threads at once, each seed giving the same mask on any thread.
#[derive(Debug, Clone)]
pub struct SmileContext {
    params: SmileParams,
    /// The input labels (of the box `placement`) with lesions reset.
    base_labels: Volume<i32>,
    /// Where `base_labels` sit in the map the caller sees.
    placement: CropPlacement,
    grid: MyoGrid,
    /// Rank-normalised blob field over the crop (CLAIM preset only).
    blobs: Option<Volume<f32>>,
}

/// Crop margin (voxels) around the myocardium: room for the outside class
/// of the depth map, for the CLAIM preset's 7×7 erosion and its smoothing.
const CROP_MARGIN: [usize; 3] = crate::volume::LABEL_CROP_MARGIN;

/// Blob σ of the CLAIM preset: porespy's mean(shape)/(40·blobiness) on the
/// 140×140×56 atlas = 2.8 voxels of 1.25 mm.
const CLAIM_BLOB_SIGMA_MM: f64 = 3.5;

/// The upstream generator seeds porespy's `blobs` with this constant
/// (`reference/smile.md`); the CLAIM preset keeps that choice, so variation
/// between its draws comes from the segment pick, porosities and kernels.
pub const CLAIM_BLOB_SEED: u64 = 1001;

impl SmileContext {
    /// Parcellates `labels` with [`aha::aha_segments`] and prepares draws.
    /// Errors as [`SmileContext::with_segments`], plus those of the
    /// parcellation.
    pub fn new(labels: &Volume<i32>, params: &SmileParams) -> Result<Self> {
        params.validate()?;
        check_labels(labels, &params.labels)?;
        let segments = aha::aha_segments(labels, &params.aha_params())?;
        SmileContext::with_segments(labels, &segments, params)
    }

    /// Prepares draws from a precomputed segment map (`0` = no segment,
    /// 1–17 AHA segments; only its values on the myocardium are used).
    ///
    /// Errors (`InvalidArgument`): invalid parameters or geometry; labels
    /// the scheme does not name; no myocardium; no LV cavity; a cavity not
    /// touching the myocardium; a segment map of other dims or geometry, or
    /// with values above 17.
    pub fn with_segments(
        labels: &Volume<i32>,
        segments: &Volume<u8>,
        params: &SmileParams,
    ) -> Result<Self> {
        let placement = CropPlacement::whole(labels.dims(), labels.geometry);
        SmileContext::prepare(labels, placement, segments, params)
    }

    /// [`SmileContext::new`] for a label map cut to its heart's box
    /// ([`CroppedLabels::from_image`]): the same draws, holding only the
    /// box. [`SmileContext::draw_in_box`] gives draws without widening them
    /// to the whole map.
    pub fn new_cropped(map: &CroppedLabels, params: &SmileParams) -> Result<Self> {
        params.validate()?;
        check_labels(&map.labels, &params.labels)?;
        let segments = aha::parcellate_cropped(map, &params.aha_params())?.segments;
        SmileContext::with_segments_cropped(map, &segments, params)
    }

    /// [`SmileContext::with_segments`] for a label map cut to its heart's
    /// box; `segments` is the whole map's segment map.
    pub fn with_segments_cropped(
        map: &CroppedLabels,
        segments: &Volume<u8>,
        params: &SmileParams,
    ) -> Result<Self> {
        let segments = super::stats::crop_segment_map(map, segments)?;
        SmileContext::prepare(&map.labels, map.placement, &segments, params)
    }

    fn prepare(
        labels: &Volume<i32>,
        placement: CropPlacement,
        segments: &Volume<u8>,
        params: &SmileParams,
    ) -> Result<Self> {
        params.validate()?;
        placement.full_geometry.validate("label map geometry")?;
        check_labels(labels, &params.labels)?;
        check_segment_map(labels, segments)?;
        let scheme = params.labels;
        let base_labels = labels.map(|l| {
            if scheme.is_lesion(*l) {
                scheme.myocardium
            } else {
                *l
            }
        });
        let grid = build_grid(&base_labels, segments, &scheme)?;
        let blobs = match params.pattern {
            Pattern::Claim => Some(super::field::blob_ranks(
                grid.dims,
                grid.geometry,
                CLAIM_BLOB_SIGMA_MM,
                CLAIM_BLOB_SEED,
            )?),
            _ => None,
        };
        Ok(SmileContext {
            params: *params,
            base_labels,
            placement,
            grid,
            blobs,
        })
    }

    /// The parameters of this context.
    pub fn params(&self) -> &SmileParams {
        &self.params
    }

    /// Number of voxels of the whole myocardium.
    pub fn myocardium_voxels(&self) -> usize {
        self.grid.voxels.len()
    }

    /// Where the context's labels sit in the caller's map: the whole map,
    /// or the box of a context made from a [`CroppedLabels`].
    pub fn placement(&self) -> &CropPlacement {
        &self.placement
    }

    /// Draws one mask. The same seed gives the same mask on every run,
    /// machine and thread. The result's labels cover the whole map.
    pub fn draw(&self, seed: u64) -> Result<SmileResult> {
        let mut result = self.draw_in_box(seed)?;
        if !self.placement.is_whole() {
            result.labels = self
                .placement
                .uncrop(&result.labels, "the SMILE label map")?;
        }
        Ok(result)
    }

    /// [`SmileContext::draw`], with the labels of the box
    /// [`SmileContext::placement`] only (the whole map for a context made
    /// from a whole map): outside the box every voxel is 0.
    pub fn draw_in_box(&self, seed: u64) -> Result<SmileResult> {
        let rng = Rng::new(seed);
        let draw = match self.params.pattern {
            Pattern::Ischemic => pattern::ischemic(&self.grid, &self.params, &rng)?,
            Pattern::Midwall | Pattern::Epicardial | Pattern::Insertion => {
                pattern::non_ischemic(&self.grid, &self.params, &rng)?
            }
            Pattern::Claim => {
                let blobs = self.blobs.as_ref().ok_or_else(|| {
                    Error::Internal("CLAIM preset context without its blob field".into())
                })?;
                pattern::claim(&self.grid, blobs, &self.params, &rng)?
            }
        };
        self.finish(seed, draw)
    }

    fn finish(&self, seed: u64, draw: Draw) -> Result<SmileResult> {
        let scheme = self.params.labels;
        let mut labels = self.base_labels.clone();
        let flat = labels
            .data
            .as_slice_mut()
            .ok_or_else(|| Error::Internal("label volume is not contiguous".into()))?;
        let (mut scar_voxels, mut mvo_voxels, mut in_territory) = (0usize, 0usize, 0usize);
        for (voxel, lesion) in self.grid.voxels.iter().zip(&draw.lesion) {
            let label = match lesion {
                pattern::Lesion::Healthy => continue,
                pattern::Lesion::Scar => {
                    scar_voxels += 1;
                    scheme.scar
                }
                pattern::Lesion::Mvo => {
                    mvo_voxels += 1;
                    scheme.mvo
                }
            };
            if let Some(slot) = flat.get_mut(voxel.full) {
                *slot = label;
            }
            if draw.territory.is_some_and(|t| t.contains(voxel.segment)) {
                in_territory += 1;
            }
        }
        let lesion = scar_voxels + mvo_voxels;
        let myocardium = self.grid.voxels.len().max(1);
        Ok(SmileResult {
            labels,
            seed,
            pattern: self.params.pattern,
            territory: draw.territory,
            segments_chosen: draw.segments,
            burden_target: draw.burden_target,
            burden: lesion as f64 / myocardium as f64,
            transmurality: draw.transmurality,
            territory_fraction: draw.territory.map(|_| {
                if lesion == 0 {
                    1.0
                } else {
                    in_territory as f64 / lesion as f64
                }
            }),
            scar_voxels,
            mvo_voxels,
        })
    }
}

/// One mask for `labels`: parcellates with [`aha::aha_segments`], then draws
/// with `seed`. For several draws of one heart build a [`SmileContext`].
pub fn generate(labels: &Volume<i32>, params: &SmileParams, seed: u64) -> Result<SmileResult> {
    SmileContext::new(labels, params)?.draw(seed)
}

/// One mask for `labels` with a precomputed segment map (e.g. an atlas's
/// own segments). See [`SmileContext::with_segments`].
pub fn generate_with_segments(
    labels: &Volume<i32>,
    segments: &Volume<u8>,
    params: &SmileParams,
    seed: u64,
) -> Result<SmileResult> {
    SmileContext::with_segments(labels, segments, params)?.draw(seed)
}

/// Errors on labels the scheme does not name (listing up to five of them).
fn check_labels(labels: &Volume<i32>, scheme: &LabelScheme) -> Result<()> {
    let mut unknown: Vec<i32> = Vec::new();
    for l in labels.data.iter() {
        if scheme.tissue(*l).is_none() && !unknown.contains(l) {
            unknown.push(*l);
            if unknown.len() == 5 {
                break;
            }
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    Err(Error::invalid(format!(
        "label map holds labels {unknown:?} that the scheme (LV {}, myocardium {}, scar {}, MVO {}, RV {:?}) does not name",
        scheme.lv_cavity, scheme.myocardium, scheme.scar, scheme.mvo, scheme.rv
    )))
}

fn build_grid(
    labels: &Volume<i32>,
    segments: &Volume<u8>,
    scheme: &LabelScheme,
) -> Result<MyoGrid> {
    let full_dims = labels.dims();
    let bbox = bounding_box(labels, |l| scheme.is_myocardium(*l)).ok_or_else(|| {
        Error::invalid(format!(
            "label map has no myocardium (label {})",
            scheme.myocardium
        ))
    })?;
    if !labels.data.iter().any(|l| *l == scheme.lv_cavity) {
        return Err(Error::invalid(format!(
            "label map has no LV cavity (label {}): the scar wavefront starts at the endocardium",
            scheme.lv_cavity
        )));
    }
    let bbox = bbox.expanded(CROP_MARGIN, full_dims);
    let crop_labels = crate::imgproc::crop(labels, &bbox)?;
    let crop_segments = crate::imgproc::crop(segments, &bbox)?;
    let dims = crop_labels.dims();
    let spacing = labels.geometry.spacing;
    let lab = crop_labels.as_slice()?;
    let seg = crop_segments.as_slice()?;

    let is_myo: Vec<bool> = lab.iter().map(|l| scheme.is_myocardium(*l)).collect();
    let is_cavity: Vec<bool> = lab.iter().map(|l| *l == scheme.lv_cavity).collect();
    let is_outside: Vec<bool> = lab
        .iter()
        .map(|l| !scheme.is_myocardium(*l) && *l != scheme.lv_cavity)
        .collect();
    let to_cavity = squared_distance_mm(&is_cavity, dims, spacing)?;
    let to_outside = squared_distance_mm(&is_outside, dims, spacing)?;

    let faces = Connectivity::Face6.offsets();
    let mut slot = vec![NO_SLOT; lab.len()];
    let mut voxels = Vec::new();
    let mut segment_counts = [0usize; SEGMENT_COUNT];
    let st_full = [1usize, full_dims[0], full_dims[0] * full_dims[1]];
    for n in 0..lab.len() {
        if !is_myo[n] {
            continue;
        }
        let ijk = unflatten(dims, n);
        let endocardial = faces
            .iter()
            .any(|off| neighbour_index(dims, ijk, *off).is_some_and(|m| is_cavity[m]));
        let (d_endo, d_epi) = (to_cavity[n].sqrt(), to_outside[n].sqrt());
        let depth = match (d_endo.is_finite(), d_epi.is_finite()) {
            (true, true) => d_endo / (d_endo + d_epi),
            (true, false) => 0.0,
            (false, true) => 1.0,
            (false, false) => 0.5,
        };
        let segment = seg[n];
        if let Some(c) = usize::from(segment)
            .checked_sub(1)
            .and_then(|s| segment_counts.get_mut(s))
        {
            *c += 1;
        }
        let full = (ijk[0] + bbox.lo[0]) * st_full[0]
            + (ijk[1] + bbox.lo[1]) * st_full[1]
            + (ijk[2] + bbox.lo[2]) * st_full[2];
        slot[n] =
            u32::try_from(voxels.len()).map_err(|_| Error::invalid("myocardium too large"))?;
        voxels.push(MyoVoxel {
            crop: u32::try_from(n)
                .map_err(|_| Error::invalid("myocardium bounding box too large"))?,
            full,
            pos: [0, 1, 2].map(|a| (ijk[a] as f64 * spacing[a]) as f32),
            depth: depth as f32,
            segment,
            endocardial,
        });
    }
    if !voxels.iter().any(|v| v.endocardial) {
        return Err(Error::invalid(
            "the LV cavity does not touch the myocardium: no endocardium to grow scar from",
        ));
    }

    let n_myo = voxels.len();
    let mut segment_distance = vec![f32::INFINITY; SEGMENT_COUNT * n_myo];
    for s in 1..=SEGMENT_COUNT as u8 {
        let idx = usize::from(s - 1);
        if segment_counts[idx] == 0 {
            continue;
        }
        let features: Vec<bool> = (0..lab.len()).map(|n| is_myo[n] && seg[n] == s).collect();
        let d2 = squared_distance_mm(&features, dims, spacing)?;
        for (v, voxel) in voxels.iter().enumerate() {
            segment_distance[idx * n_myo + v] = d2[voxel.crop as usize].sqrt() as f32;
        }
    }

    let long_axis = long_axis_from_segments(&voxels).unwrap_or([0.0, 0.0, 1.0]);
    let extent_mm = [0, 1, 2].map(|a| dims[a] as f64 * spacing[a]);
    Ok(MyoGrid {
        dims,
        geometry: crop_labels.geometry,
        slot,
        voxels,
        segment_distance,
        segment_counts,
        long_axis,
        extent_mm,
    })
}

/// Apex → base unit vector from the centroid of the apical ring and apex
/// (13–17) to the centroid of the basal ring (1–6); `None` when a ring is
/// missing.
fn long_axis_from_segments(voxels: &[MyoVoxel]) -> Option<[f64; 3]> {
    let centroid = |range: std::ops::RangeInclusive<u8>| {
        let mut sum = [0.0f64; 3];
        let mut n = 0usize;
        for v in voxels.iter().filter(|v| range.contains(&v.segment)) {
            for (total, coordinate) in sum.iter_mut().zip(v.pos) {
                *total += f64::from(coordinate);
            }
            n += 1;
        }
        (n > 0).then(|| sum.map(|s| s / n as f64))
    };
    let base = centroid(1..=6)?;
    let apex = centroid(13..=17)?;
    let d = [base[0] - apex[0], base[1] - apex[1], base[2] - apex[2]];
    let len = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
    (len > 1e-6 && len.is_finite()).then(|| d.map(|x| x / len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A phantom heart (EMIDEC with RV 5) in a field of view twice as wide
    /// as the phantom's, the rest 0.
    fn heart_in_a_wide_field() -> Volume<i32> {
        let heart = crate::phantom::generate(&crate::phantom::PhantomParams {
            seed: 5,
            matrix_size: 64,
            slice_count: 12,
            pixel_spacing_mm: 2.5,
            slice_spacing_mm: 8.0,
            ..crate::phantom::PhantomParams::default()
        })
        .unwrap()
        .labels;
        let [ni, nj, nk] = heart.dims();
        crate::testing::in_wide_field(&heart, [50, 10, 3], [2 * ni, 2 * nj, nk + 6])
    }

    /// A context made from the heart's box draws, seed for seed, the masks
    /// of the whole map's context, in every pattern, with and without MVO
    /// and with given segments.
    #[test]
    fn a_cropped_context_draws_the_whole_maps_masks() {
        let whole = heart_in_a_wide_field();
        let crop = CroppedLabels::from_image(
            &crate::volume::Image::I32(whole.clone()),
            crate::volume::LABEL_CROP_MARGIN,
        )
        .unwrap();
        assert!(crop.labels.len() * 3 < whole.len());
        for (pattern, mvo) in [
            (Pattern::Ischemic, true),
            (Pattern::Midwall, false),
            (Pattern::Insertion, false),
            (Pattern::Claim, false),
        ] {
            let mut params = SmileParams::default().with_pattern(pattern);
            params.mvo = mvo;
            params.labels = LabelScheme::EMIDEC_WITH_RV;
            params.aha.labels = LabelScheme::EMIDEC_WITH_RV;
            let full = SmileContext::new(&whole, &params).unwrap();
            let boxed = SmileContext::new_cropped(&crop, &params).unwrap();
            assert_eq!(boxed.placement(), &crop.placement);
            assert_eq!(full.myocardium_voxels(), boxed.myocardium_voxels());
            for seed in [1, 7] {
                let expected = full.draw(seed).unwrap();
                let in_box = boxed.draw_in_box(seed).unwrap();
                assert_eq!(in_box.labels.dims(), crop.placement.dims);
                let placed = crop.placement.uncrop(&in_box.labels, "test").unwrap();
                assert_eq!(placed, expected.labels, "{pattern} seed {seed}");
                assert_eq!(boxed.draw(seed).unwrap().labels, expected.labels);
                assert_eq!(
                    (
                        in_box.scar_voxels,
                        in_box.mvo_voxels,
                        in_box.segments_chosen
                    ),
                    (
                        expected.scar_voxels,
                        expected.mvo_voxels,
                        expected.segments_chosen
                    )
                );
            }
            let segments = aha::aha_segments(&whole, &params.aha_params()).unwrap();
            let given = SmileContext::with_segments_cropped(&crop, &segments, &params).unwrap();
            assert_eq!(given.draw(3).unwrap().labels, full.draw(3).unwrap().labels);
        }
        let emidec_rv = AhaParams {
            labels: LabelScheme::EMIDEC_WITH_RV,
            ..AhaParams::default()
        };
        let mut shifted = aha::aha_segments(&whole, &emidec_rv).unwrap();
        shifted.geometry.origin[0] += 1.0;
        let params = SmileParams {
            labels: LabelScheme::EMIDEC_WITH_RV,
            aha: emidec_rv,
            ..SmileParams::default()
        };
        let err = SmileContext::with_segments_cropped(&crop, &shifted, &params).unwrap_err();
        assert!(err.to_string().contains("geometry differs"), "{err}");
    }

    /// A ring of myocardium (radii 6–12 voxels) around a cavity, 6 slices
    /// of `slice_mm`, all one segment per quadrant of the basal ring.
    fn ring(slice_mm: f64) -> (Volume<i32>, Volume<u8>) {
        let dims = [30, 30, 6];
        let g = Geometry::with_spacing([1.5, 1.5, slice_mm]);
        let mut labels = Volume::<i32>::zeros(dims, g);
        let mut segments = Volume::<u8>::zeros(dims, g);
        for k in 0..6 {
            for j in 0..30 {
                for i in 0..30 {
                    let (x, y) = (i as f64 - 14.5, j as f64 - 14.5);
                    let r = (x * x + y * y).sqrt();
                    if r < 6.0 {
                        labels.data[[k, j, i]] = 1;
                    } else if r < 12.0 {
                        labels.data[[k, j, i]] = 2;
                        segments.data[[k, j, i]] = 1 + u8::from(x > 0.0) + 2 * u8::from(y > 0.0);
                    }
                }
            }
        }
        (labels, segments)
    }

    #[test]
    fn depth_runs_across_the_wall_in_plane_even_with_thick_slices() {
        for slice_mm in [1.5, 10.0] {
            let (labels, segments) = ring(slice_mm);
            let grid = build_grid(&labels, &segments, &LabelScheme::EMIDEC).unwrap();
            // Along a radius in a middle slice, depth rises from the cavity to the outside.
            let mut last = -1.0f32;
            for i in 21..27 {
                let full = i + 30 * (14 + 30 * 3);
                let v = grid.voxels.iter().find(|v| v.full == full).unwrap();
                assert!(
                    v.depth > last,
                    "slice {slice_mm} mm, i {i}: {} after {last}",
                    v.depth
                );
                last = v.depth;
                assert_eq!(v.endocardial, i == 21);
            }
            let first = grid
                .voxels
                .iter()
                .find(|v| v.full == 21 + 30 * (14 + 30 * 3))
                .unwrap();
            assert!(first.depth < 0.2 && last > 0.8, "{} … {last}", first.depth);
            assert_eq!(
                grid.voxels.len(),
                labels.data.iter().filter(|l| **l == 2).count()
            );
            assert_eq!(grid.segment_counts.iter().sum::<usize>(), grid.voxels.len());
            // Segment distances: 0 inside its own segment, infinite for an absent one.
            let v = grid.voxels.iter().position(|v| v.segment == 2).unwrap();
            assert_eq!(grid.distance_to_segment(2, v), 0.0);
            assert!(
                grid.distance_to_segment(5, v).is_infinite(),
                "absent segment"
            );
        }
    }
}
