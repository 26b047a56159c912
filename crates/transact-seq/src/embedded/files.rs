//! File names in a store directory, directory listing and fsync helpers.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::SeqError;

/// Suffix of files being written (renamed into place when complete).
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Wraps an I/O error with the path it happened on.
pub(crate) fn io_err(path: &Path, source: io::Error) -> SeqError {
    SeqError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `log-<generation>.wal`
pub(crate) fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("log-{generation}.wal"))
}

/// `snapshot-<generation>.msgpack`
pub(crate) fn snapshot_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("snapshot-{generation}.msgpack"))
}

/// `path` with [`TMP_SUFFIX`] appended.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(TMP_SUFFIX);
    PathBuf::from(s)
}

/// `path` with `suffix` appended.
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The store files found in a directory, by generation.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// `log-<g>.wal` files.
    pub(crate) logs: BTreeMap<u64, PathBuf>,
    /// `snapshot-<g>.msgpack` files.
    pub(crate) snapshots: BTreeMap<u64, PathBuf>,
    /// Leftover `*.tmp` files of interrupted writes.
    pub(crate) temps: Vec<PathBuf>,
}

fn parse_generation(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Lists the store files in `dir`; other files are ignored.
pub(crate) fn list(dir: &Path) -> Result<Listing, SeqError> {
    let mut out = Listing::default();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(g) = parse_generation(name, "log-", ".wal") {
            out.logs.insert(g, entry.path());
        } else if let Some(g) = parse_generation(name, "snapshot-", ".msgpack") {
            out.snapshots.insert(g, entry.path());
        } else if name.ends_with(TMP_SUFFIX)
            && (name.starts_with("log-") || name.starts_with("snapshot-"))
        {
            out.temps.push(entry.path());
        }
    }
    Ok(out)
}

/// Makes renames and file creations in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SeqError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(dir, e))?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_if_exists(path: &Path) -> Result<(), SeqError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Reads until `buf` is full or the reader is exhausted; returns the bytes read.
pub(crate) fn read_full(r: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names_parse() {
        assert_eq!(parse_generation("log-12.wal", "log-", ".wal"), Some(12));
        assert_eq!(parse_generation("log-.wal", "log-", ".wal"), None);
        assert_eq!(parse_generation("log-+1.wal", "log-", ".wal"), None);
        assert_eq!(parse_generation("log-1.wal.tmp", "log-", ".wal"), None);
        let p = log_path(Path::new("/x"), 7);
        assert_eq!(p, Path::new("/x/log-7.wal"));
        assert_eq!(tmp_path(&p), Path::new("/x/log-7.wal.tmp"));
    }
}
