//! The media routes (SPEC §7, §12), with the WebSocket's credentials
//! (`handshake::identify`: `?token=` or `Authorization: Bearer`; anonymous only where
//! auth allows it, as `?senderId=`).
//!
//! `POST /media`: the raw bytes as the body, their type as `Content-Type`, an optional
//! `?name=`. `201 {mediaId, mediaType, bytes, url, name?}`. Refusals are JSON
//! `{error, code}` like a `chat.error`: 401 `token_required`/`auth_failed` (503 when the
//! auth service is down), 403 `forbidden` (`dmPolicy` allowlist), 415 `unsupported_type`
//! (a type outside `allowedTypes`, or first bytes that are not the declared image or
//! PDF), 413 `payload_too_large` (`maxBytes`: from `Content-Length` before a byte is
//! read, or as a chunked body grows past it), 413 `quota_exceeded` (`perUserBytes`:
//! 413 and not 429, since waiting does not help: only deleting media does), 400
//! `invalid_message` (an empty body, or one that broke off).
//!
//! `GET /media/{id}`: its owner, or (with `?groupId=`) a member of a group it was sent
//! to, as `groups.policy` decides; a signed link (`?expires=&signature=`, given to the
//! agent) without credentials. Everyone else, and unknown ids, get 404, never 403.
//! Served with its `Content-Type`, `X-Content-Type-Options: nosniff`, a sandboxing
//! `Content-Security-Policy`, and `Content-Disposition: inline` only for types that
//! cannot run script (images, PDF, plain text): everything else is an attachment.

use std::sync::Arc;

use actix_web::http::header::{
    self, Charset, ContentDisposition, DispositionParam, DispositionType, ExtendedValue, HeaderValue,
};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::{kinds, MediaError, MediaMeta, MediaStore, UploadError, UploadRequest};
use crate::auth::{AuthError, Authenticator};
use crate::config::DmPolicy;
use crate::groups::{GroupAccess, GroupAction, Verdict};
use crate::handshake;
use crate::identity::ConnectionId;
use crate::protocol::ErrorCode;
use crate::server::AppState;

/// Bytes read from the disk per chunk of a download.
const READ_CHUNK: usize = 64 * 1024;

/// The query parameters the media routes read (the credentials are the handshake's).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaQuery {
    name: Option<String>,
    group_id: Option<String>,
    expires: Option<u64>,
    signature: Option<String>,
}

fn query_of(request: &HttpRequest) -> MediaQuery {
    serde_urlencoded::from_str(request.query_string()).unwrap_or_default()
}

/// A refusal: `{error, code}` with `status`.
fn refusal(status: StatusCode, code: ErrorCode, text: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": text, "code": code}))
}

fn auth_refusal(error: &AuthError) -> HttpResponse {
    let status = if error.is_service_fault() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::UNAUTHORIZED };
    refusal(status, error.code(), &error.client_message())
}

fn store_failure(error: &MediaError) -> HttpResponse {
    log::error!("media: {error}");
    let status = match error {
        MediaError::Cluster(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refusal(status, ErrorCode::Internal, "the media store failed; try again later")
}

/// `POST /media`.
pub(crate) async fn upload(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    authenticator: web::Data<Authenticator>,
) -> HttpResponse {
    let connection = ConnectionId::new();
    let identity = match handshake::identify(&request, &state.settings, &authenticator, &connection).await {
        Ok(identity) => identity,
        Err(error) => return auth_refusal(&error),
    };
    if identity.sender_id.ends_with(connection.as_str()) {
        // Named after this request alone: nobody could ever read it back or delete it.
        let text = "an upload needs a name for its owner: log in (?token=) or, where auth is off, give ?senderId=";
        return refusal(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, text);
    }
    let websocket = &state.settings.channels.websocket;
    if websocket.dm_policy == DmPolicy::Allowlist && !websocket.allow_from.contains(&identity.sender_id) {
        let text = "this sender is not allowed to talk to the agent (dmPolicy allowlist)";
        return refusal(StatusCode::FORBIDDEN, ErrorCode::Forbidden, text);
    }
    let media: &Arc<MediaStore> = &state.media;
    let Some(_slot) = media.admit_upload(&identity.sender_id) else {
        let text = "too many uploads at once for this user or this server; try again when one ends";
        return refusal(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, text);
    };
    let allowed = &media.settings().allowed_types;
    let declared = request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    let Some(media_type) = declared.and_then(kinds::essence).filter(|kind| kinds::allowed(kind, allowed)) else {
        let text = format!(
            "Content-Type {:?} is not one this server takes (channels.websocket.media.allowedTypes: {})",
            declared.unwrap_or_default().chars().take(100).collect::<String>(),
            allowed.join(", ")
        );
        return refusal(StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::UnsupportedType, &text);
    };
    let content_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let upload = UploadRequest {
        owner: identity.sender_id.clone(),
        media_type,
        name: query_of(&request).name.and_then(|name| kinds::clean_name(&name)),
        content_length,
    };
    match media.upload(upload, body).await {
        Ok(meta) => created(media, &meta),
        Err(error) => upload_refusal(&error),
    }
}

fn created(media: &MediaStore, meta: &MediaMeta) -> HttpResponse {
    let url = media.url(&meta.id, None);
    let mut body = json!({"mediaId": meta.id, "mediaType": meta.media_type, "bytes": meta.bytes, "url": url});
    if let Some(name) = &meta.name {
        body["name"] = json!(name);
    }
    HttpResponse::Created().insert_header((header::LOCATION, url)).json(body)
}

fn upload_refusal(error: &UploadError) -> HttpResponse {
    let text = error.to_string();
    match error {
        UploadError::TooLarge { .. } => refusal(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge, &text),
        UploadError::Quota { .. } => refusal(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::QuotaExceeded, &text),
        UploadError::NotThatType { .. } => {
            refusal(StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::UnsupportedType, &text)
        }
        UploadError::Empty => refusal(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, &text),
        UploadError::Body(detail) => {
            log::info!("media: an upload broke off: {detail}");
            refusal(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, "the request body broke off")
        }
        UploadError::Stalled(_) => refusal(StatusCode::REQUEST_TIMEOUT, ErrorCode::InvalidMessage, &text),
        UploadError::Store(error) => store_failure(error),
    }
}

/// `GET /media/{id}`.
pub(crate) async fn download(
    request: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
    authenticator: web::Data<Authenticator>,
    groups: web::Data<GroupAccess>,
) -> HttpResponse {
    let media: &Arc<MediaStore> = &state.media;
    let query = query_of(&request);
    let signed = match (query.expires, query.signature.as_deref()) {
        (Some(expires), Some(signature)) => media.link_is_valid(&id, expires, signature),
        _ => false,
    };
    let identity = match signed {
        true => None,
        false => match handshake::identify(&request, &state.settings, &authenticator, &ConnectionId::new()).await {
            Ok(identity) => Some(identity),
            Err(error) => return auth_refusal(&error),
        },
    };
    let meta = match media.get(&id).await {
        Ok(Some(meta)) => meta,
        Ok(None) => return not_found(),
        Err(error) => return store_failure(&error),
    };
    if let Some(identity) = identity {
        let member = match query.group_id.as_deref() {
            Some(group) if meta.in_group(group) => match groups.check(&identity, group, GroupAction::History) {
                Verdict::Allowed => true,
                Verdict::Refused => false,
                Verdict::Ask(answer) => answer.await,
            },
            _ => false,
        };
        if meta.owner != identity.sender_id && !member {
            return not_found();
        }
    }
    serve(media, &meta).await
}

/// 404, for an unknown id and for one the caller may not read alike.
fn not_found() -> HttpResponse {
    refusal(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such media")
}

/// The media's bytes, streamed from the disk, with the headers that keep a browser
/// from running anything in them.
async fn serve(media: &MediaStore, meta: &MediaMeta) -> HttpResponse {
    let path = media.file_path(meta);
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(error) => {
            log::warn!("media {}: its file {} cannot be read: {error}", meta.id, path.display());
            return not_found();
        }
    };
    let length = match file.metadata().await {
        Ok(metadata) => metadata.len(),
        Err(_) => return not_found(),
    };
    let body = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buffer = vec![0u8; READ_CHUNK];
        match tokio::io::AsyncReadExt::read(&mut file, &mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(buffer)), Some(file)))
            }
            Err(error) => Some((Err(error), None)),
        }
    });
    let inline = kinds::served_inline(&meta.media_type);
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, content_type(&meta.media_type)))
        .insert_header((header::CONTENT_DISPOSITION, disposition(meta, inline)))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600")));
    // A PDF is shown by the browser's viewer, which a sandboxed document cannot load.
    if meta.media_type != "application/pdf" {
        response.insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
        ));
    }
    response.no_chunking(length).streaming(body)
}

/// The stored type as a header value (it was checked to be a plain `type/subtype`).
fn content_type(media_type: &str) -> HeaderValue {
    HeaderValue::from_str(media_type).unwrap_or(HeaderValue::from_static(kinds::UNKNOWN_TYPE))
}

/// `inline` or `attachment`, with the file name (ASCII, and UTF-8 as `filename*`).
fn disposition(meta: &MediaMeta, inline: bool) -> ContentDisposition {
    let mut name = meta.name.clone().unwrap_or_else(|| meta.id.clone());
    if inline && kinds::by_extension(&name) != Some(meta.media_type.as_str()) {
        // A name that says another type (a PNG called "invoice.html") would be saved
        // as that type: the file's own extension is added.
        if let Some(extension) = kinds::extension_of(&meta.media_type) {
            name = format!("{name}.{extension}");
        }
    }
    let ascii: String = name.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '_' }).collect();
    let mut parameters = vec![DispositionParam::Filename(ascii.clone())];
    if ascii != name {
        parameters.push(DispositionParam::FilenameExt(ExtendedValue {
            charset: Charset::Ext("UTF-8".into()),
            language_tag: None,
            value: name.into_bytes(),
        }));
    }
    let disposition = if inline { DispositionType::Inline } else { DispositionType::Attachment };
    ContentDisposition { disposition, parameters }
}
