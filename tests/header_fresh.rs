//! Fails when the committed `include/claim.h` differs from what cbindgen
//! generates from `src/ffi/` now. `CLAIM_BLESS=1` rewrites the header.

use std::path::Path;

#[test]
fn committed_header_matches_a_fresh_generation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen could not generate the header from src/ffi/");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let fresh = String::from_utf8(fresh).expect("cbindgen wrote UTF-8");

    let header = root.join("include/claim.h");
    if std::env::var("CLAIM_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(header.parent().unwrap()).unwrap();
        std::fs::write(&header, &fresh).unwrap();
        eprintln!("CLAIM_BLESS=1: rewrote {}", header.display());
        return;
    }
    let committed = std::fs::read_to_string(&header).unwrap_or_default();
    if committed == fresh {
        return;
    }
    let first_difference = committed
        .lines()
        .zip(fresh.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| committed.lines().count().min(fresh.lines().count()));
    let line = |text: &str| {
        text.lines()
            .nth(first_difference)
            .unwrap_or("<end of file>")
            .to_owned()
    };
    panic!(
        "include/claim.h is stale: it differs from a fresh cbindgen generation first at line {}\n\
         committed: {}\n\
         fresh:     {}\n\
         ({} lines committed, {} fresh). Regenerate it with\n    \
         CLAIM_BLESS=1 cargo test --test header_fresh\n\
         and review `git diff include/claim.h`.",
        first_difference + 1,
        line(&committed),
        line(&fresh),
        committed.lines().count(),
        fresh.lines().count()
    );
}
