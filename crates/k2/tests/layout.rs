//! The shape the repository promises its readers: a short README holding both set-up
//! commands, CI running exactly the README's test command, and source files small enough
//! to hold one job each.

use std::path::{Path, PathBuf};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_readme_is_short_and_names_both_commands() {
    let readme = read(&repository().join("README.md"));
    let lines = readme.lines().count();
    assert!(lines <= 200, "README.md has {lines} lines; at most 200");
    assert!(
        readme.lines().any(|l| l.trim() == "cargo run -- demo"),
        "README.md does not show the main job's command"
    );
    assert!(
        readme.lines().any(|l| l.trim() == "scripts/test"),
        "README.md does not show the test command"
    );
    let ci = read(&repository().join(".ci/run"));
    assert!(
        ci.lines()
            .any(|l| l.trim() == "exec scripts/test" || l.trim() == "scripts/test"),
        ".ci/run does not run the README's test command:\n{ci}"
    );
}

#[test]
fn no_source_file_is_over_800_lines() {
    let mut files = Vec::new();
    for krate in std::fs::read_dir(repository().join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    assert!(files.len() > 100, "only {} source files found", files.len());
    let long: Vec<String> = files
        .iter()
        .filter(|f| !f.ends_with("tests.rs") && !f.components().any(|c| c.as_os_str() == "tests"))
        .filter_map(|f| {
            let lines = read(f).lines().count();
            (lines > 800).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "over 800 lines: {long:?}");
}
