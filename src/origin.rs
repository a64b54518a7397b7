//! `channels.websocket.allowedOrigins`: which browser pages may open a socket.
//!
//! A browser attaches the page's `Origin` to every WebSocket handshake and lets any
//! page connect anywhere, cookies included: without this check, any site a user
//! visits could talk to the agent as that user (cross-site WebSocket hijacking). As
//! Centrifugo's `allowed_origins`: an empty list allows every origin (the original
//! plugin's behaviour); a handshake that carries an `Origin` outside the list is
//! refused (HTTP 403, in `server.rs`, before the auth service is asked); a client
//! that sends no `Origin` (wscat, websocat, server-side code) is not a browser and is
//! not affected. Pure functions on strings: no I/O, no allocation.
//!
//! A pattern is `*` (any origin), `null` (the opaque origin of sandboxed or `file:`
//! pages), or `scheme://host[:port]` where a host label may be `*`, standing for
//! exactly one label: `https://*.example.com` allows `https://app.example.com` but
//! neither `https://example.com` nor `https://a.b.example.com` nor another port.
//! Comparison ignores ASCII case.

/// Whether a handshake whose `Origin` header is `origin` may proceed under `allowed`.
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    allowed.is_empty() || allowed.iter().any(|pattern| pattern_matches(pattern, origin))
}

/// Whether `pattern` is a usable `allowedOrigins` entry (checked once, at start).
pub fn is_valid_pattern(pattern: &str) -> bool {
    if pattern == "*" || pattern.eq_ignore_ascii_case("null") {
        return true;
    }
    let Some((scheme, host)) = pattern.split_once("://") else { return false };
    !scheme.is_empty()
        && scheme.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.'))
        && !host.is_empty()
        && host.split('.').all(|label| !label.is_empty())
        && !host.contains(['/', '?', '#', '@', ' '])
}

fn pattern_matches(pattern: &str, origin: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let (Some((pattern_scheme, pattern_host)), Some((scheme, host))) =
        (pattern.split_once("://"), origin.split_once("://"))
    else {
        return pattern.eq_ignore_ascii_case(origin);
    };
    if !pattern_scheme.eq_ignore_ascii_case(scheme) {
        return false;
    }
    let mut pattern_labels = pattern_host.split('.');
    let mut labels = host.split('.');
    loop {
        match (pattern_labels.next(), labels.next()) {
            (None, None) => return true,
            (Some(pattern_label), Some(label)) if label_matches(pattern_label, label) => {}
            _ => return false,
        }
    }
}

/// `*` is one whole DNS label (letters, digits, `-`); anything else compares as text.
fn label_matches(pattern: &str, label: &str) -> bool {
    if pattern == "*" {
        !label.is_empty() && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
    } else {
        pattern.eq_ignore_ascii_case(label)
    }
}

#[cfg(test)]
#[path = "origin_tests.rs"]
mod tests;
