//! SMILE benchmarks on the AHA atlas (140×140×56, 1.25×1.25×2 mm): one AHA
//! parcellation, building a draw context, and one ischaemic mask draw (the
//! `claim smile --count K` inner loop). Target: < 20 ms per draw on one core.
//!
//! Skips with a message when the atlas is absent (see `claim::testing::atlas_dir`).

use claim::smile::aha::{self, AhaParams};
use claim::smile::{SmileContext, SmileParams};
use claim::{LabelScheme, Volume};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

const SCHEME: LabelScheme = LabelScheme::EMIDEC_WITH_RV;

/// The atlas as an EMIDEC-with-RV label map and its own segments.
fn atlas() -> Option<(Volume<i32>, Volume<u8>)> {
    let dir = claim::testing::atlas_dir()?;
    let raw = match claim::io::read_image(&dir.join("AHA17_model_ED.nii.gz"))
        .and_then(|i| i.to_labels())
    {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("skipped: cannot read the atlas: {e}");
            return None;
        }
    };
    let labels = raw.map(|l| match l {
        1..=17 => SCHEME.myocardium,
        21 => SCHEME.lv_cavity,
        24 => SCHEME.rv.unwrap_or(0),
        _ => 0,
    });
    let segments = raw.map(|l| if (1..=17).contains(l) { *l as u8 } else { 0 });
    Some((labels, segments))
}

fn smile(c: &mut Criterion) {
    let Some((labels, segments)) = atlas() else {
        return;
    };
    let aha_params = AhaParams {
        labels: SCHEME,
        ..AhaParams::default()
    };
    c.bench_function("aha_parcellation_atlas", |b| {
        b.iter(|| aha::parcellate(black_box(&labels), &aha_params))
    });
    let params = SmileParams::default().with_labels(SCHEME).with_burden(0.15);
    c.bench_function("smile_context_atlas", |b| {
        b.iter(|| SmileContext::with_segments(black_box(&labels), &segments, &params))
    });
    let ctx = match SmileContext::with_segments(&labels, &segments, &params) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("skipped: SMILE context failed on the atlas: {e}");
            return;
        }
    };
    let mut seed = 0u64;
    c.bench_function("smile_ischemic_draw_atlas", |b| {
        b.iter(|| {
            seed = seed.wrapping_add(1);
            ctx.draw(black_box(seed))
        })
    });
    let mvo = SmileParams {
        mvo: true,
        ..params
    };
    if let Ok(ctx) = SmileContext::with_segments(&labels, &segments, &mvo) {
        c.bench_function("smile_ischemic_mvo_draw_atlas", |b| {
            b.iter(|| {
                seed = seed.wrapping_add(1);
                ctx.draw(black_box(seed))
            })
        });
    }
}

criterion_group!(benches, smile);
criterion_main!(benches);
