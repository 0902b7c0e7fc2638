//! Full 3-D convolutions (being built).
