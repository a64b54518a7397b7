//! Media types: which an upload may have (`channels.websocket.media.allowedTypes`),
//! which are checked against the file's first bytes (images and PDF: the header alone
//! is the client's word), and how each is served (inline only when no browser runs
//! script from it). Pure functions, no I/O.

/// How many of a file's first bytes are looked at to recognize it (every signature
/// `infer` knows for images and PDF lies within them).
pub const SNIFF_BYTES: usize = 512;

/// The type a file whose type nobody knows is stored and served as.
pub const UNKNOWN_TYPE: &str = "application/octet-stream";

/// Types a browser shows without running anything from them: served `inline`.
/// Everything else (HTML, SVG, XML, JavaScript, unknown) is served as an attachment.
const INLINE_TYPES: &[&str] =
    &["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp", "application/pdf", "text/plain"];

/// Whether `pattern` is an `allowedTypes` entry: `type/subtype` or `type/*`, lowercase.
pub fn is_type_pattern(pattern: &str) -> bool {
    let Some((kind, subtype)) = pattern.split_once('/') else { return false };
    is_token(kind) && (subtype == "*" || is_token(subtype))
}

/// A media type's part: lowercase letters, digits and `!#$&^_.+-`, 1 to 127 bytes.
fn is_token(part: &str) -> bool {
    !part.is_empty()
        && part.len() < 128
        && part.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"!#$&^_.+-".contains(&byte))
}

/// The `type/subtype` of a `Content-Type` value, lowercased, parameters dropped and
/// common aliases made canonical (`image/jpg` → `image/jpeg`); `None` if it is none.
pub fn essence(header: &str) -> Option<String> {
    let essence = header.split(';').next()?.trim().to_ascii_lowercase();
    let canonical = match essence.as_str() {
        "image/jpg" | "image/pjpeg" => "image/jpeg".to_string(),
        "image/x-png" => "image/png".to_string(),
        "image/x-ms-bmp" => "image/bmp".to_string(),
        _ => essence,
    };
    let (kind, subtype) = canonical.split_once('/')?;
    (is_token(kind) && is_token(subtype)).then_some(canonical)
}

/// Whether `kind` (an essence) is one of `patterns`.
pub fn allowed(kind: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|pattern| match pattern.strip_suffix("/*") {
        Some(prefix) => kind.split_once('/').is_some_and(|(top, _)| top == prefix),
        None => pattern == kind,
    })
}

/// Whether an upload of `kind` must show it in its first bytes: images (but SVG, which
/// is text) and PDF.
pub fn needs_magic(kind: &str) -> bool {
    (kind.starts_with("image/") && kind != "image/svg+xml") || kind == "application/pdf"
}

/// What the first bytes of a file say it is, when they say (images, PDF, archives…).
pub fn sniffed(first: &[u8]) -> Option<&'static str> {
    infer::get(first).map(|found| found.mime_type())
}

/// Whether `first` (a file's first bytes, up to [`SNIFF_BYTES`]) is a `kind` file.
pub fn matches_bytes(kind: &str, first: &[u8]) -> bool {
    sniffed(first) == Some(kind)
}

/// Whether `kind` is an image a model can be shown (an `image_url` part).
pub fn is_image(kind: &str) -> bool {
    needs_magic(kind) && kind != "application/pdf"
}

/// Whether a browser may show `kind` inline (never a type that can run script).
pub fn served_inline(kind: &str) -> bool {
    INLINE_TYPES.contains(&kind)
}

/// The type of a file an agent produced: what its bytes say, else what its name's
/// extension says, else [`UNKNOWN_TYPE`].
pub fn of_file(first: &[u8], name: Option<&str>) -> String {
    sniffed(first).or_else(|| name.and_then(by_extension)).unwrap_or(UNKNOWN_TYPE).to_string()
}

/// The media type a file name's extension suggests, for the common ones.
pub fn by_extension(name: &str) -> Option<&'static str> {
    let name = name.split(['?', '#']).next().unwrap_or(name).to_ascii_lowercase();
    let (_, extension) = name.rsplit_once('.')?;
    let kind = match extension {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "bmp" => "image/bmp",
        "pdf" => "application/pdf",
        "txt" | "md" | "log" | "csv" => "text/plain",
        "json" => "application/json",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" => "audio/ogg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "zip" => "application/zip",
        _ => return None,
    };
    Some(kind)
}

/// The extension a file of an inline type is saved with.
pub fn extension_of(kind: &str) -> Option<&'static str> {
    let extension = match kind {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/avif" => "avif",
        "image/bmp" => "bmp",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        _ => return None,
    };
    Some(extension)
}

/// A file name as it may appear in a `Content-Disposition` and in frames: its last
/// path part, without control characters, quotes, backslashes or a leading dot, at
/// most 120 characters; `None` when nothing is left.
pub fn clean_name(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '\\' | ';'))
        .take(120)
        .collect::<String>()
        .trim()
        .trim_start_matches('.')
        .to_string();
    (!cleaned.is_empty()).then_some(cleaned)
}

#[cfg(test)]
#[path = "kinds_tests.rs"]
pub(crate) mod tests;
