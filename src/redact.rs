//! Credentials out of everything printed: logs, `/readyz`, errors (SPEC §8).
//!
//! [`url`] drops the `user:pass@` of a configured URL; [`secrets`] masks what looks
//! like a credential inside free text a backend sent (an error body may echo the
//! request's `Authorization` header or an API key), and every configured secret
//! ([`remember`], called at start) wherever it stands, whatever words surround it.

use std::borrow::Cow;
use std::sync::{PoisonError, RwLock};

/// Words after which the next token is a credential (compared ignoring case); several
/// in a row (`bearer token: …`, `x-api-key: …`) all count.
const CREDENTIAL_WORDS: [&str; 12] = [
    "bearer",
    "basic",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "x-api-key",
    "key",
    "access_token",
    "authorization",
    "secret",
    "password",
];
/// Configured secrets shorter than this are not masked literally (they would mask
/// ordinary words); the word rules still apply to them.
const MIN_REMEMBERED: usize = 6;

/// The configured secrets of this process (backend keys, URL passwords).
static REMEMBERED: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Masks `secrets` literally in everything [`secrets`] cleans from now on.
pub fn remember<'a>(secrets: impl IntoIterator<Item = &'a str>) {
    let mut remembered = REMEMBERED.write().unwrap_or_else(PoisonError::into_inner);
    for secret in secrets.into_iter().filter(|secret| secret.len() >= MIN_REMEMBERED) {
        if !remembered.iter().any(|known| known == secret) {
            remembered.push(secret.to_string());
        }
    }
}

/// The password of a URL's `user:pass@`, if it has one (to [`remember`] it).
pub fn url_password(url: &str) -> Option<&str> {
    let start = url.find("://").map_or(0, |scheme| scheme + 3);
    let end = url[start..].find(['?', '#']).map_or(url.len(), |query| start + query);
    let userinfo = &url[start..start + url[start..end].rfind('@')?];
    Some(userinfo.split_once(':').map_or(userinfo, |(_, password)| password))
}
/// Prefixes of well-known API keys (OpenAI, Anthropic, GitHub, Slack…).
const KEY_PREFIXES: [&str; 6] = ["sk-", "sk_", "pk-", "ghp_", "xoxb-", "AKIA"];
/// What a masked credential is replaced by.
const MASK: &str = "***";

/// `url` with the user and password before its host (`user:pass@`) replaced by `***`:
/// `http://user:pass@host/x` → `http://***@host/x`. Everything between `://` (or the
/// start) and the last `@` before any `?` or `#` is masked, so a password with an
/// unencoded `/` or `@`, or a URL without a scheme, is masked too. A URL without
/// credentials comes back as it is.
pub fn url(url: &str) -> Cow<'_, str> {
    let start = url.find("://").map_or(0, |scheme| scheme + 3);
    let end = url[start..].find(['?', '#']).map_or(url.len(), |query| start + query);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}{MASK}{}", &url[..start], &url[start + at..]).into(),
        None => url.into(),
    }
}

/// `text` with every credential-looking token masked: the userinfo of URLs, the token
/// after a credential word (`Bearer sk-…`, `"api_key": "…"`, `password=…`) and tokens
/// with a well-known key prefix.
pub fn secrets(text: &str) -> String {
    let mut text = urls(text);
    for secret in REMEMBERED.read().unwrap_or_else(PoisonError::into_inner).iter() {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), MASK);
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut mask_next = false;
    for piece in pieces(&text) {
        if piece.starts_with(is_separator) {
            out.push_str(piece);
        } else if CREDENTIAL_WORDS.iter().any(|word| piece.eq_ignore_ascii_case(word)) {
            mask_next = true;
            out.push_str(piece);
        } else if std::mem::take(&mut mask_next)
            || KEY_PREFIXES.iter().any(|prefix| piece.starts_with(prefix) && piece.len() > prefix.len() + 3)
        {
            out.push_str(MASK);
        } else {
            out.push_str(piece);
        }
    }
    out
}

/// `text` with the userinfo of every `scheme://…` in it masked.
fn urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find("://") {
        let scheme_start = rest[..found]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |before| before + 1);
        let end = rest[found..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
            .map_or(rest.len(), |at| found + at);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&url(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Whitespace and the punctuation of JSON, headers and query strings.
fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | ':' | '=' | ',' | '&' | '{' | '}' | '[' | ']' | ';')
}

/// `text` cut into alternating runs of separators and tokens, nothing lost.
fn pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut previous = None;
    for (index, character) in text.char_indices() {
        let separator = is_separator(character);
        if previous.is_some_and(|was| was != separator) {
            pieces.push(&text[start..index]);
            start = index;
        }
        previous = Some(separator);
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

#[cfg(test)]
#[path = "redact_tests.rs"]
mod tests;
