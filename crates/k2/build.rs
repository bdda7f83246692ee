//! Packs the bundled ASX sample into the binary, so `k2 demo` runs anywhere: its files,
//! each as (path length u16, path, size u32, bytes), in one gzip stream.
//!
//! The sample is a dozen files; this framing is a few lines each way, so no archive
//! crate is needed on either side (gzip is `flate2`, already in the tree).

use std::io::Write;
use std::path::{Path, PathBuf};

fn main() {
    // Read when the script runs, not when it is compiled: a build directory shared by
    // checkouts at other paths reuses the compiled script.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("../../samples/asx-2014-03");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("sample.bin.gz");
    let file = std::fs::File::create(&out).expect("creating the packed sample");
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    for rel in &files {
        let bytes = std::fs::read(root.join(rel)).expect("reading a sample file");
        let name = rel
            .to_str()
            .expect("sample paths are UTF-8")
            .replace('\\', "/");
        let name_len = u16::try_from(name.len()).expect("a short path");
        let size = u32::try_from(bytes.len()).expect("a sample file under 4 GiB");
        gz.write_all(&name_len.to_le_bytes()).unwrap();
        gz.write_all(name.as_bytes()).unwrap();
        gz.write_all(&size.to_le_bytes()).unwrap();
        gz.write_all(&bytes).unwrap();
    }
    gz.finish().expect("writing the packed sample");
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the sample directory") {
        let path = entry.expect("a directory entry").path();
        println!("cargo:rerun-if-changed={}", path.display());
        if path.is_dir() {
            walk(root, &path, files);
        } else {
            files.push(
                path.strip_prefix(root)
                    .expect("under the root")
                    .to_path_buf(),
            );
        }
    }
}
