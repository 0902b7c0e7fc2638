//! `claim import`: a PyTorch checkpoint (or an nnU-Net results folder) to
//! safetensors, without Python.
//!
//! Diffusion checkpoints (LeFusion/CLAIM training saves `{'model': …,
//! 'ema': …, 'step': …}`; a bare state dict works too) are written as f32
//! with their keys unchanged, as `tools/convert_torch_checkpoint.py` does:
//! the model loader strips the `module.`/`denoise_fn.` prefixes and ignores
//! the schedule buffers. Integer tensors (BatchNorm's
//! `num_batches_tracked`) are not weights and are left out. nnU-Net
//! checkpoints and results folders go through the segmentation bundle.
//! claim's own safetensors files (a diffusion model, a segmentation
//! bundle) are re-encoded; `--half` stores any of them as f16 (how the
//! built-in models ship).

use crate::label_maps::in_file;
use claim::io::torch::{read_torch_file, state_dict_tensors, PickleValue};
use claim::segmentation::{fold_name, NnunetBundle, Segmenter, FOLD_ALL};
use claim::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Arguments of `claim import`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The checkpoint is read without executing anything in it: classes and \
functions it names are recorded, never run. Tensors are written as f32 (f16 with --half); the output is \
written to a temporary file and renamed into place."
)]
pub struct Args {
    /// A torch.save checkpoint (.pt / .pth: a LeFusion/CLAIM diffusion
    /// checkpoint, a bare state dict, or nnU-Net's checkpoint_final.pth), an
    /// nnU-Net results folder (…/Trainer__Plans__configuration), or a claim
    /// .safetensors model (to re-encode, e.g. with --half).
    #[arg(value_name = "SRC")]
    src: PathBuf,
    /// Output .safetensors file.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Diffusion checkpoints: take the EMA weights (`ema`) instead of `model`.
    #[arg(long)]
    ema: bool,
    /// Store the tensors as f16 (half the size; every loader widens them
    /// to f32). The built-in models ship this way.
    #[arg(long)]
    half: bool,
    /// nnU-Net: the folds to import (`--fold 0 1`, `--fold 0,1`, `--fold all`
    /// for fold_all; default every numbered fold found).
    #[arg(long = "fold", value_name = "N", num_args = 1.., value_delimiter = ',', value_parser = parse_fold)]
    folds: Vec<usize>,
}

/// Runs `claim import`.
pub fn run(args: &Args) -> Result<()> {
    if same_file(&args.src, &args.output) {
        return Err(Error::invalid(format!(
            "refusing to overwrite the source {} with the output",
            args.src.display()
        )));
    }
    if args.src.is_dir() {
        return import_nnunet(args);
    }
    if is_safetensors(&args.src) {
        return import_safetensors(args);
    }
    let checkpoint = read_torch_file(&args.src)?;
    if checkpoint.get("network_weights").is_some() {
        return import_nnunet(args);
    }
    if !args.folds.is_empty() {
        return Err(Error::invalid(
            "--fold applies to nnU-Net checkpoints and results folders only",
        ));
    }
    import_diffusion(args, &checkpoint)
}

/// An nnU-Net checkpoint or results folder, through the segmentation bundle.
fn import_nnunet(args: &Args) -> Result<()> {
    if args.ema {
        return Err(Error::invalid(
            "--ema applies to diffusion checkpoints; nnU-Net checkpoints hold one set of weights",
        ));
    }
    let folds = (!args.folds.is_empty()).then_some(args.folds.as_slice());
    let bundle = NnunetBundle::load(&args.src, folds)?;
    // Validate exactly as `claim segment` and claim_segmenter_load do (plans,
    // dataset, architecture, every fold's weights), so that no bundle is
    // written that cannot be loaded.
    Segmenter::from_bundle(bundle.clone(), None).map_err(|e| in_file(&args.src, e))?;
    claim::io::atomic::write_atomically_via(&args.output, |temp| {
        bundle.write_safetensors_as(temp, args.half)
    })?;
    let fold_names: Vec<String> = bundle.fold_numbers().into_iter().map(fold_name).collect();
    let tensors: usize = bundle.folds.iter().map(|(_, sd)| sd.len()).sum();
    outln!(
        "{}: nnU-Net model from {} (trainer {}, configuration {}), fold(s) {}, {tensors} tensors",
        args.output.display(),
        args.src.display(),
        bundle.trainer,
        bundle.configuration,
        fold_names.join(", ")
    );
    Ok(())
}

/// A fold number, or `all` for nnU-Net's `fold_all`.
fn parse_fold(text: &str) -> std::result::Result<usize, String> {
    if text == "all" {
        return Ok(FOLD_ALL);
    }
    text.parse()
        .map_err(|_| format!("{text:?} is not a fold number or `all`"))
}

/// A diffusion checkpoint (or bare state dict) as f32 safetensors.
fn import_diffusion(args: &Args, checkpoint: &PickleValue) -> Result<()> {
    let (state_dict, origin) =
        pick_state_dict(checkpoint, args.ema).map_err(|e| in_file(&args.src, e))?;
    let tensors = state_dict_tensors(state_dict).map_err(|e| in_file(&args.src, e))?;
    let skipped: Vec<&str> = state_dict
        .as_dict()
        .unwrap_or(&[])
        .iter()
        .filter(|(_, v)| v.as_tensor().is_some_and(|t| !t.dtype.is_float()))
        .filter_map(|(k, _)| k.as_str())
        .collect();
    if tensors.is_empty() {
        return Err(Error::format(format!(
            "{}: {origin} holds no floating-point tensors",
            args.src.display()
        )));
    }
    let mut views = Vec::with_capacity(tensors.len());
    for (name, tensor) in &tensors {
        views.push((name.as_str(), tensor.dims(), tensor.as_slice()?));
    }
    let source_name = args
        .src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let metadata = HashMap::from([
        ("format".to_string(), "claim-diffusion".to_string()),
        ("source".to_string(), source_name),
        (
            "part".to_string(),
            if args.ema { "ema" } else { "model" }.to_string(),
        ),
    ]);
    claim::nn::weights::write_safetensors_as(&args.output, &views, metadata, args.half)?;
    let values: usize = tensors.iter().map(|(_, t)| t.elem_count()).sum();
    outln!(
        "{}: {} tensors, {:.2} M values from {origin} of {}{}",
        args.output.display(),
        tensors.len(),
        values as f64 / 1e6,
        args.src.display(),
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; left out integer tensors {skipped:?}")
        }
    );
    Ok(())
}

/// The state dict to convert and where it came from (as the Python
/// converter chooses): `ema` with `--ema`, else `model`, else the whole
/// checkpoint when it is a dict holding tensors.
fn pick_state_dict(checkpoint: &PickleValue, ema: bool) -> Result<(&PickleValue, String)> {
    let part = if ema { "ema" } else { "model" };
    if let Some(sd @ PickleValue::Dict(_)) = checkpoint.get(part) {
        return Ok((sd, format!("'{part}'")));
    }
    let top_level = || match checkpoint.as_dict() {
        Some(entries) => {
            let keys: Vec<String> = entries
                .iter()
                .map(|(k, _)| k.to_json().to_string())
                .collect();
            format!("top level: {}", keys.join(", "))
        }
        None => format!("top level is a {}", checkpoint.kind()),
    };
    if ema {
        return Err(Error::format(format!(
            "no 'ema' state dict in the checkpoint ({})",
            top_level()
        )));
    }
    let has_tensors = checkpoint
        .as_dict()
        .is_some_and(|entries| entries.iter().any(|(_, v)| v.as_tensor().is_some()));
    if has_tensors {
        return Ok((checkpoint, "the bare state dict".to_string()));
    }
    let hint = if checkpoint.get("ema").is_some() {
        "; pass --ema for the EMA weights"
    } else {
        ""
    };
    Err(Error::format(format!(
        "the checkpoint holds neither a 'model' state dict nor tensors ({}){hint}",
        top_level()
    )))
}

/// Whether `output` names the same file (or folder) as `src`.
fn same_file(src: &Path, output: &Path) -> bool {
    let Ok(src) = std::fs::canonicalize(src) else {
        return false;
    };
    let target = match std::fs::canonicalize(output) {
        Ok(path) => path,
        Err(_) => {
            let parent = match output.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            match (std::fs::canonicalize(parent), output.file_name()) {
                (Ok(dir), Some(name)) => dir.join(name),
                _ => return false,
            }
        }
    };
    src == target
}

/// Whether `path` is a safetensors file (by its first bytes).
fn is_safetensors(path: &std::path::Path) -> bool {
    let mut head = vec![0u8; 4096];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    head.truncate(n);
    // A header longer than the first read still starts with its length
    // and `{`.
    n >= 9 && head[8] == b'{'
}

/// A claim safetensors file (diffusion model or segmentation bundle)
/// re-encoded, e.g. to f16 with `--half`; its metadata is kept.
fn import_safetensors(args: &Args) -> Result<()> {
    let bytes = std::fs::read(&args.src).map_err(|e| Error::io_at(&args.src, &e))?;
    claim::io::check_safetensors_magic(&bytes).map_err(|e| in_file(&args.src, e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(format!("{}: {e}", args.src.display())))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    if metadata.get("format").map(String::as_str)
        == Some(claim::segmentation::bundle::BUNDLE_FORMAT)
    {
        return import_nnunet(args);
    }
    if args.ema || !args.folds.is_empty() {
        return Err(Error::invalid(
            "--ema and --fold apply to torch checkpoints and nnU-Net models",
        ));
    }
    let weights =
        claim::nn::Weights::from_safetensors(&bytes).map_err(|e| in_file(&args.src, e))?;
    // Check it is a model synthesis can load before writing anything.
    claim::models::Denoiser::load(&weights).map_err(|e| in_file(&args.src, e))?;
    let keys: Vec<String> = weights.keys().map(str::to_string).collect();
    let mut tensors = Vec::with_capacity(keys.len());
    for key in &keys {
        if let Some(t) = weights.peek(key) {
            tensors.push((key.as_str(), t.dims().to_vec(), t.to_vec()?));
        }
    }
    let views: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(k, d, v)| (*k, d.as_slice(), v.as_slice()))
        .collect();
    claim::nn::weights::write_safetensors_as(&args.output, &views, metadata, args.half)?;
    outln!(
        "{}: diffusion model from {}, {} tensors{}",
        args.output.display(),
        args.src.display(),
        views.len(),
        if args.half { " as f16" } else { "" }
    );
    Ok(())
}
