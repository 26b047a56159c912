//! The exclusive lock on a store directory: one open store per directory,
//! across processes and within one.
//!
//! The lock is an OS advisory lock (`flock` on Unix, `LockFileEx` on
//! Windows, through [`std::fs::File::try_lock`]) on the file `LOCK` in the
//! directory, held for the store's lifetime. The OS releases it when the
//! process exits, however it exits, so a crashed store never leaves a stale
//! lock behind; the file itself stays and is reused.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use super::files::io_err;
use crate::SeqError;

/// Name of the lock file in a store directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// A held directory lock; released on drop.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir`, or fails at once with
    /// [`SeqError::Locked`] if another open store holds it.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, SeqError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(SeqError::Locked {
                dir: dir.to_path_buf(),
            }),
            Err(TryLockError::Error(e)) => Err(io_err(&path, e)),
        }
    }
}
