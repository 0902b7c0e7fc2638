//! Segmentation metrics (being built).
