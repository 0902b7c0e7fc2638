//! nnU-Net-compatible scar segmentation (being built).
