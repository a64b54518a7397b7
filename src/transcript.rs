//! A session's transcript file: append-only JSONL, one `TranscriptEntry` per line.
//!
//! The rules that keep an acknowledged turn from ever being lost (SPEC §6):
//! - One turn's lines are appended in one write and fsynced before its answer is sent;
//!   a failed append (disk full, I/O error) is cut back to the file's previous length
//!   before the error is reported, so the next append starts on a clean line.
//! - Only [`load_tail`], run once when a session starts, may repair the file (cut a torn
//!   last line left by a crash). Every other read ([`read_tail`], [`find_answer`]) is
//!   read-only and skips what it cannot parse.
//! - Reads go backwards from the end of the file and stop when they have what they need.
//! - A regenerated answer supersedes the one before it (`supersedes`, SPEC §11): the old
//!   line stays in the file; reads for history and memory leave it out ([`Superseded`]).
//!
//! All operations on one session's file are ordered by the caller: the session's own
//! `StoreWriter` thread (`actors/store_writer.rs`) runs them one at a time. Every
//! function here blocks.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::Deserialize;

use crate::protocol::{Role, TranscriptEntry};
use crate::store::{io_error, StoreError};

/// How much of the file one backward read step takes.
const BLOCK: u64 = 64 * 1024;

/// What [`load_tail`] found at the end of a transcript.
#[derive(Debug, Default, PartialEq)]
pub struct Tail {
    /// The last entries (at most `keep`), oldest first.
    pub recent: Vec<TranscriptEntry>,
    /// Whether the file holds entries older than `recent`.
    pub more_on_disk: bool,
    /// The message ids of the last answers (at most `answers`), oldest first.
    pub answered: Vec<String>,
}

/// Just enough of a line to tell an answer's message id.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryId<'a> {
    role: Role,
    #[serde(borrow)]
    message_id: Cow<'a, str>,
}

/// Appends one turn's `entries` in one write and fsyncs it. On failure the file is cut
/// back to the length it had, so no partial line stays behind.
pub fn append(path: &Path, entries: &[TranscriptEntry]) -> Result<(), StoreError> {
    let mut buffer = Vec::with_capacity(256 * entries.len());
    for entry in entries {
        serde_json::to_writer(&mut buffer, entry).map_err(|source| StoreError::Json { path: path.into(), source })?;
        buffer.push(b'\n');
    }
    let mut file = open_for_append(path)?;
    let before = file.seek(SeekFrom::End(0)).map_err(io_error(path))?;
    if before > 0 && !ends_with_newline(&mut file, before).map_err(io_error(path))? {
        // Left by a cut-back that failed too: this turn starts on a line of its own,
        // and the partial one is skipped by every read.
        buffer.insert(0, b'\n');
    }
    let written = file.write_all(&buffer).and_then(|()| file.sync_data());
    if let Err(error) = written {
        if let Err(cut) = file.set_len(before).and_then(|()| file.sync_data()) {
            log::error!("{}: a failed append could not be cut back to {before} bytes: {cut}", path.display());
        }
        return Err(io_error(path)(error));
    }
    Ok(())
}

fn ends_with_newline(file: &mut File, length: u64) -> io::Result<bool> {
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(length - 1))?;
    file.read_exact(&mut last)?;
    file.seek(SeekFrom::End(0))?;
    Ok(last[0] == b'\n')
}

/// Opens the transcript for appending (and reading its last byte), creating it and its
/// directory if need be; a file just created has its directory fsynced, so that it
/// survives a power loss with the turn written into it.
fn open_for_append(path: &Path) -> Result<File, StoreError> {
    let open = |create| OpenOptions::new().read(true).append(true).create_new(create).open(path);
    let file = match open(false) {
        Ok(file) => return Ok(file),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let parent = path.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(parent).map_err(io_error(parent))?;
            match open(true) {
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => open(false),
                created => created,
            }
        }
        Err(error) => Err(error),
    }
    .map_err(io_error(path))?;
    if let Some(parent) = path.parent() {
        File::open(parent).and_then(|directory| directory.sync_all()).map_err(io_error(parent))?;
    }
    Ok(file)
}

/// The session-start read: cuts a torn last line (the only repair there is), then
/// reads back from the end the last `keep` entries and the ids of the last `answers`
/// answers. A missing file is an empty transcript.
pub fn load_tail(path: &Path, keep: usize, answers: usize) -> Result<Tail, StoreError> {
    let mut tail = Tail::default();
    let mut superseded = Superseded::default();
    let torn = walk_back(path, |line| {
        if tail.recent.len() < keep {
            if let Some(entry) = parse_entry(path, line) {
                if entry.role == Role::Assistant && tail.answered.len() < answers {
                    tail.answered.push(entry.message_id.clone());
                }
                if !superseded.hides(&entry) {
                    tail.recent.push(entry);
                }
            }
            return true;
        }
        tail.more_on_disk = true;
        if tail.answered.len() >= answers {
            return false;
        }
        if let Ok(id) = serde_json::from_slice::<EntryId<'_>>(line) {
            if id.role == Role::Assistant {
                tail.answered.push(id.message_id.into_owned());
            }
        }
        true
    })?;
    if let Some(torn) = torn {
        log::warn!("{}: torn last line ({} bytes, a crash mid-write) cut off", path.display(), torn.length);
        cut_at(path, torn.at)?;
    }
    tail.recent.reverse();
    tail.answered.reverse();
    Ok(tail)
}

/// The last `limit` entries (superseded answers left out), oldest first. Read-only.
pub fn read_tail(path: &Path, limit: usize) -> Result<Vec<TranscriptEntry>, StoreError> {
    let mut entries = Vec::new();
    let mut superseded = Superseded::default();
    walk_back(path, |line| {
        entries.extend(parse_entry(path, line).filter(|entry| !superseded.hides(entry)));
        entries.len() < limit
    })?;
    entries.reverse();
    Ok(entries)
}

/// The answers superseded by regenerated ones met so far, reading backwards (a
/// regenerated answer always comes after the one it replaces).
#[derive(Default)]
pub struct Superseded(HashSet<String>);

impl Superseded {
    /// Whether `entry`, read backwards after every later entry, is a superseded answer.
    pub fn hides(&mut self, entry: &TranscriptEntry) -> bool {
        let hidden = entry.role == Role::Assistant && self.0.contains(&entry.message_id);
        if let Some(replaced) = &entry.answer.supersedes {
            self.0.insert(replaced.clone());
        }
        hidden
    }
}

/// `entries` (oldest first) without the answers superseded by later ones.
pub fn visible(entries: Vec<TranscriptEntry>) -> Vec<TranscriptEntry> {
    let mut superseded = Superseded::default();
    let mut kept: Vec<TranscriptEntry> = entries.into_iter().rev().filter(|entry| !superseded.hides(entry)).collect();
    kept.reverse();
    kept
}

/// The stored answer to `message_id`, searched from the end. Read-only.
pub fn find_answer(path: &Path, message_id: &str) -> Result<Option<TranscriptEntry>, StoreError> {
    let mut found = None;
    walk_back(path, |line| {
        let wanted = serde_json::from_slice::<EntryId<'_>>(line)
            .is_ok_and(|id| id.role == Role::Assistant && id.message_id == message_id);
        if wanted {
            found = parse_entry(path, line);
        }
        found.is_none()
    })?;
    Ok(found)
}

fn parse_entry(path: &Path, line: &[u8]) -> Option<TranscriptEntry> {
    match serde_json::from_slice(line) {
        Ok(entry) => Some(entry),
        Err(error) => {
            log::warn!("{}: an unreadable line ({} bytes) skipped: {error}", path.display(), line.len());
            None
        }
    }
}

/// Bytes after the last newline: what a crash mid-append leaves.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Torn {
    /// Where the torn bytes start (the length the file should have).
    at: u64,
    length: u64,
}

/// Calls `visit` with every complete line of the file, last first, until it answers
/// false. Bytes after the last newline are not a line: they are reported, not visited
/// (nor held). A line longer than `MAX_LINE_BYTES` (only a damaged file has one: the
/// answers written are bounded by `limits.maxAnswerBytes`) is skipped with a warning,
/// never held whole. A missing file has no lines.
fn walk_back(path: &Path, mut visit: impl FnMut(&[u8]) -> bool) -> Result<Option<Torn>, StoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(path)(error)),
    };
    let length = file.metadata().map_err(io_error(path))?.len();
    let mut position = length;
    let mut line = PartLine::default();
    let mut torn: Option<Torn> = None;
    let mut seen_newline = false;
    let mut block = Vec::new();
    while position > 0 {
        let start = position.saturating_sub(BLOCK);
        block.resize((position - start) as usize, 0);
        file.seek(SeekFrom::Start(start)).map_err(io_error(path))?;
        file.read_exact(&mut block).map_err(io_error(path))?;
        let mut end = block.len();
        while let Some(newline) = memchr::memrchr(b'\n', &block[..end]) {
            if !seen_newline {
                seen_newline = true;
                let at = start + newline as u64 + 1;
                torn = (at < length).then_some(Torn { at, length: length - at });
            } else if let Some(whole) = line.complete(&block[newline + 1..end], path) {
                if !whole.is_empty() && !visit(&whole) {
                    return Ok(torn);
                }
            }
            end = newline;
        }
        if seen_newline {
            line.prepend(&block[..end]);
        }
        position = start;
    }
    if !seen_newline {
        torn = (length > 0).then_some(Torn { at: 0, length });
    } else if let Some(first) = line.complete(&[], path) {
        if !first.is_empty() {
            visit(&first);
        }
    }
    Ok(torn)
}

/// The most bytes of one transcript line a read holds (small in tests, to try it).
const MAX_LINE_BYTES: usize = if cfg!(test) { 256 * 1024 } else { 64 * 1024 * 1024 };

/// The line being read backwards: the blocks read so far (the last of the file first),
/// or only their count once it is known to be too long.
#[derive(Default)]
struct PartLine {
    pieces: Vec<Vec<u8>>,
    bytes: usize,
    too_long: bool,
}

impl PartLine {
    /// Bytes that stand before what was read of the line.
    fn prepend(&mut self, head: &[u8]) {
        self.bytes += head.len();
        if self.too_long || self.bytes > MAX_LINE_BYTES {
            self.too_long = true;
            self.pieces.clear();
        } else if !head.is_empty() {
            self.pieces.push(head.to_vec());
        }
    }

    /// The line, now that `head` (its start) was found; `None` for a line skipped as
    /// too long. Leaves the part empty for the next line.
    fn complete<'a>(&mut self, head: &'a [u8], path: &Path) -> Option<Cow<'a, [u8]>> {
        let too_long = self.too_long || self.bytes + head.len() > MAX_LINE_BYTES;
        let bytes = self.bytes + head.len();
        self.bytes = 0;
        self.too_long = false;
        if too_long {
            self.pieces.clear();
            log::warn!("{}: a line of {bytes} bytes skipped (longer than any turn writes)", path.display());
            return None;
        }
        Some(assemble(head, &mut self.pieces))
    }
}

/// `head` followed by the earlier-read `pieces` (which come after it in the file).
fn assemble<'a>(head: &'a [u8], pieces: &mut Vec<Vec<u8>>) -> Cow<'a, [u8]> {
    if pieces.is_empty() {
        return Cow::Borrowed(head);
    }
    let mut line = head.to_vec();
    for piece in pieces.drain(..).rev() {
        line.extend_from_slice(&piece);
    }
    Cow::Owned(line)
}

fn cut_at(path: &Path, length: u64) -> Result<(), StoreError> {
    let file = OpenOptions::new().write(true).open(path).map_err(io_error(path))?;
    file.set_len(length).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

#[cfg(test)]
#[path = "transcript_tests.rs"]
mod tests;
