//! Server-sent events, decoded incrementally from the chunks of an HTTP body.
//!
//! Hand-written on purpose (see ARCHITECTURE.md, Decisions): the maintained crate
//! (`eventsource-stream`) copies the rest of its buffer for every line, which is
//! quadratic for a network chunk that carries hundreds of deltas, and its UTF-8
//! adapter grows without bound on invalid bytes. This decoder works on bytes, finds
//! whole lines (`\n`, `\r\n` or `\r`, found with memchr) in place, copies only the bytes of a
//! line split across chunks, which the next chunk completes (a UTF-8 character split
//! there included). It keeps only what the OpenAI-style streams need: `data:` fields joined
//! into one event at a blank line; comments (`:`) and other fields are skipped.

/// The default bound of one line and of one event's data, bytes.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// Why a stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line, or the `data` of one event, passed the decoder's limit: it ends the
    /// stream instead of growing memory.
    #[error("an event-stream line or event is longer than the limit")]
    TooLong,
    #[error("an event-stream line is not UTF-8")]
    NotUtf8,
}

/// The incremental decoder: feed it chunks, it hands out the `data` of each event.
#[derive(Debug)]
pub struct SseDecoder {
    /// The most bytes a line, or one event's data, may hold.
    limit: usize,
    /// Bytes not yet forming a whole line.
    pending: Vec<u8>,
    /// The `data` of the event being built (several `data:` lines join with `\n`).
    data: String,
    /// Whether the event being built has a `data` field at all.
    has_data: bool,
    /// The previous chunk ended in `\r`: a `\n` starting this one belongs to it.
    after_carriage_return: bool,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::with_limit(MAX_LINE_BYTES)
    }
}

impl SseDecoder {
    /// A decoder whose lines and events hold at most `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        SseDecoder { limit, pending: Vec::new(), data: String::new(), has_data: false, after_carriage_return: false }
    }

    /// Decodes one chunk; `on_event` receives each completed event's data (a buffer
    /// reused from event to event: copy what must outlive the call).
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(&str)) -> Result<(), SseError> {
        let mut chunk = chunk;
        if self.after_carriage_return {
            self.after_carriage_return = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        let mut start = 0;
        while let Some(found) = memchr::memchr2(b'\n', b'\r', &chunk[start..]) {
            let line_end = start + found;
            let mut next = line_end + 1;
            if chunk[line_end] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_carriage_return = true,
                }
            }
            self.line(&chunk[start..line_end], &mut on_event)?;
            start = next;
        }
        let rest = &chunk[start..];
        if self.pending.len() + rest.len() > self.limit {
            return Err(SseError::TooLong);
        }
        self.pending.extend_from_slice(rest);
        Ok(())
    }

    /// The body ended: a last event without its blank line still counts.
    pub fn finish(&mut self, mut on_event: impl FnMut(&str)) -> Result<(), SseError> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.field(&line)?;
        }
        self.dispatch(&mut on_event);
        Ok(())
    }

    /// One whole line: `part` completes the bytes pending from earlier chunks.
    fn line(&mut self, part: &[u8], on_event: &mut impl FnMut(&str)) -> Result<(), SseError> {
        if self.pending.is_empty() {
            return self.end_or_field(part, on_event);
        }
        let mut line = std::mem::take(&mut self.pending);
        line.extend_from_slice(part);
        let result = self.end_or_field(&line, on_event);
        line.clear();
        self.pending = line; // keep the allocation for the next split line
        result
    }

    fn end_or_field(&mut self, line: &[u8], on_event: &mut impl FnMut(&str)) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(on_event);
            Ok(())
        } else {
            self.field(line)
        }
    }

    fn field(&mut self, line: &[u8]) -> Result<(), SseError> {
        let Some(value) = line.strip_prefix(b"data") else {
            return Ok(()); // a comment (`:`), or a field the chat streams do not use
        };
        let value = match value {
            [] => &[][..],
            [b':', b' ', rest @ ..] | [b':', rest @ ..] => rest,
            _ => return Ok(()), // `dataX:` is another field's name
        };
        let text = std::str::from_utf8(value).map_err(|_| SseError::NotUtf8)?;
        if self.data.len() + text.len() + 1 > self.limit {
            return Err(SseError::TooLong);
        }
        if self.has_data {
            self.data.push('\n');
        }
        self.data.push_str(text);
        self.has_data = true;
        Ok(())
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(&str)) {
        if self.has_data {
            self.has_data = false;
            on_event(&self.data);
            self.data.clear(); // keep the allocation for the next event
        }
    }
}

#[cfg(test)]
#[path = "sse_tests.rs"]
mod tests;
