//! Shared helpers of the benchmark tools: delta time stamps, a tiny HTTP/1.1
//! reader for the fake servers and the bare relay's agent client, /proc readings,
//! and the runtime builder used by every binary.

pub mod http;
pub mod procinfo;

use std::time::{SystemTime, UNIX_EPOCH};

/// Opening of the time stamp the fake agent puts at the head of each delta.
pub const STAMP_OPEN: &str = "\u{27E6}t=";
/// Closing of the stamp.
pub const STAMP_CLOSE: &str = "\u{27E7}";

/// Wall clock in nanoseconds since the Unix epoch. Sender and receiver run on the
/// same machine, so a stamp taken here in one process and read in another is on
/// the same clock (CLOCK_REALTIME, read through the vDSO: ~20-30 ns).
#[inline]
pub fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Write one delta's content: `⟦t=<unix_nanos>⟧` padded with ASCII 'x' up to
/// `bytes` bytes in all (the stamp alone when `bytes` is smaller than it).
pub fn write_stamped(out: &mut String, now_ns: u64, bytes: usize) {
    use std::fmt::Write;
    let start = out.len();
    out.push_str(STAMP_OPEN);
    let _ = write!(out, "{now_ns}");
    out.push_str(STAMP_CLOSE);
    let used = out.len() - start;
    for _ in used..bytes {
        out.push('x');
    }
}

/// Find a stamp in received text and return its nanoseconds (None when the text
/// carries none, e.g. the echo agent's deltas).
#[inline]
pub fn find_stamp(text: &[u8]) -> Option<u64> {
    let open = STAMP_OPEN.as_bytes();
    let pos = memfind(text, open)?;
    let mut v: u64 = 0;
    let mut any = false;
    for &c in &text[pos + open.len()..] {
        if c.is_ascii_digit() {
            v = v.wrapping_mul(10).wrapping_add((c - b'0') as u64);
            any = true;
        } else {
            break;
        }
    }
    any.then_some(v)
}

/// Position of `needle` in `hay` (first byte scan with memchr-like loop).
#[inline]
pub fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    if hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match hay[i..=last_start].iter().position(|&b| b == first) {
            None => return None,
            Some(off) => {
                i += off;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// Build the tokio runtime: `threads == 1` gives a current-thread runtime (no
/// work-stealing machinery, one OS thread); more gives a multi-thread runtime
/// with that many workers.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
}

/// Bind a listener with a deep accept queue (4096; the kernel caps it at
/// net.core.somaxconn). tokio's `TcpListener::bind` uses 1024, which overflows when
/// a thousand clients connect in the same millisecond and costs them a 1 s SYN
/// retransmission.
pub fn listen(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) after.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
pub fn raise_nofile() -> (u64, u64) {
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return (0, 0);
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
        (r.rlim_cur as u64, r.rlim_max as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_roundtrip_and_padding() {
        let mut s = String::new();
        write_stamped(&mut s, 1_732_500_000_123_456_789, 64);
        assert_eq!(s.len(), 64);
        assert_eq!(find_stamp(s.as_bytes()), Some(1_732_500_000_123_456_789));
        let mut short = String::new();
        write_stamped(&mut short, 42, 1);
        assert_eq!(find_stamp(short.as_bytes()), Some(42));
        assert_eq!(find_stamp(b"echo: go"), None);
    }

    #[test]
    fn memfind_works() {
        assert_eq!(memfind(b"abcabd", b"abd"), Some(3));
        assert_eq!(memfind(b"ab", b"abd"), None);
        assert_eq!(memfind(b"xxa", b"a"), Some(2));
    }
}
