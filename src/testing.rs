//! Test-data discovery shared by unit tests, integration tests and benches.

use std::path::PathBuf;

/// Where the AHA-17 atlas (`AHA17_model_ED.nii.gz`) lives: `$CLAIM_ATLAS_DIR`,
/// else `../shared/data/aha-template` beside the crate. `None` when absent —
/// callers then skip and say so — unless `CLAIM_REQUIRE_ATLAS=1` (set by CI),
/// which turns a missing atlas into a test failure.
pub fn atlas_dir() -> Option<PathBuf> {
    let candidates = std::env::var_os("CLAIM_ATLAS_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::iter::once(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/aha-template"),
        ));
    for dir in candidates {
        if dir.join("AHA17_model_ED.nii.gz").is_file() {
            return Some(dir);
        }
    }
    if std::env::var("CLAIM_REQUIRE_ATLAS").is_ok_and(|v| v == "1") {
        // Test-only helper: CI demands the atlas, so its absence is a failure.
        panic!("CLAIM_REQUIRE_ATLAS=1 but the AHA atlas was not found (set CLAIM_ATLAS_DIR)");
    }
    eprintln!(
        "skipped: AHA atlas not found (set CLAIM_ATLAS_DIR or place ../shared beside the crate)"
    );
    None
}
