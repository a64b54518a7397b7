//! The OpenClaw gateway's attachment directive: a line `MEDIA: <path-or-url>` in an
//! answer is an attachment, not text (SPEC §10, §12). This filter takes the answer's
//! text pieces as they stream and hands back the text without those lines, and an
//! [`AnswerPiece::Media`] for each.
//!
//! Text is held back only while the current line could still be such a directive
//! (it is at a line's start and a prefix of `MEDIA:`, or a `MEDIA:` line not yet
//! ended): every other piece goes on at once. Pure: no I/O.

use std::path::{Component, Path, PathBuf};

use super::{AnswerPiece, MediaSource};

const DIRECTIVE: &str = "MEDIA:";
/// A directive line longer than this is text (nothing is held back without bound).
const MAX_DIRECTIVE_BYTES: usize = 4096;

/// The filter's state across one answer's pieces.
#[derive(Debug)]
pub struct MediaLines {
    /// Text held back: the start of a line that may be a directive.
    held: String,
    /// Whether the next text begins a line.
    at_line_start: bool,
    /// Local directories an attachment path may be in (`channels.websocket.media.roots`).
    roots: Vec<PathBuf>,
}

impl MediaLines {
    pub fn new(roots: Vec<PathBuf>) -> MediaLines {
        MediaLines { held: String::new(), at_line_start: true, roots }
    }

    /// Takes in a text piece; answers what goes on (text and media, in order).
    pub fn feed(&mut self, text: &str, out: &mut Vec<AnswerPiece>) {
        let mut rest = text;
        while !rest.is_empty() {
            if !self.at_line_start && self.held.is_empty() {
                // Mid-line text goes on up to and including the next newline.
                let end = rest.find('\n').map_or(rest.len(), |newline| newline + 1);
                push_text(out, &rest[..end]);
                self.at_line_start = rest[..end].ends_with('\n');
                rest = &rest[end..];
                continue;
            }
            let end = rest.find('\n').map_or(rest.len(), |newline| newline + 1);
            self.held.push_str(&rest[..end]);
            rest = &rest[end..];
            self.at_line_start = false;
            if self.held.ends_with('\n') {
                self.end_line(out);
            } else if !self.may_be_directive() {
                push_text(out, &std::mem::take(&mut self.held));
            }
        }
    }

    /// The answer ended: a held line is decided as it is.
    pub fn finish(&mut self, out: &mut Vec<AnswerPiece>) {
        if !self.held.is_empty() {
            self.end_line(out);
        }
    }

    fn may_be_directive(&self) -> bool {
        let held = self.held.as_str();
        held.len() <= MAX_DIRECTIVE_BYTES && (DIRECTIVE.starts_with(held) || held.starts_with(DIRECTIVE))
    }

    /// A whole held line: an attachment if it is a directive, else text.
    fn end_line(&mut self, out: &mut Vec<AnswerPiece>) {
        let line = std::mem::take(&mut self.held);
        self.at_line_start = line.ends_with('\n');
        let Some(target) = line.strip_prefix(DIRECTIVE).map(str::trim).filter(|target| !target.is_empty()) else {
            return push_text(out, &line);
        };
        match self.attachment(target) {
            Some(media) => out.push(media),
            None => log::warn!("an agent's MEDIA: attachment was dropped: {target:?} is not a URL under http(s) or a file under channels.websocket.media.roots"),
        }
    }

    /// The attachment a directive names: an http(s) URL as it is; a local file only
    /// under the media roots, to be copied into the media store and served from it
    /// (`attachments::stored`, which also checks the file's real path).
    fn attachment(&self, target: &str) -> Option<AnswerPiece> {
        let name = target.rsplit('/').next().filter(|name| !name.is_empty()).map(String::from);
        if target.starts_with("https://") || target.starts_with("http://") {
            let media_type = media_type_of(target);
            return Some(AnswerPiece::Media { url: target.to_string(), media_type, name, media_id: None });
        }
        let path = Path::new(target);
        if !under_roots(path, &self.roots) {
            return None;
        }
        let source = MediaSource::File(path.to_path_buf());
        Some(AnswerPiece::StoreMedia { source, media_type: media_type_of(target), name })
    }
}

fn push_text(out: &mut Vec<AnswerPiece>, text: &str) {
    if !text.is_empty() {
        out.push(AnswerPiece::Text(text.to_string()));
    }
}

/// Whether `path` is absolute, has no `..`, and lies under one of `roots`.
fn under_roots(path: &Path, roots: &[PathBuf]) -> bool {
    path.is_absolute()
        && !path.components().any(|part| part == Component::ParentDir)
        && roots.iter().any(|root| path.starts_with(root))
}

/// The media type an attachment's name suggests, for the common ones.
fn media_type_of(target: &str) -> Option<String> {
    crate::media::kinds::by_extension(target).map(String::from)
}

#[cfg(test)]
#[path = "media_lines_tests.rs"]
mod tests;
