//! The embedded store: per-user histories in memory, persisted to a
//! directory as an append-only checksummed log plus periodic snapshots.
//!
//! - Histories are struct-of-arrays rings kept newest first ([`history`]),
//!   in a sharded map ([`state`]): reads take no global lock.
//! - Appends are validated, written to the log (`log-<g>.wal`, see [`log`])
//!   and only then applied to memory, all under one writer lock, so memory
//!   order equals log order and memory is never ahead of the log.
//! - Every [`StoreConfig::snapshot_every`] records (or on
//!   [`EmbeddedStore::snapshot`]) a new log generation is started and the
//!   state written to `snapshot-<g>.msgpack` ([`snapshot`]).
//! - [`EmbeddedStore::open`] loads the newest good snapshot and replays the
//!   logs after it, cutting a torn tail ([`recover`]).

mod config;
mod files;
mod history;
mod lock;
mod log;
mod recover;
mod replay;
mod report;
mod snapshot;
mod state;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

pub use config::{Clock, StoreConfig, SyncPolicy, system_clock_ms};
pub use replay::SequenceReplay;
pub use report::{DamageReason, OpenReport, SkippedSnapshot, StoreStats, TailDamage};

use self::files::io_err;
use self::lock::DirLock;
use self::log::LogWriter;
use self::state::State;
use crate::{Action, SeqError, SequenceBuf, SequenceLimits, SequenceStore, UserId, UserSequences};

/// Encode buffers above this size are released after use.
const FRAME_KEEP_BYTES: usize = 1 << 20;

/// The writer side: the log and what goes with it, behind one lock.
#[derive(Debug)]
struct Writer {
    /// The current log file (`None` in memory).
    log: Option<LogWriter>,
    /// Why appends are refused, after a write left the log in an unknown state.
    poisoned: Option<String>,
    records_since_snapshot: u64,
    last_snapshot_error: Option<String>,
    /// Reused encode buffer for log records.
    frame: Vec<u8>,
    /// Set by `close`, so drop does not sync again.
    closed: bool,
}

/// An in-process [`SequenceStore`], optionally persisted to a directory.
///
/// Reads ([`SequenceStore::read_newest`]) run concurrently with each other
/// and with the single writer; they lock only the user they read. Appends
/// serialise on the log.
///
/// # Files
///
/// A store directory holds `log-<g>.wal` (append-only, checksummed records)
/// and `snapshot-<g>.msgpack` (the state after every log `< g`), see the
/// crate README, and `LOCK`: while a store is open it holds an exclusive
/// OS lock on that file, so a second open of the directory — from another
/// process or the same one — fails with [`SeqError::Locked`] instead of
/// interleaving two writers in one log. The OS releases the lock when the
/// process exits, even on a crash.
///
/// # Durability
///
/// Each append is written to the log before it is applied in memory and
/// acknowledged; [`StoreConfig::sync`] decides when it is also synced to
/// disk. If a log write fails the append returns the error and changes
/// nothing; if it leaves the log in an unknown state the store refuses
/// further appends ([`SeqError::Unavailable`]) until a successful
/// [`EmbeddedStore::snapshot`], while reads keep working.
pub struct EmbeddedStore {
    state: State,
    writer: Mutex<Writer>,
    /// Held while a snapshot is written (one at a time); appends do not
    /// take it.
    snapshotting: Mutex<()>,
    config: StoreConfig,
    dir: Option<PathBuf>,
    /// The directory's lock (`None` in memory); dropped after the writer's
    /// final sync, since fields drop after [`Drop::drop`].
    lock: Option<DirLock>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`, creating the directory if
    /// needed, and reports what it found.
    ///
    /// Loads the newest valid snapshot, replays the logs after it and cuts a
    /// torn or corrupt tail off the newest log (reported in
    /// [`OpenReport::truncated_tail`]). The configured capacity applies to
    /// the loaded state, even if it differs from the one it was written with.
    ///
    /// ```
    /// use transact_seq::{Action, ActionType, EmbeddedStore, SequenceBuf, SequenceStore, StoreConfig, Surface};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let config = StoreConfig::default().with_clock(|| 10_000);
    /// let act = |item, t| Action { item_id: item, action_type: ActionType::CLICK, timestamp_ms: t, surface: Surface(0) };
    ///
    /// let (store, report) = EmbeddedStore::open(dir.path(), config.clone())?;
    /// assert_eq!(report.users, 0);
    /// store.append(7, &[act(1, 1_000), act(2, 2_000), act(3, 3_000)])?;
    /// store.close()?;
    ///
    /// let (store, report) = EmbeddedStore::open(dir.path(), config)?;
    /// assert_eq!((report.users, report.actions), (1, 3));
    /// let mut buf = SequenceBuf::default();
    /// // The newest two at or before t = 2,500 ms, newest first.
    /// assert_eq!(store.read_newest(7, 2, Some(2_500), &mut buf)?, 2);
    /// assert_eq!(buf.item_ids, [2, 1]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(
        dir: impl AsRef<Path>,
        config: StoreConfig,
    ) -> Result<(EmbeddedStore, OpenReport), SeqError> {
        config.validate()?;
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let lock = DirLock::acquire(dir)?;
        let state = State::new();
        let rec = recover::recover(dir, &config, &state)?;
        let store = EmbeddedStore {
            state,
            snapshotting: Mutex::new(()),
            writer: Mutex::new(Writer {
                log: Some(rec.log),
                poisoned: None,
                records_since_snapshot: rec.records_since_snapshot,
                last_snapshot_error: None,
                frame: Vec::new(),
                closed: false,
            }),
            config,
            dir: Some(dir.to_path_buf()),
            lock: Some(lock),
        };
        Ok((store, rec.report))
    }

    /// A store without persistence (for tests and demos).
    ///
    /// Out-of-range configuration values are clamped (a capacity of 0 acts
    /// as 1, a negative skew as 0); [`EmbeddedStore::snapshot`] does nothing.
    ///
    /// ```
    /// use transact_seq::{Action, ActionType, EmbeddedStore, SequenceBuf, SequenceStore, StoreConfig, Surface};
    ///
    /// let store = EmbeddedStore::in_memory(StoreConfig::default().with_capacity_per_user(2));
    /// for t in 1..=3 {
    ///     let a = Action { item_id: t as u64, action_type: ActionType::REPIN, timestamp_ms: t, surface: Surface(0) };
    ///     store.append(1, &[a]).unwrap();
    /// }
    /// let mut buf = SequenceBuf::default();
    /// store.read_newest(1, 10, None, &mut buf).unwrap();
    /// assert_eq!(buf.item_ids, [3, 2]); // newest first; the oldest was dropped
    /// ```
    pub fn in_memory(config: StoreConfig) -> EmbeddedStore {
        EmbeddedStore {
            state: State::new(),
            snapshotting: Mutex::new(()),
            writer: Mutex::new(Writer {
                log: None,
                poisoned: None,
                records_since_snapshot: 0,
                last_snapshot_error: None,
                frame: Vec::new(),
                closed: false,
            }),
            config: config.clamped(),
            dir: None,
            lock: None,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The store directory (`None` in memory).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Starts a new log generation and writes the whole state to a snapshot,
    /// then deletes files no longer needed (the previous snapshot and the
    /// logs since are kept as a fallback). Does nothing in memory.
    ///
    /// Appends wait only while the log is switched (a sync and a file
    /// create), not while the snapshot is written: they go on into the new
    /// log, and each user is encoded under its own read lock with the
    /// position of the last log record it holds, so reopening replays each
    /// user's records after that position only (see the crate README).
    /// Reads never wait. Snapshots run one at a time.
    ///
    /// On a store refusing appends after a failed write, a successful
    /// snapshot makes the state durable again and lifts the refusal (that
    /// snapshot is written with appends held, since they are refused anyway).
    pub fn snapshot(&self) -> Result<(), SeqError> {
        let _one_at_a_time = self.snapshotting.lock();
        self.snapshot_unlocked()
    }

    /// [`EmbeddedStore::snapshot`] with the snapshot lock held.
    fn snapshot_unlocked(&self) -> Result<(), SeqError> {
        let Some(dir) = self.dir.as_deref() else {
            return Ok(());
        };
        let generation = {
            let mut w = self.writer.lock();
            if w.poisoned.is_some() {
                return self.snapshot_locked(&mut w);
            }
            match self.rotate_locked(&mut w)? {
                Some(g) => g,
                None => return Ok(()),
            }
        };
        // The writer lock is released: appends continue into log
        // `generation` while the state is written.
        let users = self.state.sorted_users();
        snapshot::write(dir, generation, &users)?;
        let _ = recover::prune(dir, generation);
        Ok(())
    }

    /// Syncs the current log and starts log generation `g + 1`, to which
    /// appends go from now on; returns the new generation (`None` in
    /// memory). If the snapshot of that generation is never written, the
    /// chain (the older snapshot and both logs) still holds everything.
    fn rotate_locked(&self, w: &mut Writer) -> Result<Option<u64>, SeqError> {
        let Some(dir) = self.dir.as_deref() else {
            return Ok(None);
        };
        let Some(log) = w.log.as_mut() else {
            return Ok(None);
        };
        let generation = log.generation() + 1;
        // The old log stays as the fallback behind the new snapshot: it
        // must be complete on disk before a newer log exists.
        if let Err(e) = log.sync() {
            w.poisoned = Some(e.to_string());
            return Err(e);
        }
        w.records_since_snapshot = 0;
        w.log = Some(LogWriter::create(dir, generation, self.config.sync)?);
        Ok(Some(generation))
    }

    /// A snapshot written with the writer lock held throughout (for a
    /// poisoned log: appends are refused meanwhile anyway).
    fn snapshot_locked(&self, w: &mut Writer) -> Result<(), SeqError> {
        let Some(dir) = self.dir.as_deref() else {
            return Ok(());
        };
        let Some(log) = w.log.as_mut() else {
            return Ok(());
        };
        let generation = log.generation() + 1;
        w.records_since_snapshot = 0;
        let new_log = LogWriter::create(dir, generation, self.config.sync)?;
        // From here on appends go to the new log; if the snapshot below fails,
        // the chain (older snapshot + both logs) still holds everything.
        w.log = Some(new_log);
        let users = self.state.sorted_users();
        snapshot::write(dir, generation, &users)?;
        w.poisoned = None;
        let _ = recover::prune(dir, generation);
        Ok(())
    }

    /// Syncs the log and closes the store, reporting a failure that dropping
    /// the store would only ignore.
    pub fn close(self) -> Result<(), SeqError> {
        let mut w = self.writer.lock();
        w.closed = true;
        match w.log.as_mut() {
            Some(log) if log.has_unsynced() => log.sync(),
            _ => Ok(()),
        }
    }

    /// Abandons the store as a crash would: nothing is synced or flushed,
    /// memory is leaked, and only the directory lock is released (as the OS
    /// releases it when a process dies), so the directory can be reopened
    /// in this process to test recovery. For crash tests; a service never
    /// needs it.
    #[doc(hidden)]
    pub fn simulate_crash(mut self) {
        drop(self.lock.take());
        std::mem::forget(self);
    }

    /// Every user with at least one action, sorted.
    pub fn users(&self) -> Vec<UserId> {
        self.state.user_ids()
    }

    /// Counts and file sizes.
    pub fn stats(&self) -> StoreStats {
        let w = self.writer.lock();
        StoreStats {
            users: self.state.user_count(),
            actions: self.state.action_count(),
            log_bytes: w.log.as_ref().map_or(0, LogWriter::len),
            log_generation: w.log.as_ref().map_or(0, LogWriter::generation),
            records_since_snapshot: w.records_since_snapshot,
            poisoned: w.poisoned.clone(),
            last_snapshot_error: w.last_snapshot_error.clone(),
        }
    }

    /// Calls `f` on each of the user's actions, newest first; returns how
    /// many (0 for an unknown user). The user's history is read-locked
    /// meanwhile: appends for this user wait, so keep `f` short, and do not
    /// append to this store from inside it.
    pub fn for_each_action(&self, user: UserId, mut f: impl FnMut(&Action)) -> usize {
        let Some(h) = self.state.get(user) else {
            return 0;
        };
        let h = h.read();
        let mut i = 0;
        while let Some(a) = h.realtime.get(i) {
            f(&a);
            i += 1;
        }
        i
    }

    /// Injects a fault into the next log write (tests only).
    #[cfg(test)]
    fn inject_fault(&self, fault: log::Fault) {
        if let Some(log) = self.writer.lock().log.as_mut() {
            log.fault = Some(fault);
        }
    }
}

impl SequenceStore for EmbeddedStore {
    fn check_append(&self, user: UserId, actions: &[Action]) -> Result<(), SeqError> {
        self.config.check_actions(user, actions)
    }

    fn append(&self, user: UserId, actions: &[Action]) -> Result<(), SeqError> {
        if actions.is_empty() {
            return Ok(());
        }
        self.config.check_actions(user, actions)?;
        let mut guard = self.writer.lock();
        let w = &mut *guard;
        if let Some(why) = &w.poisoned {
            return Err(SeqError::Unavailable(format!(
                "appends are refused after a failed log write left the log in an unknown \
                 state ({why}); take a snapshot or reopen the store"
            )));
        }
        if w.closed {
            return Err(SeqError::Unavailable("the store is closed".into()));
        }
        let mut pos = (0, 0);
        if let Some(log) = w.log.as_mut() {
            log::encode_append(&mut w.frame, user, actions)?;
            let written = log.append(&w.frame);
            pos = (log.generation(), log.len());
            if w.frame.capacity() > FRAME_KEEP_BYTES {
                w.frame = Vec::new();
            }
            if let Err(failure) = written {
                if !failure.log_intact {
                    w.poisoned = Some(failure.error.to_string());
                }
                return Err(failure.error);
            }
        }
        // The log holds the record: now memory may have it too.
        self.state.apply(user, actions, &self.config, pos);
        w.records_since_snapshot += 1;
        let every = self.config.snapshot_every;
        let due = every > 0 && w.records_since_snapshot >= every && w.log.is_some();
        drop(guard);
        if due {
            // This call writes the snapshot (other appends go on meanwhile);
            // when one is being written already, a later append tries again.
            if let Some(_one_at_a_time) = self.snapshotting.try_lock() {
                // The append itself succeeded; a failed snapshot is only recorded.
                let outcome = self.snapshot_unlocked();
                self.writer.lock().last_snapshot_error = outcome.err().map(|e| e.to_string());
            }
        }
        Ok(())
    }

    fn read_newest(
        &self,
        user: UserId,
        n: usize,
        at_or_before_ms: Option<i64>,
        out: &mut SequenceBuf,
    ) -> Result<usize, SeqError> {
        out.clear();
        let Some(h) = self.state.get(user) else {
            return Ok(0);
        };
        let h = h.read();
        Ok(h.realtime.copy_newest(n, at_or_before_ms, out))
    }

    fn read_sequences(
        &self,
        user: UserId,
        limits: &SequenceLimits,
        out: &mut UserSequences,
    ) -> Result<(), SeqError> {
        match self.state.get(user) {
            Some(h) => h.read().read(limits, out),
            None => out.clear(),
        }
        Ok(())
    }

    fn history_len(&self, user: UserId) -> Result<usize, SeqError> {
        Ok(self.state.get(user).map_or(0, |h| h.read().len()))
    }

    fn user_count(&self) -> usize {
        self.state.user_count()
    }

    fn sync(&self) -> Result<(), SeqError> {
        let mut w = self.writer.lock();
        let Some(log) = w.log.as_mut() else {
            return Ok(());
        };
        if let Err(e) = log.sync() {
            // After a failed fsync the fate of unsynced data is unknown.
            w.poisoned = Some(e.to_string());
            return Err(e);
        }
        Ok(())
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        let w = self.writer.get_mut();
        if w.closed {
            return;
        }
        if let Some(log) = w.log.as_mut()
            && log.has_unsynced()
        {
            // Best effort: `close` is the way to see this error.
            let _ = log.sync();
        }
    }
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir)
            .field("users", &self.state.user_count())
            .field("actions", &self.state.action_count())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
