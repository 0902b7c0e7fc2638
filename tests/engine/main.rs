//! The neural engine and its pipelines against their references: golden
//! fixtures exported by the PyTorch scripts in `tools/` (convolutions,
//! the denoiser, nnU-Net resampling and prediction, RePaint steps, a full
//! two-channel RePaint run), the
//! PyTorch checkpoint reader, and the synthesis and segmentation pipelines
//! on the phantom. One binary for all (each integration test binary
//! relinks the library).

mod conv3d_golden;
mod denoiser_golden;
mod gpu;
mod gpu_small;
mod gpu_train;
mod grad_parity;
mod resample_golden;
mod segmentation;
mod synthesis;
mod torch_reader;
mod train;
mod twochan;

/// A Python with torch and safetensors (`CLAIM_TORCH_PYTHON`, else
/// `python3`), or `None`.
pub fn torch_python() -> Option<String> {
    let python = std::env::var("CLAIM_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import torch, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}
