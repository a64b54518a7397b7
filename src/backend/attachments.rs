//! Media between a turn and the agent (SPEC §12), for the backends that call a
//! chat-completions endpoint.
//!
//! In: a `chat.send`'s uploads (`mediaIds`) join the user message before the call.
//! An image becomes an OpenAI `image_url` part: a signed link under
//! `channels.websocket.media.publicBaseUrl` when one is set (the agent fetches it), else
//! a `data:` URL holding its bytes (at most `maxBytes` of images inlined per turn; the
//! rest are referenced). Any other file becomes a text reference
//! `[media: name (type, N bytes)]` (with its link when there is one).
//!
//! Out: an attachment the answer asks to store (`AnswerPiece::StoreMedia`: an OpenClaw
//! `MEDIA:` file under the media roots, an image the answer carried) is copied into
//! the media store, owned by the turn's sender in its session, and goes on as an
//! `AnswerPiece::Media` with its `mediaId` and URL; one that cannot be stored is
//! dropped with a log line. At most [`MAX_ATTACHMENTS`] per turn are stored.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use base64::Engine;
use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::{AnswerPiece, DeltaStream, MediaSource, TurnRequest};
use crate::media::{kinds, MediaMeta, MediaOrigin, MediaStore};

/// Most attachments one answer stores (each up to `maxBytes`).
pub const MAX_ATTACHMENTS: usize = 16;

/// Runs `call` with the request's uploads joined to its prompt (read first, off the
/// actor threads), and stores what the answer attaches.
pub fn with_media(
    request: TurnRequest,
    media: &Arc<MediaStore>,
    call: impl FnOnce(TurnRequest) -> DeltaStream + 'static,
) -> DeltaStream {
    let origin = MediaOrigin {
        owner: request.owner.clone(),
        session: request.session_key.clone(),
        group: request.group_id.clone(),
    };
    let answer = if request.media_ids.is_empty() {
        call(request)
    } else {
        let media = media.clone();
        stream::once(async move { call(join_uploads(request, &media).await) }).flatten().boxed_local()
    };
    stored(answer, media.clone(), origin)
}

/// The request with its uploads joined to its prompt (images as parts, others as
/// references). An upload that cannot be read is referenced as unavailable.
pub async fn join_uploads(mut request: TurnRequest, media: &Arc<MediaStore>) -> TurnRequest {
    let mut inline_budget = media.settings().max_bytes;
    for id in std::mem::take(&mut request.media_ids) {
        let meta = match media.get(&id).await {
            Ok(Some(meta)) => meta,
            Ok(None) => {
                request.prompt.text.push_str(&format!("\n[media: {id} (no longer available)]"));
                continue;
            }
            Err(error) => {
                log::error!("media {id} could not be read for the agent: {error}");
                request.prompt.text.push_str(&format!("\n[media: {id} (unavailable)]"));
                continue;
            }
        };
        let link = media.agent_link(&meta.id);
        if kinds::is_image(&meta.media_type) {
            if let Some(link) = link {
                request.prompt.image_urls.push(link);
                continue;
            }
            if meta.bytes <= inline_budget {
                match media.read_all(&meta).await {
                    Ok(bytes) => {
                        inline_budget -= bytes.len() as u64;
                        request.prompt.image_urls.push(data_url(&meta.media_type, &bytes));
                        continue;
                    }
                    Err(error) => log::error!("media {}: not read for the agent: {error}", meta.id),
                }
            } else {
                log::info!("media {}: past maxBytes of images inlined this turn; sent as a reference", meta.id);
            }
        }
        request.prompt.text.push_str(&reference(&meta, link.as_deref()));
    }
    request
}

/// `data:{type};base64,{bytes}`.
pub fn data_url(media_type: &str, bytes: &[u8]) -> String {
    format!("data:{media_type};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A file the model is told about in words: `[media: name (type, N bytes)]`.
fn reference(meta: &MediaMeta, link: Option<&str>) -> String {
    let name = meta.name.as_deref().unwrap_or(&meta.id);
    match link {
        Some(link) => format!("\n[media: {name} ({}, {} bytes): {link}]", meta.media_type, meta.bytes),
        None => format!("\n[media: {name} ({}, {} bytes)]", meta.media_type, meta.bytes),
    }
}

/// The bytes of a `data:` URL with its media type (`None` unless base64 and valid).
pub fn decode_data_url(url: &str) -> Option<(Option<String>, bytes::Bytes)> {
    let rest = url.strip_prefix("data:")?;
    let (head, payload) = rest.split_once(',')?;
    let kind = head.strip_suffix(";base64")?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(payload.trim()).ok()?;
    let kind = kinds::essence(kind);
    Some((kind, bytes::Bytes::from(bytes)))
}

/// What `stored` shares across the batches of one answer.
struct Storing {
    media: Arc<MediaStore>,
    origin: MediaOrigin,
    stored: Cell<usize>,
}

/// `answer` with each `StoreMedia` piece copied into the store and turned into a
/// `Media` piece (batches without one go on as they are).
pub fn stored(answer: DeltaStream, media: Arc<MediaStore>, origin: MediaOrigin) -> DeltaStream {
    let storing = Rc::new(Storing { media, origin, stored: Cell::new(0) });
    answer
        .and_then(move |pieces| {
            let storing = storing.clone();
            async move {
                if !pieces.iter().any(|piece| matches!(piece, AnswerPiece::StoreMedia { .. })) {
                    return Ok(pieces);
                }
                let mut out = Vec::with_capacity(pieces.len());
                for piece in pieces {
                    match piece {
                        AnswerPiece::StoreMedia { source, media_type, name } => {
                            out.extend(storing.store(source, media_type, name).await);
                        }
                        other => out.push(other),
                    }
                }
                Ok(out)
            }
        })
        .boxed_local()
}

impl Storing {
    async fn store(
        &self,
        source: MediaSource,
        media_type: Option<String>,
        name: Option<String>,
    ) -> Option<AnswerPiece> {
        if self.stored.get() >= MAX_ATTACHMENTS {
            log::warn!("an agent's attachment was dropped: this answer already stored {MAX_ATTACHMENTS}");
            return None;
        }
        self.stored.set(self.stored.get() + 1);
        let (media, origin) = (&self.media, self.origin.clone());
        let imported = match source {
            MediaSource::File(path) => {
                let shown = path.display().to_string();
                media.import_file(path, name.clone(), origin).await.map_err(|error| format!("{shown:?}: {error}"))
            }
            MediaSource::Bytes(bytes) => media.import_bytes(bytes, media_type, origin).await.map_err(|e| e.to_string()),
        };
        match imported {
            Ok(meta) => Some(AnswerPiece::Media {
                url: media.url(&meta.id, self.origin.group.as_deref()),
                media_type: Some(meta.media_type),
                name: meta.name.or(name),
                media_id: Some(meta.id),
            }),
            Err(error) => {
                log::warn!("an agent's attachment was dropped: {error}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_round_trip() {
        let url = data_url("image/png", b"\x89PNG");
        assert_eq!(url, "data:image/png;base64,iVBORw==");
        let (kind, bytes) = decode_data_url(&url).unwrap();
        assert_eq!((kind.as_deref(), &bytes[..]), (Some("image/png"), &b"\x89PNG"[..]));
        assert!(decode_data_url("data:image/png,plain").is_none());
        assert!(decode_data_url("https://x.test/a.png").is_none());
        assert!(decode_data_url("data:image/png;base64,%%%").is_none());
    }
}
