//! SMILE: AHA-17 parcellation and clinically guided scar masks.

pub mod aha;
