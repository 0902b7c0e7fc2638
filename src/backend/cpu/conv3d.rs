//! CPU kernels for full 3-D convolutions (being built).
