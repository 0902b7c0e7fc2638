//! The demo's model steps, on the built-in models: paint a SMILE infarct
//! into the scar-free version of the phantom with the diffusion model,
//! segment the result, evaluate the segmentation against the synthetic
//! label map, and draw overlays and a bull's-eye of the predicted scar.

use super::DemoState;
use crate::label_maps::write_bytes;
use claim::metrics::{evaluate_case, CaseMetrics, EvalOptions};
use claim::models::builtin;
use claim::phantom::{self, PhantomParams, LABEL_SCHEME};
use claim::segmentation::{SegmentParams, Segmenter, SegmenterOptions};
use claim::smile::{
    render_png, render_svg, segment_stats, BullseyeOptions, Pattern, SmileContext, SmileParams,
    Territory,
};
use claim::synthesis::{
    measure_channel_histograms, synthesize, Condition, JumpParams, Layout, SynthesisParams,
};
use claim::volume::narrow_labels;
use claim::{DType, Error, Image, Result, Volume};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// The synthetic image.
pub const SYNTH_IMAGE: &str = "synth_image.nii.gz";
/// Its label map (the SMILE infarct in the scar-free phantom).
pub const SYNTH_LABELS: &str = "synth_labels.nii.gz";
/// The built-in segmenter's labels of the synthetic image.
pub const PREDICTED_LABELS: &str = "predicted_labels.nii.gz";
/// Bull's-eye of the predicted scar.
pub const PREDICTED_BULLSEYE: &str = "predicted_bullseye.svg";
/// The same as PNG.
pub const PREDICTED_BULLSEYE_PNG: &str = "predicted_bullseye.png";

/// The RePaint schedule of the demo: CLAIM's t_T = 300 with jumps of 2
/// visited twice (upstream's training-time setting; 598 evaluations).
const DEMO_JUMP: JumpParams = JumpParams {
    t_start: 300,
    jump_length: 2,
    jump_n_sample: 2,
};

/// `--quick`: no jumps (300 evaluations).
const QUICK_JUMP: JumpParams = JumpParams {
    t_start: 300,
    jump_length: 1,
    jump_n_sample: 1,
};

/// The infarct painted: LAD, 15 % of the myocardium, with an MVO core.
const DEMO_BURDEN: f64 = 0.15;

/// What the model steps measured, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelReport {
    /// The SMILE draw painted.
    pub mask: String,
    /// Network evaluations of the synthesis.
    pub network_evaluations: u64,
    /// Mean intensity of the painted scar, of remote myocardium and of the
    /// phantom's own (real) scar on its scar slices.
    pub scar_mean: f64,
    /// Remote (healthy) myocardium on the painted slices.
    pub remote_myocardium_mean: f64,
    /// Voxels outside the lesion that changed (0: bit-identical).
    pub changed_outside_lesion: usize,
    /// Segmentation metrics of the prediction against the synthetic labels.
    pub dice: Vec<(String, f64)>,
    /// HD95 per structure, mm.
    pub hd95_mm: Vec<(String, Option<f64>)>,
    /// Scar burden (% of the myocardium), predicted and true.
    pub scar_percent_predicted: Option<f64>,
    /// The synthetic label map's burden.
    pub scar_percent_true: Option<f64>,
    /// Overlay images written.
    pub overlays: Vec<String>,
}

/// What the model steps keep between them.
#[derive(Default)]
pub struct ModelState {
    normal_image: Option<Volume<f32>>,
    synth_labels: Option<Volume<i32>>,
    synth_image: Option<Volume<f32>>,
    predicted: Option<Volume<i32>>,
    metrics: Option<CaseMetrics>,
    /// The report so far.
    pub report: ModelReport,
}

fn need<'a, T>(v: &'a Option<T>, what: &str) -> Result<&'a T> {
    v.as_ref()
        .ok_or_else(|| Error::Internal(format!("demo step needs {what} before it exists")))
}

fn bar(total: u64, what: &str) -> Result<ProgressBar> {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "  {what} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} (ETA {{eta}})"
        ))
        .map_err(|e| Error::Internal(format!("progress template: {e}")))?,
    );
    Ok(bar)
}

/// Paints a SMILE LAD infarct into the scar-free phantom of the same seed
/// with the built-in diffusion model.
pub fn synthesize_scar(state: &mut DemoState) -> Result<()> {
    let normal = phantom::generate(&PhantomParams {
        seed: state.seed,
        with_scar: false,
        ..PhantomParams::default()
    })?;
    let params = SmileParams::default()
        .with_pattern(Pattern::Ischemic)
        .with_territory(Territory::Lad)
        .with_burden(DEMO_BURDEN)
        .with_mvo(true)
        .with_labels(LABEL_SCHEME);
    let draw = SmileContext::new(&normal.labels, &params)?.draw(state.seed)?;
    let model = builtin::denoiser(&state.load)?;
    // The condition: the intensity histogram of the phantom's own scar.
    let real = state.case()?;
    let mut synth = SynthesisParams {
        seed: state.seed,
        jump: if state.quick { QUICK_JUMP } else { DEMO_JUMP },
        labels: LABEL_SCHEME,
        // Every lesion slice in one network batch.
        batch_size: 16,
        ..SynthesisParams::default()
    };
    let layout = Layout::resolve(model.config(), &synth)?;
    synth.condition = Condition::Values(measure_channel_histograms(
        &Image::F32(real.image.clone()),
        &real.labels,
        &LABEL_SCHEME,
        &layout,
        synth.crop_size,
    )?);
    let progress = bar(0, "diffusion")?;
    let out = synthesize(
        &model,
        &Image::F32(normal.image.clone()),
        &draw.labels,
        &synth,
        &mut |done, total| {
            progress.set_length(total);
            progress.set_position(done);
            true
        },
    )?;
    progress.finish_and_clear();
    let Image::F32(painted) = out.image else {
        return Err(Error::Internal("synthesis changed the image type".into()));
    };
    let (before, after, labels) = (
        normal.image.as_slice()?,
        painted.as_slice()?,
        draw.labels.as_slice()?,
    );
    let lesion = |l: i32| LABEL_SCHEME.is_lesion(l);
    let changed = before
        .iter()
        .zip(after)
        .zip(labels)
        .filter(|((a, b), l)| !lesion(**l) && a.to_bits() != b.to_bits())
        .count();
    let [ni, nj, _] = draw.labels.dims();
    let on_slice = |i: usize| out.slices.contains(&(i / (ni * nj)));
    let mean_of = |want: &dyn Fn(i32) -> bool| {
        let (s, n) = after
            .iter()
            .zip(labels)
            .enumerate()
            .filter(|(i, (_, l))| want(**l) && on_slice(*i))
            .fold((0f64, 0usize), |(s, n), (_, (v, _))| {
                (s + f64::from(*v), n + 1)
            });
        s / n.max(1) as f64
    };
    let m = &mut state.model.report;
    m.mask = format!(
        "SMILE ischaemic LAD infarct, burden {:.2}, {} scar + {} MVO voxels, seed {}",
        draw.burden, draw.scar_voxels, draw.mvo_voxels, state.seed
    );
    m.network_evaluations = out.network_evaluations;
    m.scar_mean = mean_of(&|l| lesion(l));
    m.remote_myocardium_mean = mean_of(&|l| l == LABEL_SCHEME.myocardium);
    m.changed_outside_lesion = changed;
    let (image_path, labels_path) = (state.path(SYNTH_IMAGE), state.path(SYNTH_LABELS));
    claim::io::write_image(&Image::F32(painted.clone()), &image_path)?;
    claim::io::write_image(&narrow_labels(&draw.labels, DType::U8)?, &labels_path)?;
    state.files.extend([image_path, labels_path]);
    state.model.normal_image = Some(normal.image);
    state.model.synth_image = Some(painted);
    state.model.synth_labels = Some(draw.labels);
    Ok(())
}

/// Segments the synthetic image with the built-in segmenter.
pub fn segment(state: &mut DemoState) -> Result<()> {
    let image = need(&state.model.synth_image, "the synthetic image")?;
    let segmenter = Segmenter::load_with(
        std::path::Path::new(builtin::BUILTIN),
        &SegmenterOptions::default(),
        &state.load,
    )?;
    let params = SegmentParams {
        label_scheme: LABEL_SCHEME,
        ..SegmentParams::default()
    };
    let progress = bar(0, "segmentation")?;
    let labels = segmenter.segment(&Image::F32(image.clone()), &params, &mut |done, total| {
        progress.set_length(total);
        progress.set_position(done);
        true
    })?;
    progress.finish_and_clear();
    let path = state.path(PREDICTED_LABELS);
    claim::io::write_image(&Image::U8(labels.clone()), &path)?;
    state.files.push(path);
    state.model.predicted = Some(labels.map(|&v| i32::from(v)));
    Ok(())
}

/// Dice, HD95 and scar burden of the prediction against the synthetic
/// labels (`claim eval`'s measures), and the predicted scar's bull's-eye.
pub fn evaluate(state: &mut DemoState) -> Result<()> {
    let predicted = need(&state.model.predicted, "the prediction")?;
    let truth = need(&state.model.synth_labels, "the synthetic labels")?;
    let metrics = evaluate_case(predicted, truth, &LABEL_SCHEME, &EvalOptions::default())?;
    let m = &mut state.model.report;
    m.dice = metrics
        .structures
        .iter()
        .map(|s| (s.structure.display_name().to_string(), s.dice))
        .collect();
    m.hd95_mm = metrics
        .structures
        .iter()
        .map(|s| (s.structure.display_name().to_string(), s.hd95_mm))
        .collect();
    m.scar_percent_predicted = metrics.scar_burden.pred_percent;
    m.scar_percent_true = metrics.scar_burden.ref_percent;
    let segments = state.segments()?;
    let stats = segment_stats(predicted, segments, &LABEL_SCHEME)?;
    let options = BullseyeOptions {
        title: Some("predicted scar (built-in segmenter)".into()),
        ..BullseyeOptions::default()
    };
    let (svg, png) = (
        state.path(PREDICTED_BULLSEYE),
        state.path(PREDICTED_BULLSEYE_PNG),
    );
    write_bytes(&svg, render_svg(&stats, &options)?.as_bytes())?;
    write_bytes(&png, &render_png(&stats, &BullseyeOptions::default())?)?;
    state.files.extend([svg, png]);
    state.model.metrics = Some(metrics);
    Ok(())
}

/// Overlays of the slices with the most lesion: the scar-free phantom,
/// the synthetic image, and the synthetic image with the true lesion
/// (yellow) and the predicted myocardium (green) and scar (red) outlined.
pub fn overlays(state: &mut DemoState) -> Result<()> {
    let before = need(&state.model.normal_image, "the scar-free image")?;
    let after = need(&state.model.synth_image, "the synthetic image")?;
    let truth = need(&state.model.synth_labels, "the synthetic labels")?;
    let predicted = need(&state.model.predicted, "the prediction")?;
    let [ni, nj, nk] = truth.dims();
    let t = truth.as_slice()?;
    let plane = ni * nj;
    let mut by_lesion: Vec<(usize, usize)> = (0..nk)
        .map(|k| {
            let n = t[k * plane..(k + 1) * plane]
                .iter()
                .filter(|&&l| LABEL_SCHEME.is_lesion(l))
                .count();
            (n, k)
        })
        .filter(|(n, _)| *n > 0)
        .collect();
    by_lesion.sort_by(|a, b| b.cmp(a));
    let mut slices: Vec<usize> = by_lesion.iter().take(3).map(|(_, k)| *k).collect();
    slices.sort_unstable();
    // The heart's box (labelled voxels) with a margin, the same for all.
    let (mut x0, mut x1, mut y0, mut y1) = (ni, 0, nj, 0);
    for (p, &l) in t.iter().enumerate() {
        if l != 0 {
            let (x, y) = (p % ni, (p / ni) % nj);
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
    }
    if x0 > x1 {
        return Err(Error::Internal("the synthetic labels are empty".into()));
    }
    let margin = 8;
    let (x0, y0) = (x0.saturating_sub(margin), y0.saturating_sub(margin));
    let (x1, y1) = ((x1 + margin).min(ni - 1), (y1 + margin).min(nj - 1));
    let mut written = Vec::new();
    for k in slices {
        let png = overlay_png(
            [before.as_slice()?, after.as_slice()?],
            t,
            predicted.as_slice()?,
            [ni, nj],
            k,
            [x0, x1, y0, y1],
        )?;
        let path = state.path(&format!("overlay_{k}.png"));
        write_bytes(&path, &png)?;
        written.push(path);
    }
    state
        .model
        .report
        .overlays
        .extend(written.iter().map(|p| p.display().to_string()));
    state.files.extend(written);
    Ok(())
}

/// Pixels per voxel in the overlays.
const ZOOM: usize = 3;

fn overlay_png(
    images: [&[f32]; 2],
    truth: &[i32],
    predicted: &[i32],
    [ni, nj]: [usize; 2],
    k: usize,
    [x0, x1, y0, y1]: [usize; 4],
) -> Result<Vec<u8>> {
    let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
    let plane = ni * nj;
    let at = |x: usize, y: usize| k * plane + y * ni + x;
    // One grey window for all panels: 1st–99th percentile of the box.
    let mut values: Vec<f32> = (y0..=y1)
        .flat_map(|y| (x0..=x1).map(move |x| (x, y)))
        .map(|(x, y)| images[1][at(x, y)])
        .collect();
    values.sort_by(f32::total_cmp);
    let (lo, hi) = (
        values[values.len() / 100],
        values[(values.len() * 99) / 100].max(values[values.len() / 100] + 1e-6),
    );
    let grey = |v: f32| (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0) as u8;
    let edge = |labels: &[i32], want: &dyn Fn(i32) -> bool, x: usize, y: usize| -> bool {
        if !want(labels[at(x, y)]) {
            return false;
        }
        let outside = |xx: isize, yy: isize| {
            xx < 0
                || yy < 0
                || xx as usize >= ni
                || yy as usize >= nj
                || !want(labels[at(xx as usize, yy as usize)])
        };
        let (x, y) = (x as isize, y as isize);
        outside(x - 1, y) || outside(x + 1, y) || outside(x, y - 1) || outside(x, y + 1)
    };
    let lesion = |l: i32| LABEL_SCHEME.is_lesion(l);
    let myocardium = |l: i32| l == LABEL_SCHEME.myocardium || LABEL_SCHEME.is_lesion(l);
    let gap = 4;
    let (pw, ph) = (w * ZOOM, h * ZOOM);
    let width = 3 * pw + 2 * gap;
    let mut rgb = vec![255u8; width * ph * 3];
    for panel in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let (vx, vy) = (x0 + x, y0 + y);
                let g = grey(images[if panel == 0 { 0 } else { 1 }][at(vx, vy)]);
                let mut colour = [g, g, g];
                if panel == 2 {
                    if edge(predicted, &myocardium, vx, vy) {
                        colour = [40, 220, 60];
                    }
                    if edge(truth, &lesion, vx, vy) {
                        colour = [255, 220, 0];
                    }
                    if edge(predicted, &lesion, vx, vy) {
                        colour = [230, 30, 30];
                    }
                }
                for dy in 0..ZOOM {
                    for dx in 0..ZOOM {
                        let px = panel * (pw + gap) + x * ZOOM + dx;
                        let py = y * ZOOM + dy;
                        let o = (py * width + px) * 3;
                        rgb[o..o + 3].copy_from_slice(&colour);
                    }
                }
            }
        }
    }
    claim::io::png::encode_rgb(width, ph, &rgb)
}

/// Console lines of the model steps.
pub fn print(report: &ModelReport, device: &str) {
    outln!();
    outln!("built-in models (trained on phantoms; see models/README.md), on {device}:");
    outln!(
        "  synthesis: {} painted by RePaint ({} network evaluations); scar mean {:.0} vs remote \
         myocardium {:.0}; {} voxels outside the lesion changed",
        report.mask,
        report.network_evaluations,
        report.scar_mean,
        report.remote_myocardium_mean,
        report.changed_outside_lesion
    );
    let dice: Vec<String> = report
        .dice
        .iter()
        .zip(&report.hd95_mm)
        .map(|((n, d), (_, hd))| match hd {
            Some(hd) => format!("{n} {d:.3} (HD95 {hd:.1} mm)"),
            None => format!("{n} {d:.3}"),
        })
        .collect();
    outln!(
        "  segmentation of the synthetic image: Dice {}",
        dice.join(", ")
    );
    if let (Some(p), Some(t)) = (report.scar_percent_predicted, report.scar_percent_true) {
        outln!("  scar burden: predicted {p:.1} % of the myocardium, true {t:.1} %");
    }
}
