//! The web chat page (SPEC §7): its files, embedded in the binary, and the routes that
//! serve them with their types, cache validators and Content-Security-Policy.
//!
//! The page is static files (`web/`): `index.html`, `app.js`, `app.css`, a favicon and
//! the vendored Markdown renderer and sanitizer (`web/vendor/`, re-vendored by
//! `web/vendor/update.sh`). They are embedded with `include_str!`/`include_bytes!`, so
//! the binary still needs nothing beside it. Every answer carries a policy that lets
//! the page load only its own files and talk only to its own origin: no inline script,
//! no `eval`, no third-party host. Browsers disagree on whether `connect-src 'self'`
//! covers `ws:`/`wss:` of the same host, so the WebSocket origin is named explicitly
//! from the request's host. This module never reads a token: the page keeps it in the
//! tab and sends it only on the WebSocket URL and in upload headers.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};

/// The page itself; `WS_PATH_MARKER` in it becomes the configured WebSocket path.
const INDEX_HTML: &str = include_str!("../web/index.html");

/// What `index.html` says where the configured WebSocket path goes (its `<meta>`).
const WS_PATH_MARKER: &str = r#"name="clawsocket-ws-path" content="/ws""#;

/// Browsers revalidate the files on every load (they are not fingerprinted, and a new
/// binary must not meet an old script); the ETag makes that a 304 without a body.
const REVALIDATE: &str = "no-cache";

/// One embedded file: where it is served, its type and its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file besides `/`. The favicon answers at both names, so a browser's implicit
/// `/favicon.ico` request finds it too (an SVG under that name: every browser that
/// sniffs favicons reads it, and the Content-Type says what it is).
const ASSETS: &[Asset] = &[
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/app.js"),
    },
    Asset { path: "/assets/app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../web/app.css") },
    Asset {
        path: "/assets/vendor/marked.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/vendor/marked/marked.umd.js"),
    },
    Asset {
        path: "/assets/vendor/purify.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/vendor/dompurify/purify.min.js"),
    },
    Asset { path: "/favicon.svg", content_type: "image/svg+xml", body: include_bytes!("../web/favicon.svg") },
    Asset { path: "/favicon.ico", content_type: "image/svg+xml", body: include_bytes!("../web/favicon.svg") },
];

/// One file ready to serve (`index.html` already holding the configured WebSocket
/// path), with the strong ETag a browser revalidates against.
struct ServedFile {
    content_type: &'static str,
    body: web::Bytes,
    etag: String,
}

impl ServedFile {
    fn new(content_type: &'static str, body: web::Bytes) -> Self {
        let mut hasher = DefaultHasher::new();
        body.hash(&mut hasher);
        let etag = format!("\"{:016x}\"", hasher.finish());
        ServedFile { content_type, body, etag }
    }
}

/// Adds `/` and the page's files to an app (only where the WebSocket channel is on).
pub(crate) fn configure(app: &mut web::ServiceConfig, websocket_path: &str) {
    let index = index_html(websocket_path);
    let page = web::Data::new(ServedFile::new("text/html; charset=utf-8", web::Bytes::from(index)));
    app.service(file_resource("/", page));
    for asset in ASSETS {
        let file = web::Data::new(ServedFile::new(asset.content_type, web::Bytes::from_static(asset.body)));
        app.service(file_resource(asset.path, file));
    }
}

/// `GET` and `HEAD` of one file at `path`.
fn file_resource(path: &str, file: web::Data<ServedFile>) -> actix_web::Resource {
    web::resource(path).app_data(file).route(web::get().to(serve)).route(web::head().to(serve))
}

/// `index.html` with `path` (HTML-escaped) as the page's WebSocket path.
fn index_html(path: &str) -> String {
    let escaped = path.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;");
    INDEX_HTML.replacen(WS_PATH_MARKER, &format!(r#"name="clawsocket-ws-path" content="{escaped}""#), 1)
}

/// `GET` (or `HEAD`) of the page or one of its files: 304 when the browser's copy is current.
async fn serve(request: HttpRequest, file: web::Data<ServedFile>) -> HttpResponse {
    let fresh = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == file.etag || tag.trim() == "*"));
    let mut response = if fresh { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    response
        .insert_header((header::CACHE_CONTROL, REVALIDATE))
        .insert_header((header::ETAG, file.etag.as_str()))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CONTENT_SECURITY_POLICY, content_security_policy(&request)));
    if fresh {
        return response.finish();
    }
    response.content_type(file.content_type).body(file.body.clone())
}

/// Only this origin: scripts, styles, fonts and images from here (images also as the
/// `blob:` URLs of the page's own thumbnails), connections to here and to this host's
/// WebSocket, no plugins, no framing, no `<base>` rewriting.
fn content_security_policy(request: &HttpRequest) -> HeaderValue {
    let websocket = websocket_sources(request);
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
         connect-src 'self'{websocket}; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"))
}

/// ` ws://host wss://host` for the host the browser asked for, or nothing when that host
/// is not a plain `name[:port]` (a crafted Host must not widen the policy).
fn websocket_sources(request: &HttpRequest) -> String {
    let info = request.connection_info();
    let host = info.host();
    let plain =
        !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if plain {
        format!(" ws://{host} wss://{host}")
    } else {
        String::new()
    }
}

#[cfg(test)]
#[path = "web_page_tests.rs"]
mod tests;
