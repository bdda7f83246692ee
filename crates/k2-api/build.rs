//! Builds the page served at `/` from `web/`: the npm packages its lockfile pins are
//! installed into the build directory (`npm ci`: exact versions, integrity-checked; npm's
//! cache makes later builds offline) and esbuild bundles `web/src` into one script and one
//! stylesheet, which `src/page.rs` embeds. Nothing is fetched when the page is served.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let web =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../../web");
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo")).join("web");
    for watched in ["package.json", "package-lock.json", "src"] {
        println!("cargo:rerun-if-changed={}", web.join(watched).display());
    }
    fs::create_dir_all(&out).expect("creating the page's build directory");
    install(&web, &out);
    bundle(&web, &out);
}

/// The lockfile's packages, installed again only when the lockfile changed.
fn install(web: &Path, out: &Path) {
    let lock = fs::read(web.join("package-lock.json")).expect("reading web/package-lock.json");
    let installed = out.join("installed-lock.json");
    if fs::read(&installed).ok().as_deref() == Some(lock.as_slice())
        && out.join("node_modules").is_dir()
    {
        return;
    }
    fs::copy(web.join("package.json"), out.join("package.json")).expect("copying package.json");
    fs::write(out.join("package-lock.json"), &lock).expect("copying package-lock.json");
    // No install scripts: esbuild's only checks for its platform binary, which npm installs
    // as an optional dependency.
    run(
        Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--prefer-offline",
            ])
            .args(["--loglevel", "error"])
            .current_dir(out),
        "npm ci (the page's packages from web/package-lock.json)",
    );
    fs::write(&installed, &lock).expect("recording the installed lockfile");
}

fn bundle(web: &Path, out: &Path) {
    let dist = out.join("dist");
    fs::create_dir_all(&dist).expect("creating the page's output directory");
    run(
        Command::new(out.join("node_modules/esbuild/bin/esbuild"))
            .arg(web.join("src/main.js"))
            .args([
                "--bundle",
                "--minify",
                "--format=iife",
                "--target=es2020",
                "--legal-comments=eof",
                "--log-level=warning",
            ])
            .arg(format!("--outfile={}", dist.join("app.js").display()))
            .env("NODE_PATH", out.join("node_modules")),
        "esbuild (bundling web/src)",
    );
    fs::copy(web.join("src/index.html"), dist.join("index.html")).expect("copying index.html");
}

fn run(command: &mut Command, what: &str) {
    let status = command.status().unwrap_or_else(|e| {
        panic!(
            "{what}: could not start it ({e}). The web page is built from npm packages: \
             Node.js 18 or newer with npm must be on PATH."
        )
    });
    assert!(status.success(), "{what} failed ({status})");
}
