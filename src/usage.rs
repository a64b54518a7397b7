//! What each user used, per UTC day (SPEC §13): turns, prompt and completion tokens,
//! and how many of those tokens were estimated (the backend reported none).
//!
//! The plain data (days, counts, a user's sessions) is used by both modes; where it
//! lives is chosen once in `quota.rs`: here in files for one node alone
//! ([`LocalUsage`]), in Redis in a cluster (`cluster_tenancy.rs`).
//!
//! **Files** (one node): `{store.dir}/usage/{user}/{YYYY-MM-DD}.json` (the day's counts)
//! and `{store.dir}/usage/{user}/sessions.json` (the sessions the user ran turns in:
//! turns, tokens, last activity; at most [`MAX_SESSIONS_PER_USER`], the least recently
//! used dropped first). `{user}` is the id made path-safe ([`user_dir_name`]); each
//! file also holds the id itself. Files are rewritten in place (`store::overwrite_in_place`),
//! off every actor thread, one write at a time per user, [`WRITE_DELAY`] after a turn
//! (the user's turns meanwhile coalesce into that write); a shutdown waits for them. A
//! crash of the process loses at most the turns of that last moment; the files are
//! not fsynced (that would add two disk syncs to every turn, beside the transcript's),
//! so a power loss may lose the last seconds of usage. Day files older than
//! `store.usageRetentionDays` are deleted at start and daily.
//!
//! **Memory** is bounded: the users whose counts are held (to check `tokensPerDay`
//! without reading a file per turn) are at most [`MAX_CACHED_USERS`]; past it the ones
//! with nothing left to write are forgotten (and read again when they come back). Only
//! the current day (and days not yet written) are held per user.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{self, StoreError};

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;
/// The most days one `/admin/usage` request may cover.
pub const MAX_RANGE_DAYS: i64 = 366;
/// The most sessions remembered per user (the least recently used are dropped).
pub const MAX_SESSIONS_PER_USER: usize = 1000;
/// The most users whose counts one node holds in memory.
pub const MAX_CACHED_USERS: usize = 100_000;
/// Longest user directory name made readable; longer ids are named by their hash.
const MAX_READABLE_NAME: usize = 160;
/// How long after a user's turn their files are written (turns meanwhile coalesce).
const WRITE_DELAY: Duration = Duration::from_millis(200);
/// How often old day files are deleted (besides at start).
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// A UTC day, as days since 1970-01-01; shown `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i64);

impl Day {
    /// The day `millis` (since the Unix epoch) falls in.
    pub fn of_millis(millis: u64) -> Day {
        Day((millis / DAY_MS) as i64)
    }

    /// Today, in UTC.
    pub fn today() -> Day {
        Day::of_millis(store::now_millis())
    }

    /// Milliseconds from `millis` to the start of the next UTC day (at least 1).
    pub fn millis_until_next(millis: u64) -> u64 {
        (DAY_MS - millis % DAY_MS).max(1)
    }

    /// A `YYYY-MM-DD` date (exactly that form, a real date), else `None`.
    pub fn parse(text: &str) -> Option<Day> {
        let bytes = text.as_bytes();
        let digits = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = text.get(range)?;
            part.bytes().all(|byte| byte.is_ascii_digit()).then(|| part.parse().ok())?
        };
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        Some(Day(days_from_civil(year, month, day)))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = civil_from_days(self.0);
        write!(formatter, "{year:04}-{month:02}-{day:02}")
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01 (the inverse of `days_from_civil`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// What a user used (in a day, or a range of days).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UsageCounts {
    /// Turns that ended (answered, failed or aborted).
    pub turns: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// How many of the tokens (prompt and completion) were estimated.
    pub estimated_tokens: u64,
}

impl UsageCounts {
    /// Prompt and completion tokens: what `tokensPerDay` counts.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// Adds `other` in.
    pub fn add(&mut self, other: &UsageCounts) {
        self.turns = self.turns.saturating_add(other.turns);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.estimated_tokens = self.estimated_tokens.saturating_add(other.estimated_tokens);
    }

    /// One ended turn's counts.
    pub fn of_turn(prompt_tokens: u64, completion_tokens: u64, estimated: bool) -> UsageCounts {
        let total = prompt_tokens.saturating_add(completion_tokens);
        UsageCounts { turns: 1, prompt_tokens, completion_tokens, estimated_tokens: if estimated { total } else { 0 } }
    }
}

/// One of a user's sessions, as usage remembers it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SessionUse {
    pub turns: u64,
    pub total_tokens: u64,
    /// When the user's last turn in it ended, ms since the Unix epoch.
    pub last_activity: u64,
}

/// A day file's content.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DayFile {
    user_id: String,
    day: String,
    #[serde(flatten)]
    counts: UsageCounts,
}

/// A user's `sessions.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionsFile {
    user_id: String,
    sessions: BTreeMap<String, SessionUse>,
}

/// The directory name of `user`'s usage: the id with every byte outside
/// `[A-Za-z0-9_-]` written `%XX` (so no two ids share one, and none is `.` or `..`),
/// or, when that is longer than 160 bytes, `~` and the id's SHA-256 (a `~` never
/// appears in the escaped form).
pub fn user_dir_name(user: &str) -> String {
    let mut name = String::with_capacity(user.len());
    for byte in user.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            name.push(byte as char);
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    if name.len() <= MAX_READABLE_NAME {
        return name;
    }
    format!("~{}", crate::cluster_shared::sha256_hex(b"clawsocket usage dir", &[user.as_bytes()]))
}

/// Keeps `sessions` to [`MAX_SESSIONS_PER_USER`], dropping the least recently used.
pub fn trim_sessions(sessions: &mut BTreeMap<String, SessionUse>) {
    if sessions.len() <= MAX_SESSIONS_PER_USER {
        return;
    }
    let mut by_age: Vec<(u64, String)> =
        sessions.iter().map(|(key, session)| (session.last_activity, key.clone())).collect();
    by_age.sort();
    let extra = sessions.len() - MAX_SESSIONS_PER_USER;
    for (_, key) in by_age.into_iter().take(extra) {
        sessions.remove(&key);
    }
}

/// One user's counts held in memory. A turn is added here at once (so the next
/// check sees it), whether or not the files were read yet: until they are, what is
/// held is what was added since; reading a file adds its counts in (once).
#[derive(Debug, Default)]
struct UserBook {
    days: BTreeMap<Day, UsageCounts>,
    /// The days whose file was read (or found missing) and added in.
    loaded_days: BTreeSet<Day>,
    sessions: BTreeMap<String, SessionUse>,
    sessions_loaded: bool,
    /// Days changed since they were last written.
    dirty_days: BTreeSet<Day>,
    sessions_dirty: bool,
    /// A write of this user's files is under way.
    writing: bool,
}

impl UserBook {
    fn has_unwritten(&self) -> bool {
        self.writing || self.sessions_dirty || !self.dirty_days.is_empty()
    }

    /// Adds a day file's counts in, unless they were already.
    fn merge_day(&mut self, day: Day, counts: UsageCounts) {
        if self.loaded_days.insert(day) {
            self.days.entry(day).or_default().add(&counts);
        }
    }

    /// Adds the sessions file's sessions in, unless they were already.
    fn merge_sessions(&mut self, stored: BTreeMap<String, SessionUse>) {
        if std::mem::replace(&mut self.sessions_loaded, true) {
            return;
        }
        for (key, stored) in stored {
            merge_session(self.sessions.entry(key).or_default(), &stored);
        }
        trim_sessions(&mut self.sessions);
    }
}

/// Adds `other`'s turns and tokens to `session`, keeping the later activity.
fn merge_session(session: &mut SessionUse, other: &SessionUse) {
    session.turns = session.turns.saturating_add(other.turns);
    session.total_tokens = session.total_tokens.saturating_add(other.total_tokens);
    session.last_activity = session.last_activity.max(other.last_activity);
}

/// Usage in files under `{store.dir}/usage/` (one node alone).
pub struct LocalUsage {
    dir: PathBuf,
    retention_days: u64,
    users: Mutex<HashMap<String, UserBook>>,
}

impl LocalUsage {
    /// The usage kept under `store_dir/usage`, days kept `retention_days`.
    pub fn new(store_dir: &Path, retention_days: u64) -> Arc<LocalUsage> {
        Arc::new(LocalUsage { dir: store_dir.join("usage"), retention_days, users: Mutex::default() })
    }

    fn user_dir(&self, user: &str) -> PathBuf {
        self.dir.join(user_dir_name(user))
    }

    fn day_path(&self, user: &str, day: Day) -> PathBuf {
        self.user_dir(user).join(format!("{day}.json"))
    }

    fn sessions_path(&self, user: &str) -> PathBuf {
        self.user_dir(user).join("sessions.json")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserBook>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `user`'s tokens on `day`, when its file was read already.
    pub fn cached_tokens(&self, user: &str, day: Day) -> Option<u64> {
        let users = self.lock();
        let book = users.get(user).filter(|book| book.loaded_days.contains(&day))?;
        Some(book.days.get(&day).map_or(0, UsageCounts::total_tokens))
    }

    /// `user`'s tokens on `day`, its file read first when it was not yet.
    pub async fn tokens(self: Arc<Self>, user: String, day: Day) -> u64 {
        if let Some(tokens) = self.cached_tokens(&user, day) {
            return tokens;
        }
        self.load(&user, Some(day), false).await;
        let users = self.lock();
        users.get(&user).and_then(|book| book.days.get(&day)).map_or(0, UsageCounts::total_tokens)
    }

    /// Reads `day`'s file and (with `sessions`) the sessions file of `user` where they
    /// were not read yet, and adds them in.
    async fn load(&self, user: &str, day: Option<Day>, sessions: bool) {
        let (need_day, need_sessions) = {
            let users = self.lock();
            let book = users.get(user);
            let need_day = day.filter(|day| book.is_none_or(|book| !book.loaded_days.contains(day)));
            (need_day, sessions && book.is_none_or(|book| !book.sessions_loaded))
        };
        let stored_day = match need_day {
            Some(day) => Some((day, self.read_day_logged(user, day).await)),
            None => None,
        };
        let stored_sessions = if need_sessions { Some(self.read_sessions_logged(user).await) } else { None };
        let mut users = self.lock();
        let book = users.entry(user.to_string()).or_default();
        if let Some((day, counts)) = stored_day {
            book.merge_day(day, counts);
        }
        if let Some(stored) = stored_sessions {
            book.merge_sessions(stored);
        }
        evict_if_full(&mut users);
    }

    /// Adds one ended turn of `user` in `session` (at `now` ms), at once, and writes it
    /// out soon (off this thread). Must be called inside an actix system.
    pub fn record(self: &Arc<Self>, user: &str, session: &str, counts: UsageCounts, now: u64) {
        let day = Day::of_millis(now);
        let start_writer = {
            let mut users = self.lock();
            let book = users.entry(user.to_string()).or_default();
            book.days.entry(day).or_default().add(&counts);
            let entry = book.sessions.entry(session.to_string()).or_default();
            merge_session(
                entry,
                &SessionUse { turns: counts.turns, total_tokens: counts.total_tokens(), last_activity: now },
            );
            trim_sessions(&mut book.sessions);
            book.dirty_days.insert(day);
            book.sessions_dirty = true;
            // Only the current day (and days still to be written) stay held.
            let dirty = book.dirty_days.clone();
            book.days.retain(|held, _| *held >= day || dirty.contains(held));
            let days = &book.days;
            book.loaded_days.retain(|held| days.contains_key(held));
            let start = !book.writing;
            book.writing = true;
            evict_if_full(&mut users);
            start
        };
        if start_writer {
            // On the system's arbiter, which outlives the HTTP workers (a session's own
            // arbiter stops with the server).
            actix_rt::System::current().arbiter().spawn(self.clone().write_out(user.to_string()));
        }
    }

    /// Writes `user`'s changed files until nothing is left to write (one writer per
    /// user: what is recorded meanwhile goes into the next round). A day's file is read
    /// (and added in) before it is first written.
    async fn write_out(self: Arc<Self>, user: String) {
        // A burst of the user's turns (several tabs, threads) is written once.
        actix_rt::time::sleep(WRITE_DELAY).await;
        loop {
            let (dirty_days, sessions_dirty) = {
                let users = self.lock();
                let Some(book) = users.get(&user) else { return };
                (book.dirty_days.clone(), book.sessions_dirty)
            };
            for day in &dirty_days {
                self.load(&user, Some(*day), false).await;
            }
            if sessions_dirty {
                self.load(&user, None, true).await;
            }
            let (days, sessions) = {
                let mut users = self.lock();
                let Some(book) = users.get_mut(&user) else { return };
                let ready: Vec<Day> =
                    book.dirty_days.iter().copied().filter(|day| book.loaded_days.contains(day)).collect();
                let days: Vec<(Day, UsageCounts)> = ready
                    .iter()
                    .map(|day| {
                        book.dirty_days.remove(day);
                        (*day, book.days.get(day).copied().unwrap_or_default())
                    })
                    .collect();
                let sessions =
                    (book.sessions_loaded && std::mem::take(&mut book.sessions_dirty)).then(|| book.sessions.clone());
                if days.is_empty() && sessions.is_none() {
                    book.writing = false;
                    return;
                }
                (days, sessions)
            };
            let files = self.files_for(&user, &days, sessions.as_ref());
            let written = store::off_thread(move || {
                for (path, bytes) in files {
                    store::overwrite_in_place(&path, &bytes)?;
                }
                Ok(())
            })
            .await;
            if let Err(error) = written {
                log::error!("usage of user {user:?} not written (kept in memory; written with its next turn): {error}");
                let mut users = self.lock();
                if let Some(book) = users.get_mut(&user) {
                    book.dirty_days.extend(days.iter().map(|(day, _)| *day));
                    book.sessions_dirty |= sessions.is_some();
                    book.writing = false;
                }
                return;
            }
        }
    }

    /// The files (path, JSON bytes) that hold these days and sessions of `user`.
    fn files_for(
        &self,
        user: &str,
        days: &[(Day, UsageCounts)],
        sessions: Option<&BTreeMap<String, SessionUse>>,
    ) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        // The sessions first: once a day's file shows a turn, its session is known too.
        if let Some(sessions) = sessions {
            let file = SessionsFile { user_id: user.to_string(), sessions: sessions.clone() };
            if let Ok(bytes) = serde_json::to_vec(&file) {
                files.push((self.sessions_path(user), bytes));
            }
        }
        for (day, counts) in days {
            let file = DayFile { user_id: user.to_string(), day: day.to_string(), counts: *counts };
            if let Ok(bytes) = serde_json::to_vec(&file) {
                files.push((self.day_path(user, *day), bytes));
            }
        }
        files
    }

    /// A day's counts from its file (zero when there is none, or it cannot be read:
    /// logged, and replaced by the next write).
    async fn read_day_logged(&self, user: &str, day: Day) -> UsageCounts {
        let path = self.day_path(user, day);
        let read = store::off_thread(move || store::read_json::<DayFile>(&path)).await;
        match read {
            Ok(file) => file.map(|file| file.counts).unwrap_or_default(),
            Err(error) => {
                log::error!("usage of user {user:?} on {day} could not be read; counting from zero: {error}");
                UsageCounts::default()
            }
        }
    }

    async fn read_sessions_logged(&self, user: &str) -> BTreeMap<String, SessionUse> {
        let path = self.sessions_path(user);
        match store::off_thread(move || store::read_json::<SessionsFile>(&path)).await {
            Ok(file) => file.map(|file| file.sessions).unwrap_or_default(),
            Err(error) => {
                log::error!("the sessions of user {user:?} could not be read; starting anew: {error}");
                BTreeMap::new()
            }
        }
    }

    /// `user`'s counts for every day from `from` to `to` that has any, oldest first.
    pub async fn range(
        self: Arc<Self>,
        user: String,
        from: Day,
        to: Day,
    ) -> Result<Vec<(Day, UsageCounts)>, StoreError> {
        let paths: Vec<(Day, PathBuf)> =
            (from.0..=to.0).map(|day| (Day(day), self.day_path(&user, Day(day)))).collect();
        let mut days = store::off_thread(move || {
            let mut days = BTreeMap::new();
            for (day, path) in paths {
                if let Some(file) = store::read_json::<DayFile>(&path)? {
                    days.insert(day, file.counts);
                }
            }
            Ok(days)
        })
        .await?;
        // Memory holds a loaded day whole, and an unloaded one's counts since the start.
        let users = self.lock();
        if let Some(book) = users.get(&user) {
            for (day, held) in book.days.range(from..=to) {
                if book.loaded_days.contains(day) {
                    days.insert(*day, *held);
                } else {
                    days.entry(*day).or_default().add(held);
                }
            }
        }
        days.retain(|_, counts| *counts != UsageCounts::default());
        Ok(days.into_iter().collect())
    }

    /// The sessions `user` ran turns in.
    pub async fn sessions(self: Arc<Self>, user: String) -> BTreeMap<String, SessionUse> {
        self.load(&user, None, true).await;
        let users = self.lock();
        users.get(&user).map(|book| book.sessions.clone()).unwrap_or_default()
    }

    /// Waits until every recorded turn is written (at most `within`); answers whether
    /// it was.
    pub async fn flush(&self, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            if self.lock().values().all(|book| !book.has_unwritten()) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Deletes day files older than the retention, and sessions files whose every
    /// session is (blocking: run off the actor threads).
    pub fn prune(&self, today: Day) -> Result<usize, StoreError> {
        let oldest_kept = Day(today.0 - self.retention_days as i64);
        let oldest_activity = (oldest_kept.0.max(0) as u64).saturating_mul(DAY_MS);
        let mut deleted = 0;
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(store::io_error(&self.dir)(error)),
        };
        for user_dir in entries.flatten().map(|entry| entry.path()).filter(|path| path.is_dir()) {
            let Ok(files) = fs::read_dir(&user_dir) else { continue };
            let mut left = 0;
            for path in files.flatten().map(|entry| entry.path()) {
                let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_string();
                let stale = match name.strip_suffix(".json").and_then(Day::parse) {
                    Some(day) => day < oldest_kept,
                    None if name == "sessions.json" => store::read_json::<SessionsFile>(&path)
                        .ok()
                        .flatten()
                        .is_some_and(|file| file.sessions.values().all(|s| s.last_activity < oldest_activity)),
                    None => false,
                };
                if stale && fs::remove_file(&path).is_ok() {
                    deleted += 1;
                } else {
                    left += 1;
                }
            }
            if left == 0 {
                let _ = fs::remove_dir(&user_dir);
            }
        }
        Ok(deleted)
    }

    /// Deletes old day files now (off the actor threads) and every day from now on.
    pub fn prune_daily(self: &Arc<Self>) {
        let usage = self.clone();
        actix_rt::spawn(async move {
            loop {
                let pruning = usage.clone();
                match store::off_thread(move || pruning.prune(Day::today())).await {
                    Ok(0) => {}
                    Ok(deleted) => log::info!("usage: {deleted} files older than store.usageRetentionDays deleted"),
                    Err(error) => log::warn!("usage: old files could not be deleted: {error}"),
                }
                actix_rt::time::sleep(PRUNE_EVERY).await;
            }
        });
    }
}

/// Forgets users with nothing left to write once more than [`MAX_CACHED_USERS`] are held.
fn evict_if_full(users: &mut HashMap<String, UserBook>) {
    if users.len() > MAX_CACHED_USERS {
        users.retain(|_, book| book.has_unwritten());
        log::info!(
            "usage: more than {MAX_CACHED_USERS} users held; {} kept (their counts are being written)",
            users.len()
        );
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
