//! The ASX sample built into the binary (see `build.rs`): `k2 demo` and the benchmarks
//! unpack it when no sample directory is given, so they run without the repository.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

static PACKED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sample.bin.gz"));

/// The sample's name: the directory it unpacks to.
const NAME: &str = "asx-2014-03";

/// `dir` if it holds a sample in the ASX layout.
pub fn check(dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir
        .join("reference-data")
        .join("company_info.csv")
        .is_file()
    {
        bail!(
            "{} is not a sample in the ASX layout (reference-data/company_info.csv is missing)",
            dir.display()
        );
    }
    Ok(dir.to_path_buf())
}

/// Unpacks the built-in sample under `parent` (files already there with the same bytes
/// are left alone) and returns its directory.
pub fn unpack(parent: &Path) -> anyhow::Result<PathBuf> {
    let dir = parent.join(NAME);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(PACKED)
        .read_to_end(&mut raw)
        .context("unpacking the built-in sample")?;
    for (name, bytes) in entries(&raw)? {
        let path = dir.join(name);
        if std::fs::read(&path).is_ok_and(|old| old == bytes) {
            continue;
        }
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    check(&dir)
}

/// The (relative path, bytes) of each packed file.
fn entries(mut raw: &[u8]) -> anyhow::Result<Vec<(&str, &[u8])>> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let name_len = usize::from(u16::from_le_bytes(take(&mut raw, 2)?.try_into()?));
        let name = std::str::from_utf8(take(&mut raw, name_len)?)?;
        if name.split('/').any(|part| part == ".." || part.is_empty()) {
            bail!("the built-in sample names an unsafe path '{name}'");
        }
        let size = u32::from_le_bytes(take(&mut raw, 4)?.try_into()?) as usize;
        out.push((name, take(&mut raw, size)?));
    }
    Ok(out)
}

fn take<'a>(raw: &mut &'a [u8], n: usize) -> anyhow::Result<&'a [u8]> {
    if raw.len() < n {
        bail!("the built-in sample is cut short");
    }
    let (head, rest) = raw.split_at(n);
    *raw = rest;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn files(root: &Path, dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }

    #[test]
    fn the_built_in_sample_unpacks_to_the_repository_sample() {
        let dir = tempfile::tempdir().unwrap();
        let unpacked = super::unpack(dir.path()).unwrap();
        let repo = k2_testkit::sample::dir();
        let (mut want, mut got) = (Vec::new(), Vec::new());
        files(&repo, &repo, &mut want);
        files(&unpacked, &unpacked, &mut got);
        want.sort();
        got.sort();
        assert_eq!(got, want);
        for rel in &want {
            let same = std::fs::read(unpacked.join(rel)).unwrap()
                == std::fs::read(repo.join(rel)).unwrap();
            assert!(same, "{} differs", rel.display());
        }
        // A second unpack finds every file in place.
        assert_eq!(super::unpack(dir.path()).unwrap(), unpacked);
    }
}
