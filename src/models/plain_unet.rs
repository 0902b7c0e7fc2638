//! nnU-Net's PlainConvUNet (being built).
