//! Opening a store directory: pick a snapshot, replay the logs after it,
//! cut a torn tail, tidy up.
//!
//! Generations chain: `snapshot-<g>` is the state after logs `< g`, and log
//! `g` continues from it. The store keeps the previous snapshot and the logs
//! since, so a damaged newest snapshot can be passed over without losing
//! anything. Only the newest log may end in a torn record (a crash mid-write);
//! damage in an older, completed log is an error.

use std::path::Path;

use super::config::StoreConfig;
use super::files::{self, io_err, log_path, remove_if_exists, with_suffix};
use super::log::{self, LogWriter, Record};
use super::report::{OpenReport, SkippedSnapshot, TailDamage};
use super::snapshot;
use super::state::{State, UserState};
use crate::{SeqError, UserId};

/// Users loaded from a snapshot, sorted by id.
type LoadedUsers = Vec<(UserId, UserState)>;

/// What recovery hands to the store.
pub(crate) struct Recovered {
    pub(crate) log: LogWriter,
    pub(crate) report: OpenReport,
    pub(crate) records_since_snapshot: u64,
}

/// Loads `dir` into `state` (which must be empty) and opens the newest log.
pub(crate) fn recover(
    dir: &Path,
    config: &StoreConfig,
    state: &State,
) -> Result<Recovered, SeqError> {
    let listing = files::list(dir)?;
    for tmp in &listing.temps {
        remove_if_exists(tmp)?;
    }
    let newest = listing
        .logs
        .keys()
        .chain(listing.snapshots.keys())
        .max()
        .copied()
        .unwrap_or(0);

    // Newest usable starting point: a snapshot that checks out, or the empty
    // state before log 0, whose chain of logs up to `newest` is complete (a
    // log may be missing only when it is the snapshot's own and the newest
    // generation, i.e. a crash right after the snapshot: it is created empty).
    let chain_complete = |base: u64| {
        (base..=newest).all(|g| listing.logs.contains_key(&g) || (g == base && g == newest))
    };
    let mut skipped: Vec<SkippedSnapshot> = Vec::new();
    let mut start: Option<(Option<u64>, LoadedUsers)> = None;
    for (&g, path) in listing.snapshots.iter().rev() {
        if !chain_complete(g) {
            continue;
        }
        match snapshot::read(path, g, config) {
            Ok(users) => {
                start = Some((Some(g), users));
                break;
            }
            Err(SeqError::Corrupt { path, detail }) => {
                skipped.push(SkippedSnapshot { path, detail })
            }
            Err(e) => return Err(e),
        }
    }
    if start.is_none() && chain_complete(0) {
        start = Some((None, Vec::new()));
    }
    let Some((snapshot_generation, users)) = start else {
        return Err(match skipped.into_iter().next() {
            Some(s) => SeqError::Corrupt {
                path: s.path,
                detail: format!(
                    "{}; no older snapshot with a complete chain of logs to fall back to",
                    s.detail
                ),
            },
            None => SeqError::Corrupt {
                path: dir.to_path_buf(),
                detail: format!(
                    "no usable starting point: snapshot generations {:?} and log generations {:?} \
                     do not form a complete chain up to generation {newest}",
                    listing.snapshots.keys().collect::<Vec<_>>(),
                    listing.logs.keys().collect::<Vec<_>>()
                ),
            },
        });
    };
    for (user, history) in users {
        state.install(user, history);
    }

    let base = snapshot_generation.unwrap_or(0);
    let mut records_replayed = 0u64;
    let mut truncated_tail = None;
    let mut writer = None;
    let mut records_in_newest = 0u64;
    for g in base..=newest {
        let path = log_path(dir, g);
        let is_newest = g == newest;
        if !listing.logs.contains_key(&g) {
            // Only the starting snapshot's own log, when it is the newest
            // (checked above): nothing was appended after the snapshot.
            writer = Some(LogWriter::create(dir, g, config.sync)?);
            continue;
        }
        let scan = log::scan(&path, g, |Record::Append { user, actions }, end| {
            state.apply(user, &actions, config, (g, end));
        })?;
        records_replayed += scan.records;
        let mut good_len = scan.good_len;
        if let Some((offset, reason)) = scan.damage {
            if !is_newest {
                return Err(SeqError::Corrupt {
                    path,
                    detail: format!(
                        "damaged record at byte {offset}: {reason}; this log was completed \
                         before a newer one was started, so this is not a torn write"
                    ),
                });
            }
            if offset == 0 {
                // Torn while being created: start the file afresh.
                remove_if_exists(&path)?;
                let w = LogWriter::create(dir, g, config.sync)?;
                good_len = w.len();
                writer = Some(w);
            } else {
                log::truncate(&path, good_len)?;
            }
            truncated_tail = Some(TailDamage {
                path: path.clone(),
                offset,
                bytes_dropped: scan.file_len - offset,
                reason,
            });
        }
        if is_newest {
            records_in_newest = scan.records;
            if writer.is_none() {
                writer = Some(LogWriter::open_append(path, g, good_len, config.sync)?);
            }
        }
    }
    let log = match writer {
        Some(w) => w,
        None => LogWriter::create(dir, newest, config.sync)?,
    };

    // Keep damaged snapshots for inspection, out of the way of the next open.
    for s in &skipped {
        let aside = with_suffix(&s.path, ".corrupt");
        std::fs::rename(&s.path, &aside).map_err(|e| io_err(&s.path, e))?;
    }
    files::sync_dir(dir)?;
    // Best effort: leftovers from a crash between snapshot and clean-up.
    let _ = prune(dir, base);

    let report = OpenReport {
        dir: dir.to_path_buf(),
        snapshot_generation,
        log_generation: log.generation(),
        records_replayed,
        truncated_tail,
        skipped_snapshots: skipped,
        users: state.user_count(),
        actions: state.action_count(),
    };
    Ok(Recovered {
        log,
        report,
        records_since_snapshot: records_in_newest,
    })
}

/// Deletes the files no recovery can need any more, given that generation
/// `current` is the starting point: everything older than the newest
/// snapshot before `current` (which is kept, with its logs, as a fallback).
pub(crate) fn prune(dir: &Path, current: u64) -> Result<(), SeqError> {
    let listing = files::list(dir)?;
    let Some(&keep_from) = listing.snapshots.keys().rev().find(|&&g| g < current) else {
        return Ok(());
    };
    for (&g, path) in listing.logs.iter().chain(listing.snapshots.iter()) {
        if g < keep_from {
            remove_if_exists(path)?;
        }
    }
    files::sync_dir(dir)
}
