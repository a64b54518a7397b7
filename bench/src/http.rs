//! A deliberately tiny HTTP/1.1 layer over tokio: just what the fake agent (server
//! side) and the bare relay's keep-alive agent client need. Not a general HTTP
//! implementation: no pipelining guarantees beyond keep-alive, no 100-continue.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// A read buffer over an async reader.
pub struct Reader<R> {
    pub inner: R,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader { inner, buf: Vec::with_capacity(8 * 1024), pos: 0 }
    }

    /// Unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Read once more from the socket; Ok(0) at end of stream.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        if self.buf.capacity() - len < 4096 {
            self.buf.reserve(8 * 1024);
        }
        let cap = self.buf.capacity();
        self.buf.resize(cap, 0);
        let n = self.inner.read(&mut self.buf[len..]).await;
        match n {
            Ok(n) => {
                self.buf.truncate(len + n);
                Ok(n)
            }
            Err(e) => {
                self.buf.truncate(len);
                Err(e)
            }
        }
    }

    /// Read up to and including `delim`; returns the bytes before it (consumed).
    /// Ok(None) on a clean end of stream before any byte.
    async fn read_until(&mut self, delim: &[u8], limit: usize) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = crate::memfind(self.data(), delim) {
                let out = self.data()[..i].to_vec();
                self.consume(i + delim.len());
                return Ok(Some(out));
            }
            if self.data().len() > limit {
                return Err(bad("header too large"));
            }
            if self.fill().await? == 0 {
                if self.data().is_empty() {
                    return Ok(None);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn read_exact_vec(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.data().len() < n {
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let out = self.data()[..n].to_vec();
        self.consume(n);
        Ok(out)
    }
}

/// Parsed head of a request or a response.
#[derive(Debug, Default)]
pub struct Head {
    /// Request: method; response: version.
    pub first: String,
    /// Request: path; response: status code.
    pub second: String,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub close: bool,
    pub content_type: String,
}

fn parse_head(raw: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(raw).map_err(|_| bad("head not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let start = lines.next().ok_or_else(|| bad("empty head"))?;
    let mut parts = start.split(' ');
    let a = parts.next().unwrap_or("").to_string();
    let b = parts.next().unwrap_or("").to_string();
    let c = parts.next().unwrap_or("");
    let mut head = Head { first: a, second: b, ..Default::default() };
    // HTTP/1.0 closes by default (request: third word; response: first word).
    if c == "HTTP/1.0" || head.first == "HTTP/1.0" {
        head.close = true;
    }
    for line in lines {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(v.parse().map_err(|_| bad("bad content-length"))?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = v.to_ascii_lowercase().contains("chunked");
        } else if k.eq_ignore_ascii_case("connection") {
            let v = v.to_ascii_lowercase();
            if v.contains("close") {
                head.close = true;
            } else if v.contains("keep-alive") {
                head.close = false;
            }
        } else if k.eq_ignore_ascii_case("content-type") {
            head.content_type = v.to_string();
        }
    }
    Ok(head)
}

/// Read one response with its whole body (content-length or chunked).
pub async fn read_response<R: AsyncRead + Unpin>(r: &mut Reader<R>) -> io::Result<(Head, Vec<u8>)> {
    let raw = r.read_until(b"\r\n\r\n", MAX_HEAD).await?.ok_or_else(|| bad("closed before a response"))?;
    let head = parse_head(&raw)?;
    let body = read_body(r, &head).await?;
    Ok((head, body))
}

async fn read_body<R: AsyncRead + Unpin>(r: &mut Reader<R>, head: &Head) -> io::Result<Vec<u8>> {
    if head.chunked {
        let mut body = Vec::new();
        loop {
            let line = r.read_until(b"\r\n", 1024).await?.ok_or_else(|| bad("eof in chunk"))?;
            let size = parse_chunk_size(&line)?;
            if size == 0 {
                // trailers until an empty line
                loop {
                    let t = r.read_until(b"\r\n", MAX_HEAD).await?.ok_or_else(|| bad("eof in trailer"))?;
                    if t.is_empty() {
                        break;
                    }
                }
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(bad("body too large"));
            }
            body.extend_from_slice(&r.read_exact_vec(size).await?);
            r.read_exact_vec(2).await?;
        }
    }
    let n = head.content_length.unwrap_or(0);
    if n > MAX_BODY {
        return Err(bad("body too large"));
    }
    r.read_exact_vec(n).await
}

/// Read one request (head and whole body). Ok(None) when the peer closed the
/// keep-alive connection between requests.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut Reader<R>) -> io::Result<Option<(Head, Vec<u8>)>> {
    let Some(raw) = r.read_until(b"\r\n\r\n", MAX_HEAD).await? else { return Ok(None) };
    let head = parse_head(&raw)?;
    let body = read_body(r, &head).await?;
    Ok(Some((head, body)))
}

fn parse_chunk_size(line: &[u8]) -> io::Result<usize> {
    let s = std::str::from_utf8(line).map_err(|_| bad("chunk size"))?;
    let s = s.split(';').next().unwrap_or("").trim();
    usize::from_str_radix(s, 16).map_err(|_| bad("chunk size"))
}

/// Write a complete response with a body.
pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: &str,
    content_type: &str,
    body: &[u8],
    close: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if close { "close" } else { "keep-alive" }
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    w.write_all(&out).await?;
    w.flush().await
}

/// Append one chunk of chunked transfer encoding to `out`.
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write;
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Client side of one streamed (SSE) response on a keep-alive connection: decodes
/// the body (chunked, content-length or until close) and extracts the `content` of
/// each `data:` event's delta.
pub struct SseResponse {
    chunked: bool,
    /// chunked: bytes left in the current chunk; length-delimited: body bytes left.
    left: usize,
    state: ChunkState,
    until_close: bool,
    body: Vec<u8>,
    body_pos: usize,
    pub done: bool,
    pub saw_done_marker: bool,
    pub status: u16,
    pub close: bool,
}

#[derive(PartialEq)]
enum ChunkState {
    Size,
    Data,
    DataCrlf,
    Trailer,
    Finished,
}

impl SseResponse {
    /// Read the response head.
    pub async fn start<R: AsyncRead + Unpin>(r: &mut Reader<R>) -> io::Result<SseResponse> {
        let raw = r.read_until(b"\r\n\r\n", MAX_HEAD).await?.ok_or_else(|| bad("agent closed"))?;
        let head = parse_head(&raw)?;
        let status: u16 = head.second.parse().map_err(|_| bad("bad status"))?;
        Ok(SseResponse {
            chunked: head.chunked,
            left: head.content_length.unwrap_or(0),
            state: ChunkState::Size,
            until_close: !head.chunked && head.content_length.is_none(),
            body: Vec::with_capacity(4096),
            body_pos: 0,
            done: false,
            saw_done_marker: false,
            status,
            close: head.close || (!head.chunked && head.content_length.is_none()),
        })
    }

    /// Decode what is buffered (reading once from the socket when nothing is) and
    /// push the contents of complete events into `out`. Returns false once the
    /// response has ended.
    pub async fn next_batch<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut Reader<R>,
        out: &mut Vec<String>,
    ) -> io::Result<bool> {
        if self.done {
            return Ok(false);
        }
        loop {
            let before = out.len();
            self.decode(r)?;
            self.events(out);
            if out.len() > before || self.done {
                return Ok(!self.done || out.len() > before);
            }
            if r.fill().await? == 0 {
                if self.until_close {
                    self.done = true;
                    self.events(out);
                    return Ok(out.len() > before);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn decode<R: AsyncRead + Unpin>(&mut self, r: &mut Reader<R>) -> io::Result<()> {
        if !self.chunked {
            let d = r.data();
            let n = if self.until_close { d.len() } else { d.len().min(self.left) };
            self.body.extend_from_slice(&d[..n]);
            r.consume(n);
            if !self.until_close {
                self.left -= n;
                if self.left == 0 {
                    self.done = true;
                }
            }
            return Ok(());
        }
        loop {
            match self.state {
                ChunkState::Size | ChunkState::Trailer => {
                    let d = r.data();
                    let Some(i) = crate::memfind(d, b"\r\n") else { return Ok(()) };
                    if self.state == ChunkState::Size {
                        let size = parse_chunk_size(&d[..i])?;
                        r.consume(i + 2);
                        if size == 0 {
                            self.state = ChunkState::Trailer;
                        } else {
                            self.left = size;
                            self.state = ChunkState::Data;
                        }
                    } else {
                        r.consume(i + 2);
                        if i == 0 {
                            self.state = ChunkState::Finished;
                        }
                    }
                }
                ChunkState::Data => {
                    let d = r.data();
                    if d.is_empty() {
                        return Ok(());
                    }
                    let n = d.len().min(self.left);
                    self.body.extend_from_slice(&d[..n]);
                    r.consume(n);
                    self.left -= n;
                    if self.left == 0 {
                        self.state = ChunkState::DataCrlf;
                    }
                }
                ChunkState::DataCrlf => {
                    if r.data().len() < 2 {
                        return Ok(());
                    }
                    r.consume(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Finished => {
                    self.done = true;
                    return Ok(());
                }
            }
        }
    }

    fn events(&mut self, out: &mut Vec<String>) {
        loop {
            let rest = &self.body[self.body_pos..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else { break };
            let line = &rest[..nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(payload) = line.strip_prefix(b"data:") {
                let payload = payload.strip_prefix(b" ").unwrap_or(payload);
                if payload == b"[DONE]" {
                    self.saw_done_marker = true;
                } else if let Some(c) = extract_content(payload) {
                    if !c.is_empty() {
                        out.push(c);
                    }
                }
            }
            self.body_pos += nl + 1;
        }
        if self.body_pos == self.body.len() {
            self.body.clear();
            self.body_pos = 0;
        } else if self.body_pos > 64 * 1024 {
            self.body.drain(..self.body_pos);
            self.body_pos = 0;
        }
    }
}

/// The first `"content":"..."` string of an OpenAI chunk (the delta's), unescaped.
pub fn extract_content(payload: &[u8]) -> Option<String> {
    let key = b"\"content\":";
    let mut i = crate::memfind(payload, key)? + key.len();
    while i < payload.len() && payload[i] == b' ' {
        i += 1;
    }
    if payload.get(i) != Some(&b'"') {
        return None; // null or absent
    }
    let start = i + 1;
    let mut j = start;
    let mut escaped = false;
    while j < payload.len() {
        match payload[j] {
            b'\\' => {
                escaped = true;
                j += 2;
                continue;
            }
            b'"' => break,
            _ => j += 1,
        }
    }
    if j >= payload.len() {
        return None;
    }
    if !escaped {
        return String::from_utf8(payload[start..j].to_vec()).ok();
    }
    serde_json::from_slice::<String>(&payload[start - 1..=j]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_content() {
        let p = br#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":"he\"llo"},"finish_reason":null}]}"#;
        assert_eq!(extract_content(p).unwrap(), "he\"llo");
        let p = br#"{"choices":[{"delta":{"content": "plain"}}]}"#;
        assert_eq!(extract_content(p).unwrap(), "plain");
        let p = br#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#;
        assert!(extract_content(p).is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn decodes_chunked_sse() {
        let mut body = Vec::new();
        push_chunk(&mut body, b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n");
        push_chunk(&mut body, b"data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\ndata: [DO");
        push_chunk(&mut body, b"NE]\n\n");
        body.extend_from_slice(b"0\r\n\r\n");
        let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        raw.extend_from_slice(&body);
        raw.extend_from_slice(b"NEXT");
        let mut r = Reader::new(&raw[..]);
        let mut sse = SseResponse::start(&mut r).await.unwrap();
        let mut out = Vec::new();
        while sse.next_batch(&mut r, &mut out).await.unwrap() {}
        assert_eq!(out, vec!["a".to_string(), "b".to_string()]);
        assert!(sse.saw_done_marker);
        assert_eq!(r.data(), b"NEXT");
    }
}
