#!/usr/bin/env python3
"""Segment images with nnU-Net's own predictor from a results folder that
`claim train segmenter` wrote (issue 10: nnU-Net reads claim's models).

nnUNetPredictor.initialize_from_trained_model_folder reads plans.json,
dataset.json and fold_K/checkpoint_final.pth (torch.load, then the
network's load_state_dict, which is strict), and predict_single_npy_array
runs nnU-Net's preprocessing, Gaussian sliding window with test-time
mirroring and export, on the CPU. Each label map is written through
nnU-Net's SimpleITK writer, so `claim segment --no-postprocess` output can
be compared voxel for voxel (tests/cli/cli_train.rs does).

    pip install torch nnunetv2
    python3 tools/nnunet_predict_trained.py RESULTS_DIR --fold 0 \
        --image case.nii.gz --output pred.nii.gz [--image … --output …]
"""
import argparse
import sys

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="nnU-Net results folder (plans.json, dataset.json, fold_K/)")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--image", action="append", required=True, help="input .nii.gz (repeatable)")
    parser.add_argument("--output", action="append", required=True, help="label map to write, one per --image")
    parser.add_argument("--no-mirroring", action="store_true")
    args = parser.parse_args()
    if len(args.image) != len(args.output):
        parser.error("give one --output per --image")

    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch.set_num_threads(max(1, torch.get_num_threads()))
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=not args.no_mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(args.results, use_folds=(args.fold,),
                                                   checkpoint_name="checkpoint_final.pth")
    io = SimpleITKIO()
    for image, output in zip(args.image, args.output):
        data, props = io.read_images([image])
        seg = predictor.predict_single_npy_array(data, props, None, None, False)
        io.write_seg(seg, output, props)
        counts = {int(k): int((seg == k).sum()) for k in sorted(set(seg.flat))}
        print(f"{image}: {seg.shape} labels {counts}")
    print(f"nnUNetPredictor loaded {args.results} fold {args.fold} "
          f"({predictor.label_manager.num_segmentation_heads} classes)")


if __name__ == "__main__":
    sys.exit(main())
