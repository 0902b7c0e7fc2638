#!/usr/bin/env python3
"""PyTorch / nnU-Net CPU timings of the segmenter, for comparison with
claim's `cargo bench` on the same machine (issue 5, "Benchmark").

Times, per torch thread count (--threads, default "2,1"; median and minimum
of --reps runs after --warmup runs):

* forward_256: one forward of the 2-D PlainConvUNet nnU-Net plans for
  CLAIM-like data (6 stages, features 32..512, 3x3 kernels, strides 1,2,2,2,2,2,
  2 convs per stage, 2 per decoder stage, InstanceNorm affine, LeakyReLU,
  4 classes; the network of the phantom's real nnU-Net 2d plan) on
  1x1x256x256, under torch.inference_mode as nnU-Net's predictor runs it;
* predictor_tiny: nnunetv2's nnUNetPredictor (CPU, step 0.5, Gaussian,
  mirroring, fold 0) on the phantom volume (192x192x10) with the tiny 2d
  fixture model (tests/fixtures/nnunet, patch 64x64: 250 windows x 4 passes);
* predictor_big: the same predictor with the 6-stage network above in a
  results folder whose plan has the planner's patch 192x192 (10 windows x 4
  passes) — the realistic CLAIM workload.

Predictor times cover predict_single_npy_array (preprocessing, sliding
window, export to a label array), not file I/O. Prints one JSON object with
the times, the resident memory right after `import torch` and the peak
resident memory (ru_maxrss) after each phase.

--export-weights DIR writes the 6-stage model (seeded random weights, nnU-Net's
He initialisation plus non-trivial norm/bias values) as an nnU-Net results
folder — DIR/plans.json, DIR/dataset.json, DIR/fold_0/checkpoint_final.pth —
so claim's bench loads the very same model; with it the script only exports
unless --bench is given too.

Usage (repository root; the phantom comes from the claim CLI):
    cargo build
    python3 tools/bench_torch_segmenter.py [--threads 2,1] [--reps 10] [--claim-bin target/debug/claim]
    python3 tools/bench_torch_segmenter.py --export-weights /tmp/claim_bench_model
Requirements: torch, numpy, dynamic_network_architectures, nnunetv2 (PyPI).
"""
import argparse
import json
import os
import resource
import sys
import time


def rss_mib():
    """Current resident set size (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


RSS_BEFORE_TORCH = rss_mib()
import numpy as np  # noqa: E402
import torch  # noqa: E402

RSS_AFTER_TORCH = rss_mib()

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import nnunet_reference as ref  # noqa: E402

BENCH_LABELS = {"background": 0, "cavity": 1, "myocardium": 2, "infarction": 3}
BENCH_PATCH = [192, 192]


def bench_arch_kwargs():
    """The 2d arch_kwargs nnU-Net's planner writes for the phantom (6 stages, 32..512)."""
    return ref.arch_kwargs(2, [32, 64, 128, 256, 512, 512], [[3, 3]] * 6,
                           [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                           [2, 2, 2, 2, 2, 2], [2, 2, 2, 2, 2], True)


def bench_plans():
    plans = ref.make_plans({"max": 1.0, "mean": 0.0, "median": 0.0, "min": 0.0, "percentile_00_5": 0.0,
                            "percentile_99_5": 1.0, "std": 1.0})
    plans["dataset_name"] = "Dataset991_ClaimBench"
    cfg = ref.configuration("nnUNetPlans_2d", BENCH_PATCH, [192.0, 192.0], ref.PHANTOM_SPACING_ZYX[1:],
                            bench_arch_kwargs(), True)
    cfg["batch_size"] = 12
    plans["configurations"] = {"2d": cfg}
    return plans


def bench_dataset_json():
    return {"channel_names": {"0": "LGE"}, "labels": BENCH_LABELS, "numTraining": 1, "file_ending": ".nii.gz"}


def bench_network(plans, deep_supervision, seed=5):
    """PlainConvUNet from the plan's arch_kwargs, as nnU-Net builds it (He init),
    without importing nnunetv2 (so the forward's memory excludes it)."""
    import pydoc

    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from dynamic_network_architectures.initialization.weight_init import InitWeights_He

    arch = plans["configurations"]["2d"]["architecture"]
    kwargs = dict(arch["arch_kwargs"])
    for key in arch["_kw_requires_import"]:
        if kwargs[key] is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    torch.manual_seed(seed)
    net = PlainConvUNet(input_channels=1, num_classes=len(BENCH_LABELS), deep_supervision=deep_supervision,
                        **kwargs)
    net.apply(InitWeights_He(1e-2))
    ref.perturb_(net, torch.Generator().manual_seed(seed + 1))
    return net.eval()


def export_model(path, plans, dataset_json):
    """An nnU-Net results folder for the 6-stage model (no optimizer state, to keep it small)."""
    net = bench_network(plans, deep_supervision=True)
    os.makedirs(os.path.join(path, "fold_0"), exist_ok=True)
    ref.write_json(os.path.join(path, "plans.json"), plans)
    ref.write_json(os.path.join(path, "dataset.json"), dataset_json)
    ckpt = {
        "network_weights": net.state_dict(),
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": ref.logging_dict(np.random.default_rng(0)),
        "_best_ema": np.float64(0.0),
        "current_epoch": 0,
        "init_args": {"plans": plans, "configuration": "2d", "fold": 0, "dataset_json": dataset_json,
                      "device": torch.device("cpu")},
        "trainer_name": ref.TRAINER,
        "inference_allowed_mirroring_axes": (0, 1),
    }
    torch.save(ckpt, os.path.join(path, "fold_0", "checkpoint_final.pth"))
    n_params = sum(p.numel() for p in net.parameters())
    return n_params


def timed(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_ms": 1e3 * times[len(times) // 2], "min_ms": 1e3 * times[0], "reps": reps}


def make_predictor(model_folder):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, use_folds=(0,),
                                                   checkpoint_name="checkpoint_final.pth")
    return predictor


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="2,1", help="comma-separated torch thread counts (default 2,1)")
    ap.add_argument("--reps", type=int, default=10, help="timed runs of the forward (default 10)")
    ap.add_argument("--predictor-reps", type=int, default=3, help="timed predictor runs (default 3)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2; predictor: 1)")
    ap.add_argument("--fixtures", default=os.path.join(ref.ROOT, "tests", "fixtures", "nnunet"),
                    help="fixture folder with the tiny nnU-Net model (default tests/fixtures/nnunet)")
    ap.add_argument("--claim-bin", help="claim CLI for the phantom (default: cargo run --quiet --)")
    ap.add_argument("--skip-predictor", action="store_true", help="time the forward only")
    ap.add_argument("--export-weights", metavar="DIR", help="write the 6-stage model as an nnU-Net results folder")
    ap.add_argument("--bench", action="store_true", help="with --export-weights: time as well")
    args = ap.parse_args()

    plans, dataset_json = bench_plans(), bench_dataset_json()
    report = {"torch": torch.__version__, "rss_before_import_torch_mib": round(RSS_BEFORE_TORCH, 1),
              "rss_after_import_torch_mib": round(RSS_AFTER_TORCH, 1)}
    if args.export_weights:
        n = export_model(args.export_weights, plans, dataset_json)
        report["exported"] = {"folder": os.path.abspath(args.export_weights), "parameters": n,
                              "arch_kwargs": plans["configurations"]["2d"]["architecture"]["arch_kwargs"]}
        if not args.bench:
            print(json.dumps(report, indent=2))
            return

    net = bench_network(plans, deep_supervision=False)
    report["forward_256"] = {"input": [1, 1, 256, 256], "parameters": sum(p.numel() for p in net.parameters())}
    x = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    thread_counts = [int(t) for t in args.threads.split(",")]
    for t in thread_counts:
        torch.set_num_threads(t)

        def forward():
            with torch.inference_mode():
                net(x)

        report["forward_256"][f"threads_{t}"] = timed(forward, args.reps, args.warmup)
    report["peak_rss_after_forward_mib"] = round(peak_rss_mib(), 1)

    if not args.skip_predictor:
        import tempfile

        from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

        tmp = tempfile.mkdtemp(prefix="bench_seg_")
        image_path, _ = ref.make_phantom(args.claim_bin, os.path.join(tmp, "phantom"))
        data, props = SimpleITKIO().read_images([image_path])
        big_folder = os.path.join(tmp, "bench_model")
        export_model(big_folder, plans, dataset_json)
        tiny_folder = ref.model_dir(os.path.abspath(args.fixtures), "2d")
        import copy

        for name, folder in (("predictor_tiny", tiny_folder), ("predictor_big", big_folder)):
            predictor = make_predictor(folder)
            entry = {"model": folder, "patch_size": predictor.configuration_manager.patch_size,
                     "volume_zyx": list(data.shape[1:]), "mirror_axes": list(predictor.allowed_mirroring_axes)}
            for t in thread_counts:
                torch.set_num_threads(t)
                entry[f"threads_{t}"] = timed(
                    lambda: predictor.predict_single_npy_array(data, copy.deepcopy(props), None, None, False),
                    args.predictor_reps, 1)
            report[name] = entry
            report[f"peak_rss_after_{name}_mib"] = round(peak_rss_mib(), 1)
    report["peak_rss_mib"] = round(peak_rss_mib(), 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
