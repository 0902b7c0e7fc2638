//! The label map as point clouds in world millimetres: LV cavity, whole
//! myocardium and RV, after checking every label against the scheme.

use super::linalg::{add, scale, Vec3};
use crate::error::{Error, Result};
use crate::volume::{CropPlacement, LabelScheme, Tissue, Volume};
use std::collections::BTreeMap;

/// Per-voxel class codes of [`LabelCloud::class`].
pub(super) const CLASS_BACKGROUND: u8 = 0;
pub(super) const CLASS_CAVITY: u8 = 1;
pub(super) const CLASS_MYOCARDIUM: u8 = 2;
pub(super) const CLASS_RV: u8 = 3;

/// One myocardium voxel: where it is in the grid and in the world.
#[derive(Debug, Clone, Copy)]
pub(super) struct MyoPoint {
    pub index: [usize; 3],
    pub world: Vec3,
}

/// The voxels the parcellation works on, in world coordinates.
pub(super) struct LabelCloud {
    pub dims: [usize; 3],
    /// Class code per voxel, flat, i fastest.
    pub class: Vec<u8>,
    pub cavity: Vec<Vec3>,
    pub myocardium: Vec<MyoPoint>,
    pub rv: Vec<Vec3>,
    /// World offset of one voxel step along i, j and k (direction · spacing).
    pub steps: [Vec3; 3],
    pub spacing: [f64; 3],
}

impl LabelCloud {
    /// Classifies every voxel of `labels`, the box `placement` of a full
    /// map; labels the scheme does not name are an error that lists them,
    /// as are maps without myocardium or without cavity.
    ///
    /// World positions are computed from the full map's geometry and full
    /// indices, so a crop gives bit for bit the positions of the whole map.
    pub(super) fn collect(
        labels: &Volume<i32>,
        placement: &CropPlacement,
        scheme: &LabelScheme,
    ) -> Result<LabelCloud> {
        let dims = labels.dims();
        let geometry = &placement.full_geometry;
        let [oi, oj, ok] = placement.offset;
        let steps =
            [0, 1, 2].map(|axis| scale(geometry.axis_direction(axis), geometry.spacing[axis]));
        let world = |i: usize, j: usize, k: usize| {
            add(
                geometry.origin,
                add(
                    scale(steps[0], (i + oi) as f64),
                    add(
                        scale(steps[1], (j + oj) as f64),
                        scale(steps[2], (k + ok) as f64),
                    ),
                ),
            )
        };
        let mut class =
            crate::limits::try_filled(labels.len(), CLASS_BACKGROUND, "the AHA voxel classes")?;
        let mut cavity = Vec::new();
        let mut myocardium = Vec::new();
        let mut rv = Vec::new();
        // value → (voxel count, first voxel) for labels outside the scheme.
        let mut unknown: BTreeMap<i32, (usize, [usize; 3])> = BTreeMap::new();
        for ((k, j, i), &value) in labels.data.indexed_iter() {
            let flat = i + dims[0] * (j + dims[1] * k);
            let code = match scheme.tissue(value) {
                Some(Tissue::Background) => CLASS_BACKGROUND,
                Some(Tissue::LvCavity) => {
                    cavity.push(world(i, j, k));
                    CLASS_CAVITY
                }
                Some(Tissue::Myocardium | Tissue::Scar | Tissue::Mvo) => {
                    myocardium.push(MyoPoint {
                        index: [i, j, k],
                        world: world(i, j, k),
                    });
                    CLASS_MYOCARDIUM
                }
                Some(Tissue::Rv) => {
                    rv.push(world(i, j, k));
                    CLASS_RV
                }
                None => {
                    let first = placement.full_index([i, j, k]);
                    unknown.entry(value).or_insert((0, first)).0 += 1;
                    CLASS_BACKGROUND
                }
            };
            if let Some(slot) = class.get_mut(flat) {
                *slot = code;
            }
        }
        if !unknown.is_empty() {
            let listed: Vec<String> = unknown
                .iter()
                .take(8)
                .map(|(value, (count, at))| {
                    format!("{value} ({count} voxels, first at i,j,k = {at:?})")
                })
                .collect();
            let more = if unknown.len() > 8 {
                format!(" and {} more values", unknown.len() - 8)
            } else {
                String::new()
            };
            return Err(Error::invalid(format!(
                "label map holds labels the label scheme does not name: {}{more}; the scheme has {}",
                listed.join(", "),
                describe_scheme(scheme)
            )));
        }
        if myocardium.is_empty() {
            return Err(Error::invalid(format!(
                "label map has no myocardium voxels (labels {}, {} or {}): AHA parcellation needs the LV myocardium",
                scheme.myocardium, scheme.scar, scheme.mvo
            )));
        }
        if cavity.is_empty() {
            return Err(Error::invalid(format!(
                "label map has no LV cavity voxels (label {}): AHA parcellation needs the LV blood pool to find the long axis and the apex",
                scheme.lv_cavity
            )));
        }
        Ok(LabelCloud {
            dims,
            class,
            cavity,
            myocardium,
            rv,
            steps,
            spacing: geometry.spacing,
        })
    }

    /// Class of voxel `(i, j, k)` given as signed indices; outside the grid
    /// is background.
    pub(super) fn class_at(&self, i: isize, j: isize, k: isize) -> u8 {
        let inside = |x: isize, n: usize| usize::try_from(x).ok().filter(|&x| x < n);
        match (
            inside(i, self.dims[0]),
            inside(j, self.dims[1]),
            inside(k, self.dims[2]),
        ) {
            (Some(i), Some(j), Some(k)) => self
                .class
                .get(i + self.dims[0] * (j + self.dims[1] * k))
                .copied()
                .unwrap_or(CLASS_BACKGROUND),
            _ => CLASS_BACKGROUND,
        }
    }

    /// Volume of one voxel (mm³).
    pub(super) fn voxel_volume(&self) -> f64 {
        self.spacing.iter().product()
    }

    /// Extent (mm) of one voxel projected on the unit direction `axis`,
    /// as the width of a box with the same variance as the exact projection
    /// (a sum of three boxes), so thick slices spread their volume honestly.
    pub(super) fn projected_voxel_width(&self, axis: Vec3) -> f64 {
        self.steps
            .iter()
            .map(|s| {
                let w = super::linalg::dot(*s, axis);
                w * w
            })
            .sum::<f64>()
            .sqrt()
    }
}

fn describe_scheme(scheme: &LabelScheme) -> String {
    let mut text = format!(
        "LV cavity {}, myocardium {}, scar {}, MVO {}",
        scheme.lv_cavity, scheme.myocardium, scheme.scar, scheme.mvo
    );
    match scheme.rv {
        Some(rv) => text.push_str(&format!(", RV {rv}")),
        None => text.push_str(" and no RV label"),
    }
    text
}
