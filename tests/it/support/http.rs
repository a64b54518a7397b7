//! Raw HTTP/1.1, as curl sends it: a request written byte for byte on a TCP socket
//! (a `Content-Length` body, or a chunked one written chunk by chunk), the answer
//! read to the end (`Connection: close`) and parsed. Async (tokio) for the tests, and
//! blocking (std) for the property test, which runs its cases outside any runtime.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long an exchange may take before the test fails (a hang, not a timing claim).
const TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// How a request's body is sent.
pub enum Body<'a> {
    /// No body at all (no `Content-Length`).
    None,
    /// `Content-Length` and the bytes.
    Whole(&'a [u8]),
    /// `Transfer-Encoding: chunked`, one chunk per piece, each written (and flushed) apart.
    Chunked(&'a [&'a [u8]]),
    /// A `Content-Length` header with this value, and no byte of the body.
    DeclaredOnly(u64),
}

/// The bytes of a request: `method path`, `headers` (`Name: value`), the body's framing.
pub fn request_head(method: &str, path: &str, headers: &[(&str, &str)], body: &Body<'_>) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match body {
        Body::None => {}
        Body::Whole(bytes) => head.push_str(&format!("Content-Length: {}\r\n", bytes.len())),
        Body::Chunked(_) => head.push_str("Transfer-Encoding: chunked\r\n"),
        Body::DeclaredOnly(length) => head.push_str(&format!("Content-Length: {length}\r\n")),
    }
    head.push_str("\r\n");
    head
}

/// The pieces written after the head.
fn body_pieces(body: &Body<'_>) -> Vec<Vec<u8>> {
    match body {
        Body::None | Body::DeclaredOnly(_) => Vec::new(),
        Body::Whole(bytes) => vec![bytes.to_vec()],
        Body::Chunked(chunks) => {
            let mut pieces: Vec<Vec<u8>> = chunks
                .iter()
                .filter(|chunk| !chunk.is_empty())
                .map(|chunk| {
                    let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
                    piece.extend_from_slice(chunk);
                    piece.extend_from_slice(b"\r\n");
                    piece
                })
                .collect();
            pieces.push(b"0\r\n\r\n".to_vec());
            pieces
        }
    }
}

/// One exchange with the server at `addr`. Writing stops quietly when the server has
/// already answered and closed (a refusal before the whole body was read).
pub async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Body<'_>) -> HttpAnswer {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = request_head(method, path, headers, &body);
        stream.write_all(head.as_bytes()).await.expect("write the head");
        for piece in body_pieces(&body) {
            if stream.write_all(&piece).await.is_err() || stream.flush().await.is_err() {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        read_answer(&mut stream).await
    };
    actix_rt::time::timeout(TIMEOUT, exchange).await.expect("the server answered within the test timeout")
}

/// Writes a whole raw request (`raw_request`), in pieces a few ms apart when
/// `paced` (a chunked body arriving chunk by chunk), and reads the answer.
pub async fn send_raw(addr: SocketAddr, raw: Vec<u8>, paced: bool) -> HttpAnswer {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let pieces: Vec<&[u8]> = if paced { raw.chunks(256).collect() } else { vec![&raw[..]] };
        for piece in pieces {
            if stream.write_all(piece).await.is_err() || stream.flush().await.is_err() {
                break;
            }
            if paced {
                actix_rt::time::sleep(Duration::from_millis(2)).await;
            }
        }
        read_answer(&mut stream).await
    };
    actix_rt::time::timeout(TIMEOUT, exchange).await.expect("the server answered within the test timeout")
}

async fn read_answer(stream: &mut tokio::net::TcpStream) -> HttpAnswer {
    let mut answer = Vec::new();
    // A reset after the answer came (the server closed with body bytes unread) is
    // fine: what was read is the answer.
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => answer.extend_from_slice(&buffer[..read]),
        }
    }
    parse(&answer)
}

/// As `send`, blocking (std sockets): for code that runs outside a runtime.
pub fn send_blocking(addr: SocketAddr, raw_request: &[u8]) -> HttpAnswer {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("a read timeout");
    stream.set_write_timeout(Some(TIMEOUT)).expect("a write timeout");
    let _ = stream.write_all(raw_request);
    let mut answer = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => answer.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => panic!("no answer within {TIMEOUT:?}"),
            Err(_) => break,
        }
    }
    parse(&answer)
}

/// A whole request's bytes (for `send_blocking`).
pub fn raw_request(method: &str, path: &str, headers: &[(&str, &str)], body: &Body<'_>) -> Vec<u8> {
    let mut bytes = request_head(method, path, headers, body).into_bytes();
    for piece in body_pieces(body) {
        bytes.extend_from_slice(&piece);
    }
    bytes
}

/// Parses an answer read to the end (a chunked body is joined).
pub fn parse(answer: &[u8]) -> HttpAnswer {
    let split = answer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer head in {:?}", String::from_utf8_lossy(answer)));
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status code");
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let raw = &answer[split + 4..];
    let body = if headers.get("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
        dechunk(raw)
    } else {
        raw.to_vec()
    };
    HttpAnswer { status, headers, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = raw.windows(2).position(|window| window == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        raw = &raw[end + 2..];
        if size == 0 || raw.len() < size {
            break;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[(size + 2).min(raw.len())..];
    }
    body
}
