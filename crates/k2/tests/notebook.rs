//! `notebooks/walkthrough.ipynb` runs, headless, as a reader would run it: nbclient
//! executes every cell (it starts its own K2 from this build) into a copy, and any cell that
//! raises fails the test. The committed notebook keeps the outputs of a run.

use std::path::Path;

#[test]
fn the_walkthrough_notebook_runs_headless() {
    let Some(python) = k2_testkit::services::service("K2_TEST_NB_PYTHON") else {
        return;
    };
    let notebooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../notebooks");
    let bin = Path::new(env!("CARGO_BIN_EXE_k2")).parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    let executed = out.path().join("walkthrough.ipynb");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = std::process::Command::new(python)
        .current_dir(&notebooks)
        .env("PATH", path)
        .args([
            "-c",
            "import sys, nbformat\n\
             from nbclient import NotebookClient\n\
             nb = nbformat.read('walkthrough.ipynb', 4)\n\
             NotebookClient(nb, timeout=170, kernel_name='python3', resources={'metadata': {'path': '.'}}).execute()\n\
             nbformat.write(nb, sys.argv[1])",
        ])
        .arg(&executed)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the notebook failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&executed).unwrap();
    for shown in [
        "Flight SQL: BHP 2014-03-12 20283 trades",
        "PyIceberg read 91,874 trades",
        "image/png",
        "duplicates_dropped",
    ] {
        assert!(text.contains(shown), "the executed notebook lacks {shown}");
    }
}
