#!/usr/bin/env python3
"""Runs nnU-Net v2's own dataset check on a raw dataset folder.

Usage: nnunet_verify_dataset.py DATASET_DIR

Exits 0 when `verify_dataset_integrity` accepts the folder (file names,
numTraining, label values, image/label geometry), non-zero with nnU-Net's
message otherwise. Used by tests/cli/cli_augment.rs on `claim augment`
output when a Python with nnunetv2 is available.
"""
import sys

from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    verify_dataset_integrity(sys.argv[1], num_processes=1)
    print(f"nnU-Net verify_dataset_integrity: {sys.argv[1]} passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
