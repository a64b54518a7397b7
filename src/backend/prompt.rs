//! What the agent is told about one message: who wrote it and what it says.
//!
//! Who: the message's `name` field (`agent.senderStyle` `name`, OpenAI's way: the
//! text is the user's own, so a model does not learn to answer "Erin: …"), or the
//! original plugin's envelope, the text `"{senderName}: {content}"`. Either is prefixed with
//! `[Replying to: "{replyToBody}"]` when quoting; media become image parts (http(s)
//! images) or text references; chat type, group, `customData` and the auth
//! service's user data go in as a context object. Local media paths are allowed only
//! under `channels.websocket.media.roots` (checked before the turn is queued). Pure
//! functions: no I/O, nothing async.

use std::path::{Component, Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::config::SenderStyle;
use crate::protocol::{ChatType, SendMessage};

/// The user message as a backend sends it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    /// The text (the envelope, with `senderStyle` `envelope`), with media references appended.
    pub text: String,
    /// The sender as the message's `name` (`senderStyle` `name`), as OpenAI accepts it.
    pub name: Option<String>,
    /// http(s) URLs of images, sent as image content parts.
    pub image_urls: Vec<String>,
    /// Chat type, group, custom data, user data: a JSON object, absent when empty.
    pub context: Option<Map<String, Value>>,
}

impl Prompt {
    /// The chat-completions messages of this turn: the context (a system message,
    /// when there is any), then the user message (text, or text and image parts).
    pub fn to_messages(&self) -> Vec<Value> {
        let mut messages = Vec::with_capacity(2);
        if let Some(context) = &self.context {
            let text = format!("Context of the next message (JSON): {}", Value::Object(context.clone()));
            messages.push(json!({"role": "system", "content": text}));
        }
        let content = if self.image_urls.is_empty() {
            Value::String(self.text.clone())
        } else {
            let mut parts = vec![json!({"type": "text", "text": self.text})];
            parts.extend(self.image_urls.iter().map(|url| json!({"type": "image_url", "image_url": {"url": url}})));
            Value::Array(parts)
        };
        let mut message = json!({"role": "user", "content": content});
        if let Some(name) = &self.name {
            message["name"] = json!(name);
        }
        messages.push(message);
        messages
    }
}

/// The facts a prompt is built from.
pub struct PromptInput<'a> {
    pub sender_id: &'a str,
    pub sender_name: &'a str,
    pub message: &'a SendMessage,
    /// The auth service's `data` object for this user, when authenticated.
    pub user_data: Option<&'a Map<String, Value>>,
    /// The user's token, only when `agent.forwardUserToken` is on.
    pub user_token: Option<&'a str>,
    /// `agent.senderStyle`, resolved.
    pub style: SenderStyle,
}

/// Builds the envelope, media parts and context of one message.
pub fn build(input: &PromptInput<'_>) -> Prompt {
    let message = input.message;
    let mut text = String::new();
    if let Some(quoted) = message.reply_to_body.as_deref().filter(|body| !body.is_empty()) {
        text.push_str(&format!("[Replying to: \"{quoted}\"]\n"));
    }
    let name = match input.style {
        SenderStyle::Name => {
            text.push_str(&message.content);
            openai_name(input.sender_name)
        }
        SenderStyle::Envelope | SenderStyle::Auto => {
            text.push_str(&format!("{}: {}", input.sender_name, message.content));
            None
        }
    };
    let mut image_urls = Vec::new();
    for (path, media_type) in media(message) {
        if is_web_url(path) && media_type.is_some_and(|kind| kind.starts_with("image/")) {
            image_urls.push(path.to_string());
        } else {
            let kind = media_type.map(|kind| format!(" ({kind})")).unwrap_or_default();
            text.push_str(&format!("\n[media: {path}{kind}]"));
        }
    }
    Prompt { text, name, image_urls, context: context(input) }
}

/// `name` as OpenAI accepts a message's name (`[A-Za-z0-9_-]`, at most 64), or none.
pub fn openai_name(name: &str) -> Option<String> {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .take(64)
        .collect();
    (!cleaned.trim_matches('_').is_empty()).then_some(cleaned)
}

fn context(input: &PromptInput<'_>) -> Option<Map<String, Value>> {
    let message = input.message;
    let mut context = Map::new();
    if message.chat_type == ChatType::Group {
        context.insert("chatType".into(), json!("group"));
        context.insert("groupId".into(), json!(message.group_id));
        if let Some(subject) = &message.group_subject {
            context.insert("groupSubject".into(), json!(subject));
        }
        context.insert("senderId".into(), json!(input.sender_id));
    }
    if let Some(thread) = &message.thread_id {
        context.insert("threadId".into(), json!(thread));
    }
    if let Some(reply_to) = &message.reply_to_message_id {
        context.insert("replyToMessageId".into(), json!(reply_to));
    }
    if let Some(custom) = &message.custom_data {
        context.insert("customData".into(), Value::Object(custom.clone()));
    }
    if let Some(user) = input.user_data {
        context.insert("user".into(), Value::Object(user.clone()));
    }
    if let Some(token) = input.user_token {
        context.insert("userToken".into(), json!(token));
    }
    (!context.is_empty()).then_some(context)
}

/// Every media path of the message with its MIME type, if given.
fn media(message: &SendMessage) -> impl Iterator<Item = (&str, Option<&str>)> {
    let single = message.media_path.as_deref().map(|path| (path, message.media_type.as_deref()));
    let many = message
        .media_paths
        .iter()
        .enumerate()
        .map(|(index, path)| (path.as_str(), message.media_types.get(index).map(String::as_str)));
    single.into_iter().chain(many)
}

fn is_web_url(path: &str) -> bool {
    path.starts_with("https://") || path.starts_with("http://")
}

/// Refuses a local media path outside the configured roots; URLs always pass.
/// The check is lexical (absolute, no `..`): what the operator puts inside a root,
/// symlinks included, is trusted.
pub fn check_media(message: &SendMessage, roots: &[PathBuf]) -> Result<(), String> {
    for (path, _) in media(message) {
        if is_web_url(path) {
            continue;
        }
        let candidate = Path::new(path);
        let inside = candidate.is_absolute()
            && !candidate.components().any(|part| matches!(part, Component::ParentDir))
            && roots.iter().any(|root| root.is_absolute() && candidate.starts_with(root));
        if !inside {
            return Err(format!("media path {path:?} is not under channels.websocket.media.roots"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(json: Value) -> SendMessage {
        serde_json::from_value(json).unwrap()
    }

    fn prompt(message: &SendMessage) -> Prompt {
        build(&PromptInput {
            sender_id: "u1",
            sender_name: "John",
            message,
            user_data: None,
            user_token: None,
            style: SenderStyle::Envelope,
        })
    }

    #[test]
    fn the_envelope_is_the_original_plugins() {
        let plain = message(json!({"content": "Hello!"}));
        assert_eq!(prompt(&plain), Prompt { text: "John: Hello!".into(), ..Prompt::default() });
        let reply = message(json!({"content": "I agree", "replyToBody": "Let's use Python"}));
        assert_eq!(prompt(&reply).text, "[Replying to: \"Let's use Python\"]\nJohn: I agree");
    }

    #[test]
    fn with_the_name_style_the_text_is_the_users_own_and_the_name_is_cleaned() {
        let plain = message(json!({"content": "Hello!"}));
        let built = build(&PromptInput {
            sender_id: "u1",
            sender_name: "Erin O'Neil",
            message: &plain,
            user_data: None,
            user_token: None,
            style: SenderStyle::Name,
        });
        assert_eq!((built.text.as_str(), built.name.as_deref()), ("Hello!", Some("Erin_O_Neil")));
        assert_eq!(built.to_messages()[0], json!({"role": "user", "content": "Hello!", "name": "Erin_O_Neil"}));
        assert_eq!(openai_name("日本"), None, "nothing left of it: no name");
        assert_eq!(openai_name(&"a".repeat(80)).map(|name| name.len()), Some(64));
    }

    #[test]
    fn media_become_image_parts_or_references() {
        let with_media =
            message(json!({"content": "look", "mediaPath": "https://x.test/a.png", "mediaType": "image/png",
            "mediaPaths": ["https://x.test/b.pdf", "/srv/media/c.txt"], "mediaTypes": ["application/pdf"]}));
        let built = prompt(&with_media);
        assert_eq!(built.image_urls, ["https://x.test/a.png"]);
        assert_eq!(
            built.text,
            "John: look\n[media: https://x.test/b.pdf (application/pdf)]\n[media: /srv/media/c.txt]"
        );
    }

    #[test]
    fn group_custom_data_and_user_data_form_the_context() {
        let group = message(json!({"content": "hi", "chatType": "group", "groupId": "dev", "groupSubject": "Dev",
            "customData": {"priority": "high"}}));
        let user = json!({"userId": "u1", "plan": "pro"}).as_object().cloned().unwrap();
        let built = build(&PromptInput {
            sender_id: "u1",
            sender_name: "John",
            message: &group,
            user_data: Some(&user),
            user_token: None,
            style: SenderStyle::Envelope,
        });
        let context = Value::Object(built.context.unwrap());
        assert_eq!(context["groupSubject"], "Dev");
        assert_eq!(context["customData"]["priority"], "high");
        assert_eq!(context["user"]["plan"], "pro");
        assert!(context.get("userToken").is_none());
    }

    #[test]
    fn local_media_only_under_the_roots() {
        let roots = [PathBuf::from("/srv/media")];
        let allowed = message(json!({"content": "x", "mediaPath": "/srv/media/a.png"}));
        assert!(check_media(&allowed, &roots).is_ok());
        for path in ["/etc/passwd", "/srv/media/../../etc/passwd", "relative.png", "/srv/mediaX/a.png"] {
            let refused = message(json!({"content": "x", "mediaPaths": [path]}));
            assert!(check_media(&refused, &roots).is_err(), "{path}");
        }
        let url = message(json!({"content": "x", "mediaPath": "https://x.test/a.png"}));
        assert!(check_media(&url, &[]).is_ok());
    }
}
