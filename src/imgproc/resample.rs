//! Resampling of volumes (being built).
