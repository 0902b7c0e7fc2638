//! The field layout of every struct the library writes into a caller's
//! memory, so that the padding between fields is written as zeros.
//!
//! A Rust value's padding bytes are uninitialised: copied as they are, they
//! would hand the caller indeterminate bytes (valgrind reports them when a
//! caller hashes or compares a struct). [`super::args::write_struct`] and
//! `write_default` zero every byte that [`CLayout::fields`] leaves
//! uncovered. The test below checks that each list names every field.

use super::aha::claim_aha_params;
use super::diffusion::{claim_diffusion_info, claim_load_options, claim_tensor};
use super::labels::claim_label_scheme;
use super::segmentation::{
    claim_segmentation_params, claim_segmenter_info, claim_segmenter_options,
};
use super::smile::{claim_smile_info, claim_smile_params};
use super::stats::{claim_aha_segment_stats, claim_bullseye_options};
use super::synthesis::claim_synthesis_params;
use super::version::claim_build_info;
use super::volume::claim_volume;
use std::mem::size_of;

/// Where the fields of a `#[repr(C)]` struct lie.
pub(crate) trait CLayout: Sized {
    /// `(offset, size)` of every field.
    fn fields() -> Vec<(usize, usize)>;

    /// The byte ranges no field covers (padding), in order.
    fn padding() -> Vec<std::ops::Range<usize>> {
        let mut fields = Self::fields();
        fields.sort_unstable();
        let mut gaps = Vec::new();
        let mut end = 0;
        for (offset, size) in fields {
            if offset > end {
                gaps.push(end..offset);
            }
            end = end.max(offset + size);
        }
        if end < size_of::<Self>() {
            gaps.push(end..size_of::<Self>());
        }
        gaps
    }
}

/// The size of what `_p` points to, without reading it.
fn pointee_size<F>(_p: *const F) -> usize {
    size_of::<F>()
}

macro_rules! c_layout {
    ($t:ty { $($field:ident),+ $(,)? }) => {
        impl CLayout for $t {
            fn fields() -> Vec<(usize, usize)> {
                let probe = std::mem::MaybeUninit::<$t>::uninit();
                let base = probe.as_ptr();
                vec![$({
                    // SAFETY: only the address of a field of a local is
                    // formed (addr_of!); nothing is read.
                    let field = unsafe { std::ptr::addr_of!((*base).$field) };
                    (field as usize - base as usize, pointee_size(field))
                }),+]
            }
        }
    };
}

c_layout!(claim_aha_segment_stats {
    struct_size,
    myocardium_ml,
    scar_ml,
    mvo_ml,
    scar_percent,
    total_myocardium_ml,
    total_scar_ml,
    total_mvo_ml,
    burden,
});
c_layout!(claim_bullseye_options {
    struct_size,
    size_px,
    max_percent,
    show_numbers,
    show_percent,
    title,
});
c_layout!(claim_load_options {
    struct_size,
    device,
    device_index,
    precision
});
c_layout!(claim_tensor {
    struct_size,
    ndim,
    shape,
    data,
    dtype
});
c_layout!(claim_diffusion_info {
    struct_size,
    channels,
    cond_dim,
    dim,
    levels,
    size_multiple,
    frames,
    histogram_count
});
c_layout!(claim_build_info {
    struct_size,
    cuda_feature,
    cuda_available,
    cuda_driver_version,
    cuda_device_count,
    kernel_archs,
    cuda_status,
});
c_layout!(claim_smile_params {
    struct_size,
    pattern,
    territory,
    mvo,
    burden,
    transmurality,
    labels,
    aha,
});
c_layout!(claim_smile_info {
    struct_size,
    pattern,
    territory,
    segments_chosen_count,
    segments_chosen,
    burden_target,
    burden,
    transmurality,
    territory_fraction,
    scar_voxels,
    mvo_voxels,
    seed,
});
c_layout!(claim_aha_params {
    struct_size,
    labels,
    rotation_deg,
    long_axis
});
c_layout!(claim_volume {
    struct_size,
    voxel_type,
    dims,
    spacing,
    origin,
    direction,
    data
});
c_layout!(claim_synthesis_params {
    struct_size,
    t_start,
    jump_length,
    jump_n_sample,
    seed,
    guidance_scale,
    histogram_source,
    histogram_length,
    histogram,
    perturb_histogram,
    keep_network_output,
    batch_size,
    crop_size,
    frames,
    labels,
    channel_count,
    channel_labels,
});
c_layout!(claim_segmenter_options {
    struct_size,
    fold_count,
    folds,
    configuration
});
c_layout!(claim_segmenter_info {
    struct_size,
    spatial_dims,
    input_channels,
    num_classes,
    patch_size,
    fold_count,
    spacing,
    parameters,
    folds,
    mirroring_axis_count,
    mirroring_axes,
    configuration,
    trainer,
});
c_layout!(claim_segmentation_params {
    struct_size,
    mirroring,
    step_size,
    postprocess,
    labels
});
c_layout!(claim_label_scheme {
    struct_size,
    lv_cavity,
    myocardium,
    scar,
    mvo,
    rv
});

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Fields do not overlap, and fields plus padding make the whole struct:
    /// a field missing from a list would show up as "padding" bigger than
    /// any alignment gap (more than 7 bytes) or as a size mismatch.
    fn check<T: CLayout>(name: &str) {
        let mut fields = T::fields();
        fields.sort_unstable();
        for pair in fields.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{name}: fields overlap");
        }
        let covered: usize = fields.iter().map(|f| f.1).sum();
        let padding: usize = T::padding().iter().map(|r| r.len()).sum();
        assert_eq!(covered + padding, size_of::<T>(), "{name}");
        for gap in T::padding() {
            assert!(
                gap.len() < 8,
                "{name}: {gap:?} is no alignment gap: a field is missing"
            );
        }
    }

    #[test]
    fn every_written_struct_lists_all_its_fields() {
        check::<claim_aha_segment_stats>("claim_aha_segment_stats");
        check::<claim_bullseye_options>("claim_bullseye_options");
        check::<claim_load_options>("claim_load_options");
        check::<claim_tensor>("claim_tensor");
        check::<claim_diffusion_info>("claim_diffusion_info");
        check::<claim_build_info>("claim_build_info");
        check::<claim_smile_params>("claim_smile_params");
        check::<claim_smile_info>("claim_smile_info");
        check::<claim_aha_params>("claim_aha_params");
        check::<claim_volume>("claim_volume");
        check::<claim_synthesis_params>("claim_synthesis_params");
        check::<claim_segmenter_options>("claim_segmenter_options");
        check::<claim_segmenter_info>("claim_segmenter_info");
        check::<claim_segmentation_params>("claim_segmentation_params");
        check::<claim_label_scheme>("claim_label_scheme");
        // The one the report named: 4 bytes after struct_size.
        assert_eq!(claim_aha_segment_stats::padding(), vec![4..8]);
    }
}
