//! Importers for real logs, and logged requests built from them.
//!
//! # Formats
//!
//! | [`Format`] | line | time |
//! |---|---|---|
//! | `MovielensCsv` (`ratings.csv`) | `userId,movieId,rating,timestamp`, header | seconds |
//! | `MovielensDat` (`ratings.dat`) | `user::item::rating::timestamp` | seconds |
//! | `MovielensUdata` (`u.data`) | `user item rating timestamp`, tab- or space-separated | seconds |
//! | `GenericCsv` | `user,item,action,timestamp`, optional header | ms |
//! | `Whitespace` | `user item` or `user item1 item2 …` | none: one minute apart in file order |
//!
//! Ratings become actions: `≥ 4` a repin (positive), `≤ 2` a hide, otherwise
//! a click (a view). A generic CSV's action is a name (`repin`, `save`,
//! `click`, `view`, `hide`, `impression`; any case) or a raw id 1–4.
//! Users and items are re-indexed densely in order of first appearance; the
//! raw ids are kept. Each user's actions are sorted by time (ties keep file
//! order). The format is detected from the file name (`ratings.csv`,
//! `ratings.dat`, `u.data`) or else the first line (`::`, commas with a
//! rating column, tabs, …) unless given.
//!
//! A malformed line is an error naming the file and the 1-based line; with
//! [`ImportOptions::skip_bad`] it is skipped and counted instead.
//!
//! # Item embeddings
//!
//! By default the trainer learns an item table. With
//! [`ImportOptions::item_embeddings`], a safetensors file gives them: tensor
//! `items.weight` `[n × dim]` (f32) and optionally `items.ids` `[n]` (i64
//! raw ids; without it, row `i` belongs to the item whose raw id is the
//! integer `i`). Items without a row get zeros (counted in the report).
//!
//! # Logged requests from a log
//!
//! Rating logs have no slates. [`requests_from_log`] builds them so that
//! training has examples and HIT@3 per head is defined: per user of a SASRec
//! split, the interactions before the held-out validation item (the last two
//! stay out), after a warm-up of [`WARM_UP`] interactions, are cut into
//! consecutive chunks of [`CHUNK`]; a chunk is one request at its first
//! action's time whose slate is the chunk's items with their labels (repin,
//! click or hide) plus [`SAMPLED`] items the user never touched, unlabelled
//! (shown, not engaged), drawn with a seeded generator.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transact_seq::{Action, ActionType, Surface};

use super::{
    Dataset, ItemCatalog, ItemEmbeddings, LoggedCandidate, LoggedRequest, UserHistory,
    default_heads, label_bit,
};
use crate::data::{HEAD_CLICK, HEAD_HIDE, HEAD_REPIN};
use crate::eval::{SasrecSplit, is_interaction};
use crate::trainer::TrainConfig;

/// Interactions of a user's log skipped before the first built request.
pub const WARM_UP: usize = 5;
/// Logged actions per built request.
pub const CHUNK: usize = 3;
/// Never-touched items added to each built slate.
pub const SAMPLED: usize = 5;

/// A log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// MovieLens `ratings.csv`.
    MovielensCsv,
    /// MovieLens `ratings.dat`.
    MovielensDat,
    /// MovieLens 100k `u.data`.
    MovielensUdata,
    /// `user,item,action,timestamp`.
    GenericCsv,
    /// `user item …` per line.
    Whitespace,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::MovielensCsv => "movielens ratings.csv",
            Format::MovielensDat => "movielens ratings.dat",
            Format::MovielensUdata => "movielens u.data",
            Format::GenericCsv => "csv user,item,action,timestamp",
            Format::Whitespace => "whitespace next-item",
        }
    }
}

/// Import options.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// The format (`None`: detect).
    pub format: Option<Format>,
    /// Skip malformed lines (counted) instead of failing.
    pub skip_bad: bool,
    /// Pretrained item embeddings (see the module docs).
    pub item_embeddings: Option<PathBuf>,
}

/// What an import did.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportReport {
    /// Format used.
    pub format: Format,
    /// Non-empty lines read (header included).
    pub lines: usize,
    /// Actions imported.
    pub actions: usize,
    /// Lines skipped as malformed.
    pub skipped: usize,
    /// The first few skip reasons.
    pub skip_examples: Vec<String>,
    /// Users.
    pub users: usize,
    /// Items.
    pub items: usize,
    /// Items without a pretrained embedding row (zeros), when embeddings were given.
    pub items_without_embedding: usize,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} lines → {} actions, {} users, {} items, {} skipped",
            self.format.name(),
            self.lines,
            self.actions,
            self.users,
            self.items,
            self.skipped
        )?;
        if let Some(e) = self.skip_examples.first() {
            write!(f, " (first: {e})")?;
        }
        if self.items_without_embedding > 0 {
            write!(
                f,
                ", {} items without an embedding row",
                self.items_without_embedding
            )?;
        }
        Ok(())
    }
}

/// Import failures.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A malformed line.
    #[error("{path}:{line}: {what}")]
    Line {
        /// File.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// Nothing usable in the file.
    #[error("{0}: no actions")]
    Empty(String),
    /// The embeddings file is unusable.
    #[error("{path}: {what}")]
    Embeddings {
        /// File.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// The split does not match the dataset.
    #[error("{0}")]
    Split(String),
}

/// Picks the format from the file name, then the first line.
pub fn detect(path: &Path, first_line: &str) -> Format {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with("ratings.csv") {
        return Format::MovielensCsv;
    }
    if name.ends_with(".dat") || first_line.contains("::") {
        return Format::MovielensDat;
    }
    if name == "u.data" {
        return Format::MovielensUdata;
    }
    let l = first_line.to_ascii_lowercase();
    if l.contains(',') {
        if l.contains("rating") {
            return Format::MovielensCsv;
        }
        return Format::GenericCsv;
    }
    let fields: Vec<&str> = first_line.split_whitespace().collect();
    if first_line.contains('\t')
        && fields.len() == 4
        && fields.iter().all(|f| f.parse::<f64>().is_ok())
    {
        return Format::MovielensUdata;
    }
    Format::Whitespace
}

/// One parsed line: `(user, items, action, time_ms)` (several items only
/// in the whitespace format); `None` for a header.
type Parsed = Option<(String, Vec<String>, ActionType, Option<i64>)>;

fn rating_action(r: f64) -> ActionType {
    if r >= 4.0 {
        ActionType::REPIN
    } else if r <= 2.0 {
        ActionType::HIDE
    } else {
        ActionType::CLICK
    }
}

fn parse_rating(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("rating {s:?} is not a number"))?;
    if !(0.0..=10.0).contains(&r) {
        return Err(format!("rating {r} out of range 0..=10"));
    }
    Ok(r)
}

/// Seconds (or ms) to ms, refusing negative or absurd times (after 2300).
fn parse_time(s: &str, seconds: bool) -> Result<i64, String> {
    let t: i64 = s
        .trim()
        .parse()
        .map_err(|_| format!("timestamp {s:?} is not an integer"))?;
    let ms = if seconds {
        t.checked_mul(1000)
    } else {
        Some(t)
    };
    match ms {
        Some(ms) if (0..=10_413_792_000_000).contains(&ms) => Ok(ms),
        _ => Err(format!("timestamp {t} out of range")),
    }
}

fn id(s: &str, what: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("empty {what} id"));
    }
    Ok(s.to_string())
}

fn parse_line(format: Format, line: &str, first: bool) -> Result<Parsed, String> {
    let fields4 = |parts: Vec<&str>| -> Result<[String; 4], String> {
        if parts.len() != 4 {
            return Err(format!("{} fields, expected 4", parts.len()));
        }
        Ok([0, 1, 2, 3].map(|i| parts[i].trim().to_string()))
    };
    match format {
        Format::MovielensCsv | Format::MovielensDat | Format::MovielensUdata => {
            let parts: Vec<&str> = match format {
                Format::MovielensCsv => line.split(',').collect(),
                Format::MovielensDat => line.split("::").collect(),
                _ => line.split_whitespace().collect(),
            };
            if first
                && format == Format::MovielensCsv
                && line.to_ascii_lowercase().contains("rating")
            {
                return Ok(None);
            }
            let [u, i, r, t] = fields4(parts)?;
            let action = rating_action(parse_rating(&r)?);
            Ok(Some((
                id(&u, "user")?,
                vec![id(&i, "item")?],
                action,
                Some(parse_time(&t, true)?),
            )))
        }
        Format::GenericCsv => {
            let [u, i, a, t] = fields4(line.split(',').collect())?;
            let action = match a.to_ascii_lowercase().as_str() {
                "repin" | "save" | "1" => ActionType::REPIN,
                "click" | "view" | "2" => ActionType::CLICK,
                "hide" | "3" => ActionType::HIDE,
                "impression" | "4" => ActionType::IMPRESSION,
                _ if first => return Ok(None),
                other => return Err(format!("unknown action {other:?}")),
            };
            Ok(Some((
                id(&u, "user")?,
                vec![id(&i, "item")?],
                action,
                Some(parse_time(&t, false)?),
            )))
        }
        Format::Whitespace => {
            let mut parts = line.split_whitespace();
            let u = parts.next().ok_or("empty line")?.to_string();
            let items: Vec<String> = parts.map(str::to_string).collect();
            if items.is_empty() {
                return Err("a user without items".into());
            }
            Ok(Some((u, items, ActionType::REPIN, None)))
        }
    }
}

/// Reads a log file into a [`Dataset`] (no logged requests: see
/// [`requests_from_log`]).
pub fn import_path(
    path: &Path,
    opts: &ImportOptions,
) -> Result<(Dataset, ImportReport), ImportError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Io {
        path: shown.clone(),
        source,
    })?;
    let first_line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let format = opts.format.unwrap_or_else(|| detect(path, first_line));
    let mut report = ImportReport {
        format,
        lines: 0,
        actions: 0,
        skipped: 0,
        skip_examples: Vec::new(),
        users: 0,
        items: 0,
        items_without_embedding: 0,
    };
    let mut user_index: HashMap<String, u32> = HashMap::new();
    let mut item_index: HashMap<String, u32> = HashMap::new();
    let mut users: Vec<UserHistory> = Vec::new();
    let mut raw_items: Vec<String> = Vec::new();
    // Synthesised times of the whitespace format: one minute apart per user.
    let mut next_time: Vec<i64> = Vec::new();
    let mut first = true;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        report.lines += 1;
        let parsed = parse_line(format, line, first);
        first = false;
        let (u, items, action, time) = match parsed {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(what) if opts.skip_bad => {
                report.skipped += 1;
                if report.skip_examples.len() < 3 {
                    report.skip_examples.push(format!("line {}: {what}", n + 1));
                }
                continue;
            }
            Err(what) => {
                return Err(ImportError::Line {
                    path: shown,
                    line: n + 1,
                    what,
                });
            }
        };
        let next = users.len() as u32;
        let ui = *user_index.entry(u.clone()).or_insert(next);
        if ui == next {
            users.push(UserHistory {
                raw_id: u,
                actions: Vec::new(),
                weight: 1.0,
            });
            next_time.push(0);
        }
        for item in items {
            let next = raw_items.len() as u32;
            let ii = *item_index.entry(item.clone()).or_insert(next);
            if ii == next {
                raw_items.push(item);
            }
            let t = match time {
                Some(t) => t,
                None => {
                    let t = next_time[ui as usize];
                    next_time[ui as usize] += 60_000;
                    t
                }
            };
            users[ui as usize].actions.push(Action {
                item_id: u64::from(ii),
                action_type: action,
                timestamp_ms: t,
                surface: Surface(0),
            });
            report.actions += 1;
        }
    }
    if report.actions == 0 {
        return Err(ImportError::Empty(shown));
    }
    for u in &mut users {
        u.actions.sort_by_key(|a| a.timestamp_ms);
    }
    report.users = users.len();
    report.items = raw_items.len();
    let embeddings = match &opts.item_embeddings {
        Some(p) => {
            let (e, missing) = load_embeddings(p, &raw_items)?;
            report.items_without_embedding = missing;
            Some(e)
        }
        None => None,
    };
    let name = path
        .file_name()
        .map_or_else(|| shown.clone(), |n| n.to_string_lossy().into_owned());
    Ok((
        Dataset {
            name,
            heads: default_heads(),
            items: ItemCatalog {
                count: raw_items.len(),
                raw_ids: raw_items,
                embeddings,
            },
            users,
            requests: Vec::new(),
        },
        report,
    ))
}

/// Reads `items.weight` (and `items.ids`) from a safetensors file and lays
/// the rows out in dataset item order; returns the table and how many
/// items had no row.
pub fn load_embeddings(
    path: &Path,
    raw_ids: &[String],
) -> Result<(ItemEmbeddings, usize), ImportError> {
    let shown = path.display().to_string();
    let err = |what: String| ImportError::Embeddings {
        path: shown.clone(),
        what,
    };
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        path: shown.clone(),
        source,
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    let w = st
        .tensor("items.weight")
        .map_err(|_| err("no tensor items.weight".into()))?;
    if w.dtype() != safetensors::Dtype::F32 || w.shape().len() != 2 {
        return Err(err(format!(
            "items.weight must be a 2-d f32 tensor, got {:?} {:?}",
            w.dtype(),
            w.shape()
        )));
    }
    let (n, dim) = (w.shape()[0], w.shape()[1]);
    if dim == 0 {
        return Err(err("items.weight has width 0".into()));
    }
    // Without rows the width is backed by no data: a file of a few bytes
    // could claim any width and make the table below arbitrarily large.
    if n == 0 {
        return Err(err(format!("items.weight has no rows (width {dim})")));
    }
    let data: Vec<f32> = w
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(err(format!("non-finite value at index {i}")));
    }
    let ids: Vec<i64> = match st.tensor("items.ids") {
        Ok(t) => {
            if t.dtype() != safetensors::Dtype::I64 || t.shape() != [n] {
                return Err(err(format!("items.ids must be i64 [{n}]")));
            }
            t.data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect()
        }
        Err(_) => (0..n as i64).collect(),
    };
    let row_of: HashMap<i64, usize> = ids.iter().enumerate().map(|(r, &i)| (i, r)).collect();
    let cells = raw_ids
        .len()
        .checked_mul(dim)
        .ok_or_else(|| err(format!("{} items × width {dim} overflows", raw_ids.len())))?;
    let mut out = vec![0.0f32; cells];
    let mut missing = 0;
    for (i, raw) in raw_ids.iter().enumerate() {
        match raw.parse::<i64>().ok().and_then(|k| row_of.get(&k)) {
            Some(&r) => out[i * dim..(i + 1) * dim].copy_from_slice(&data[r * dim..(r + 1) * dim]),
            None => missing += 1,
        }
    }
    Ok((ItemEmbeddings { dim, data: out }, missing))
}

/// Writes item embeddings in the format [`load_embeddings`] reads:
/// `items.weight` `[n × dim]` (the first `n = raw_ids.len()` rows of
/// `weights`, in dataset item order) and `items.ids` `[n]` (the raw ids).
/// Raw ids that are not integers cannot be written as `items.ids`: an error
/// naming the first one.
pub fn save_embeddings(
    path: &Path,
    raw_ids: &[String],
    dim: usize,
    weights: &[f32],
) -> Result<(), ImportError> {
    let shown = path.display().to_string();
    let err = |what: String| ImportError::Embeddings {
        path: shown.clone(),
        what,
    };
    let n = raw_ids.len();
    if dim == 0 || weights.len() < n * dim {
        return Err(err(format!(
            "{} values cannot hold {n} rows of width {dim}",
            weights.len()
        )));
    }
    let ids = raw_ids
        .iter()
        .map(|r| {
            r.parse::<i64>()
                .map_err(|_| err(format!("raw item id {r:?} is not an integer")))
        })
        .collect::<Result<Vec<i64>, _>>()?;
    let w: Vec<u8> = weights[..n * dim]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let i: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    use safetensors::{Dtype, tensor::TensorView};
    let tensors = vec![
        (
            "items.weight",
            TensorView::new(Dtype::F32, vec![n, dim], &w).map_err(|e| err(e.to_string()))?,
        ),
        (
            "items.ids",
            TensorView::new(Dtype::I64, vec![n], &i).map_err(|e| err(e.to_string()))?,
        ),
    ];
    safetensors::serialize_to_file(tensors, None, path).map_err(|e| err(e.to_string()))
}

/// Training defaults fitted to an imported log (what `transact train` uses
/// on a log file when no `--config` is given): the Next Action Loss at every
/// position of the sequence with weight 0.5 (a log's own next-item signal is
/// most of what it has to teach; on MovieLens this moves HR@10 from 0.593 to
/// 0.682, `docs/training.md`), and in-batch negatives when the log holds no
/// impressions — rating logs never do, and the positions inside the
/// sequence draw their impression negatives from the log (only the newest
/// position has the slate's unengaged candidates).
pub fn fit_log_training(train: &mut TrainConfig, data: &Dataset) {
    train.features.nal_every_position = true;
    train.nal_weight = 0.5;
    if !data.has_impressions() {
        train.features.nal_impressions = false;
        train.features.nal_in_batch_too = false;
    }
}

/// Replaces `data.requests` with requests built from the log (see the
/// module docs): per user of `split`, only interactions before the
/// validation item are used. Deterministic for a seed.
pub fn requests_from_log(
    data: &mut Dataset,
    split: &SasrecSplit,
    seed: u64,
) -> Result<(), ImportError> {
    let n_items = data.items.count as u32;
    let mut requests = Vec::new();
    for su in &split.users {
        let Some(h) = data.users.get(su.user as usize) else {
            return Err(ImportError::Split(format!(
                "user {} not in the dataset",
                su.user
            )));
        };
        let end = su.valid.min(h.actions.len());
        let touched: std::collections::HashSet<u32> =
            h.actions.iter().map(|a| a.item_id as u32).collect();
        let inter: Vec<&Action> = h.actions[..end]
            .iter()
            .filter(|a| is_interaction(a))
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(
            seed ^ u64::from(su.user).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        for chunk in inter.get(WARM_UP..).unwrap_or(&[]).chunks(CHUNK) {
            let mut slate: Vec<LoggedCandidate> = chunk
                .iter()
                .map(|a| LoggedCandidate {
                    item: a.item_id as u32,
                    labels: match a.action_type {
                        ActionType::REPIN => label_bit(HEAD_REPIN),
                        ActionType::CLICK => label_bit(HEAD_CLICK),
                        ActionType::HIDE => label_bit(HEAD_HIDE),
                        _ => 0,
                    },
                })
                .collect();
            if touched.len() < n_items as usize {
                let mut tries = 0;
                while slate.len() < chunk.len() + SAMPLED && tries < 100 * SAMPLED {
                    tries += 1;
                    let item = rng.random_range(0..n_items);
                    if !touched.contains(&item) && !slate.iter().any(|c| c.item == item) {
                        slate.push(LoggedCandidate { item, labels: 0 });
                    }
                }
            }
            requests.push(LoggedRequest {
                user: su.user,
                time_ms: chunk[0].timestamp_ms,
                candidates: slate,
            });
        }
    }
    requests.sort_by_key(|r| r.time_ms);
    data.requests = requests;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::sasrec_split;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn movielens_csv_maps_ratings_and_reindexes() {
        let dir = tempfile::tempdir().expect("dir");
        let p = write(
            dir.path(),
            "ratings.csv",
            "userId,movieId,rating,timestamp\n7,31,2.5,20\n7,10,4.0,10\n9,31,1.0,5\n",
        );
        let (d, r) = import_path(&p, &ImportOptions::default()).expect("import");
        assert_eq!(r.format, Format::MovielensCsv);
        assert_eq!((r.actions, r.users, r.items, r.skipped), (3, 2, 2, 0));
        assert_eq!(d.users[0].raw_id, "7");
        assert_eq!(d.items.raw_ids, vec!["31", "10"]);
        // Sorted by time: the 4.0 on item "10" (index 1) first.
        let a = &d.users[0].actions;
        assert_eq!(
            (a[0].item_id, a[0].action_type, a[0].timestamp_ms),
            (1, ActionType::REPIN, 10_000)
        );
        assert_eq!(a[1].action_type, ActionType::CLICK);
        assert_eq!(d.users[1].actions[0].action_type, ActionType::HIDE);
    }

    #[test]
    fn dat_udata_csv_and_whitespace_formats_parse() {
        let dir = tempfile::tempdir().expect("dir");
        let p = write(dir.path(), "ratings.dat", "1::5::5::100\n1::6::3::50\n");
        let (d, r) = import_path(&p, &ImportOptions::default()).expect("dat");
        assert_eq!(r.format, Format::MovielensDat);
        assert_eq!(d.users[0].actions[0].timestamp_ms, 50_000);
        let p = write(dir.path(), "u.data", "1\t5\t5\t100\n2\t5\t1\t101\n");
        let (_, r) = import_path(&p, &ImportOptions::default()).expect("u.data");
        assert_eq!((r.format, r.users, r.items), (Format::MovielensUdata, 2, 1));
        let p = write(
            dir.path(),
            "log.csv",
            "user,item,action,timestamp\na,x,Repin,5\na,y,hide,3\nb,x,4,1\n",
        );
        let (d, r) = import_path(&p, &ImportOptions::default()).expect("csv");
        assert_eq!(r.format, Format::GenericCsv);
        assert_eq!(d.users[0].actions[0].action_type, ActionType::HIDE);
        assert_eq!(d.users[1].actions[0].action_type, ActionType::IMPRESSION);
        let p = write(dir.path(), "seq.txt", "u1 i1 i2 i3\nu2 i2\nu1 i4\n");
        let (d, r) = import_path(&p, &ImportOptions::default()).expect("whitespace");
        assert_eq!(r.format, Format::Whitespace);
        let times: Vec<i64> = d.users[0].actions.iter().map(|a| a.timestamp_ms).collect();
        assert_eq!(times, vec![0, 60_000, 120_000, 180_000]);
        assert_eq!(d.users[0].actions[3].item_id, 3);
    }

    #[test]
    fn detection_uses_the_name_then_the_first_line() {
        let p = |n: &str| PathBuf::from(n);
        assert_eq!(detect(&p("x/ratings.csv"), "1,2,3,4"), Format::MovielensCsv);
        assert_eq!(detect(&p("log"), "1::2::5::9"), Format::MovielensDat);
        assert_eq!(detect(&p("u.data"), "1 2 3 4"), Format::MovielensUdata);
        assert_eq!(detect(&p("log"), "1\t2\t3\t4"), Format::MovielensUdata);
        assert_eq!(
            detect(&p("r.csv"), "userId,movieId,rating,timestamp"),
            Format::MovielensCsv
        );
        assert_eq!(detect(&p("log.csv"), "a,b,click,5"), Format::GenericCsv);
        assert_eq!(detect(&p("seq.txt"), "u1 i1 i2"), Format::Whitespace);
    }

    #[test]
    fn a_bad_line_names_file_and_line_or_is_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("dir");
        let p = write(
            dir.path(),
            "ratings.csv",
            "userId,movieId,rating,timestamp\n1,2,4,5\n1,2,x,5\n1,3\n",
        );
        let e = import_path(&p, &ImportOptions::default()).expect_err("bad rating");
        let msg = e.to_string();
        assert!(
            msg.contains("ratings.csv:3:") && msg.contains("rating"),
            "{msg}"
        );
        let opts = ImportOptions {
            skip_bad: true,
            ..ImportOptions::default()
        };
        let (_, r) = import_path(&p, &opts).expect("skipped");
        assert_eq!((r.actions, r.skipped), (1, 2));
        assert!(r.to_string().contains("2 skipped"));
        let p = write(dir.path(), "empty.csv", "\n\n");
        assert!(matches!(import_path(&p, &opts), Err(ImportError::Empty(_))));
        let p = write(dir.path(), "neg.dat", "1::2::4::-5\n");
        assert!(import_path(&p, &ImportOptions::default()).is_err());
    }

    fn save_table(path: &Path, rows: &[[f32; 2]], ids: Option<&[i64]>) {
        let data: Vec<u8> = rows
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let idb: Vec<u8> = ids
            .unwrap_or(&[])
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut tensors = vec![(
            "items.weight".to_string(),
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                vec![rows.len(), 2],
                &data,
            )
            .expect("view"),
        )];
        if let Some(ids) = ids {
            tensors.push((
                "items.ids".to_string(),
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::I64,
                    vec![ids.len()],
                    &idb,
                )
                .expect("view"),
            ));
        }
        safetensors::serialize_to_file(tensors, None, path).expect("save");
    }

    #[test]
    fn embeddings_load_by_ids_or_by_row_number() {
        let dir = tempfile::tempdir().expect("dir");
        let log = write(
            dir.path(),
            "ratings.dat",
            "1::2::5::1\n1::0::5::2\n1::9::5::3\n",
        );
        let emb = dir.path().join("e.safetensors");
        save_table(&emb, &[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], None);
        let opts = ImportOptions {
            item_embeddings: Some(emb.clone()),
            ..ImportOptions::default()
        };
        let (d, r) = import_path(&log, &opts).expect("import");
        let e = d.items.embeddings.expect("embeddings");
        // Items in order of appearance: raw 2, 0, 9 (9 has no row).
        assert_eq!(e.data, vec![3.0, 3.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(r.items_without_embedding, 1);
        save_table(&emb, &[[5.0, 5.0], [6.0, 6.0]], Some(&[9, 2]));
        let (d, _) = import_path(&log, &opts).expect("import");
        assert_eq!(
            d.items.embeddings.expect("e").data,
            vec![6.0, 6.0, 0.0, 0.0, 5.0, 5.0]
        );
        std::fs::write(&emb, b"not safetensors").expect("write");
        assert!(import_path(&log, &opts).is_err());
    }

    #[test]
    fn saved_embeddings_load_back_by_raw_id() {
        let dir = tempfile::tempdir().expect("dir");
        let log = write(dir.path(), "ratings.dat", "1::7::5::1\n1::3::5::2\n");
        let emb = dir.path().join("saved.safetensors");
        let raw = vec!["7".to_string(), "3".to_string()];
        save_embeddings(&emb, &raw, 2, &[1.0, 2.0, 3.0, 4.0, 9.0, 9.0]).expect("save");
        let opts = ImportOptions {
            item_embeddings: Some(emb.clone()),
            ..ImportOptions::default()
        };
        let (d, r) = import_path(&log, &opts).expect("import");
        assert_eq!(r.items_without_embedding, 0);
        assert_eq!(
            d.items.embeddings.expect("e").data,
            vec![1.0, 2.0, 3.0, 4.0]
        );
        let bad = save_embeddings(&emb, &["x1".to_string()], 2, &[0.0, 0.0]);
        assert!(bad.expect_err("string id").to_string().contains("\"x1\""));
        assert!(save_embeddings(&emb, &raw, 2, &[0.0; 3]).is_err());
    }

    #[test]
    fn built_requests_hold_out_the_last_two_and_sample_untouched_items() {
        let dir = tempfile::tempdir().expect("dir");
        let mut text = String::from("userId,movieId,rating,timestamp\n");
        for u in 0..3 {
            for k in 0..14 {
                text.push_str(&format!(
                    "{u},{},{},{}\n",
                    (u * 7 + k) % 30,
                    1 + k % 5,
                    100 + k
                ));
            }
        }
        for i in 0..40 {
            text.push_str(&format!("9,{i},3,{}\n", 1 + i));
        }
        let p = write(dir.path(), "ratings.csv", &text);
        let (mut d, _) = import_path(&p, &ImportOptions::default()).expect("import");
        let split = sasrec_split(&d);
        requests_from_log(&mut d, &split, 3).expect("requests");
        let first = d.requests.clone();
        requests_from_log(&mut d, &split, 3).expect("requests");
        assert_eq!(first, d.requests, "deterministic");
        assert!(!d.requests.is_empty());
        for su in &split.users {
            let h = &d.users[su.user as usize];
            let held = [
                h.actions[su.valid].timestamp_ms,
                h.actions[su.test].timestamp_ms,
            ];
            for r in d.requests.iter().filter(|r| r.user == su.user) {
                assert!(r.time_ms < held[0], "a request uses a held-out interaction");
                assert!(
                    d.history_before(r.user, r.time_ms)
                        .iter()
                        .all(|a| a.timestamp_ms < r.time_ms)
                );
                for c in r.candidates.iter().filter(|c| c.labels != 0) {
                    assert!(h.actions.iter().any(|a| a.item_id as u32 == c.item
                        && a.timestamp_ms >= r.time_ms
                        && a.timestamp_ms < held[0]));
                }
                let touched: Vec<u32> = h.actions.iter().map(|a| a.item_id as u32).collect();
                let labelled = r.candidates.iter().filter(|c| c.labels != 0).count();
                assert!((1..=CHUNK).contains(&labelled));
                for c in r.candidates.iter().filter(|c| c.labels == 0) {
                    assert!(!touched.contains(&c.item), "a sampled item was touched");
                }
            }
        }
        assert!(d.requests.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
    }
}
