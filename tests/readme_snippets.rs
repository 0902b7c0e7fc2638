//! The READMEs' snippets (the project README's "Use it from …" section and
//! the bindings' READMEs) are the programs CI runs: each
//! fenced block after a `<!-- snippet: PATH -->` line must equal the part
//! of PATH between its `readme:begin` and `readme:end` marker lines (any
//! comment syntax; the whole file without markers), dedented. CI builds
//! and runs those files (`bindings/examples/run.sh`, the Python and Slicer
//! suites, the ITK test), so a snippet that drifts from them fails here.
//!
//! `CLAIM_BLESS=1 cargo test --test readme_snippets` rewrites the README's
//! blocks from the files.

use std::path::Path;

const MARKER: &str = "<!-- snippet: ";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The lines of `text` between the `readme:begin` and `readme:end` marker
/// lines (the whole text without a begin marker), with the common
/// indentation removed.
fn region(text: &str, path: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let begin = lines.iter().position(|l| l.contains("readme:begin"));
    let body: Vec<&str> = match begin {
        None => lines,
        Some(begin) => {
            let end = lines[begin..]
                .iter()
                .position(|l| l.contains("readme:end"))
                .unwrap_or_else(|| panic!("{path}: readme:begin without readme:end"));
            lines[begin + 1..begin + end].to_vec()
        }
    };
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for line in body {
        out.push_str(line.get(indent..).unwrap_or("").trim_end());
        out.push('\n');
    }
    out
}

/// One snippet: the file it quotes and the byte range of its block's
/// contents in the README.
struct Snippet {
    path: String,
    contents: std::ops::Range<usize>,
}

fn snippets(readme: &str) -> Vec<Snippet> {
    let mut out = Vec::new();
    let mut search = 0;
    while let Some(found) = readme[search..].find(MARKER) {
        let start = search + found + MARKER.len();
        let close = readme[start..]
            .find(" -->")
            .expect("snippet marker ends with -->");
        let path = readme[start..start + close].trim().to_string();
        let after = start + close;
        let fence = readme[after..]
            .find("```")
            .unwrap_or_else(|| panic!("no fenced block after the snippet marker of {path}"))
            + after;
        let body = readme[fence..].find('\n').expect("fence line ends") + fence + 1;
        // The closing fence: the first line from `body` on that starts with ```.
        let end = if readme[body..].starts_with("```") {
            body
        } else {
            readme[body..]
                .find("\n```")
                .unwrap_or_else(|| panic!("unterminated block for {path}"))
                + body
                + 1
        };
        out.push(Snippet {
            path,
            contents: body..end,
        });
        search = end;
    }
    out
}

/// The READMEs that quote files: the project's and the bindings'.
const READMES: &[&str] = &[
    "README.md",
    "bindings/python/README.md",
    "bindings/itk/README.md",
    "bindings/slicer/README.md",
];

/// Checks (or with `bless` rewrites) the snippets of one README; returns
/// how many it quotes and the paths of those that drifted.
fn check_readme(readme_rel: &str, bless: bool) -> (usize, Vec<String>) {
    let readme_path = repo().join(readme_rel);
    let readme =
        std::fs::read_to_string(&readme_path).unwrap_or_else(|e| panic!("{readme_rel}: {e}"));
    let found = snippets(&readme);
    let mut blessed = readme.clone();
    let mut stale = Vec::new();
    // Back to front so earlier ranges stay valid while rewriting.
    for snippet in found.iter().rev() {
        let text = std::fs::read_to_string(repo().join(&snippet.path))
            .unwrap_or_else(|e| panic!("{readme_rel} quotes {}: {e}", snippet.path));
        let want = region(&text, &snippet.path);
        if readme[snippet.contents.clone()] != want {
            stale.push(format!("{readme_rel}: {}", snippet.path));
            blessed.replace_range(snippet.contents.clone(), &want);
        }
    }
    if bless && blessed != readme {
        std::fs::write(&readme_path, blessed)
            .unwrap_or_else(|e| panic!("rewrite {readme_rel}: {e}"));
    }
    (found.len(), stale)
}

#[test]
fn readme_snippets_are_the_files_ci_runs() {
    let bless = std::env::var_os("CLAIM_BLESS").is_some();
    let mut stale = Vec::new();
    for readme in READMES {
        let (count, drifted) = check_readme(readme, bless);
        if *readme == "README.md" {
            // C, C++, CMake, pkg-config, Python, ITK, Slicer.
            assert!(
                count >= 7,
                "expected README.md to quote at least 7 snippets, found {count}"
            );
        }
        stale.extend(drifted);
    }
    if bless {
        return;
    }
    assert!(
        stale.is_empty(),
        "README snippets differ from the files CI runs: {stale:?}; regenerate with \
         CLAIM_BLESS=1 cargo test --test readme_snippets"
    );
}

#[test]
fn regions_are_dedented_and_bounded() {
    let text = "a\n  // readme:begin\n    x\n      y\n  // readme:end\nb\n";
    assert_eq!(region(text, "t"), "x\n  y\n");
    assert_eq!(region("p\nq\n", "t"), "p\nq\n");
    let readme = "t\n<!-- snippet: f.c -->\n```c\nint x;\n```\n<!-- snippet: g.c -->\n```c\n```\n";
    let found = snippets(readme);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].path, "f.c");
    assert_eq!(&readme[found[0].contents.clone()], "int x;\n");
    assert_eq!(found[1].path, "g.c");
    assert!(found[1].contents.is_empty());
}
