//! Media (SPEC §12): uploads written as curl writes them (a `Content-Length` body, a
//! chunked one), every limit with its status and code, who may read what (the owner,
//! a group's members, nobody else: 404), a `chat.send`'s uploads reaching the agent
//! as `image_url` parts, the agent's attachments (an OpenClaw `MEDIA:` file under the
//! roots, an image in an OpenAI-style answer) stored and served, two nodes on one
//! Redis sharing it all, `delete_for_session` in both modes, and random requests to
//! the upload route answered with expected statuses only.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clawsocket::config::{Environment, SettingValue, Settings};
use clawsocket::identity::{Chat, SessionTarget};
use clawsocket::media::{MediaStore, UploadRequest};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::support::client::last;
use crate::support::cluster::ready_nodes;
use crate::support::fake_agent::{answer_with, Chunk, FakeAgent, Recorded, Reply};
use crate::support::fake_auth::{AuthScript, FakeAuth};
use crate::support::http::{self, Body, HttpAnswer};
use crate::support::redis::RedisServer;
use crate::support::server::{spawn_server_on_store, TestServer};
use crate::support::{eventually, spawn_server, WsClient};

/// The smallest valid PNG (1×1).
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d,
    0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// `POST /media{query}` with a `Content-Length` body of `content_type`.
async fn upload(addr: SocketAddr, query: &str, content_type: &str, bytes: &[u8]) -> HttpAnswer {
    http::send(addr, "POST", &format!("/media{query}"), &[("Content-Type", content_type)], Body::Whole(bytes)).await
}

/// `GET {path}` (a path, perhaps with its query) with `headers`.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    http::send(addr, "GET", path, headers, Body::None).await
}

/// Uploads `bytes` as `content_type` for anonymous `sender` and answers its id.
async fn uploaded(addr: SocketAddr, sender: &str, content_type: &str, bytes: &[u8]) -> String {
    let answer = upload(addr, &format!("?senderId={sender}"), content_type, bytes).await;
    assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    answer.json()["mediaId"].as_str().expect("a mediaId").to_string()
}

fn assert_refused(answer: &HttpAnswer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["code"], code, "{}", String::from_utf8_lossy(&answer.body));
    assert!(answer.json()["error"].as_str().is_some_and(|text| !text.is_empty()));
}

/// The files under `dir`, recursively, as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().to_string_lossy().to_string());
            }
        }
    }
    found
}

#[actix_rt::test]
async fn a_png_uploaded_like_curl_is_served_back_to_its_owner_and_to_nobody_else() {
    let server = spawn_server(&[]);
    let answer = upload(server.addr, "?senderId=alice&name=cat%20photo.png", "image/png", PNG).await;
    assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    let created = answer.json();
    let id = created["mediaId"].as_str().unwrap().to_string();
    assert_eq!(
        created,
        json!({"mediaId": id, "mediaType": "image/png", "bytes": PNG.len(), "url": format!("/media/{id}"), "name": "cat photo.png"})
    );
    assert_eq!(answer.header("location"), Some(format!("/media/{id}").as_str()));

    let served = get(server.addr, &format!("/media/{id}?senderId=alice"), &[]).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.body, PNG);
    assert_eq!(served.header("content-type"), Some("image/png"));
    assert_eq!(served.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(served.header("content-disposition"), Some("inline; filename=\"cat photo.png\""));
    assert!(served.header("content-security-policy").is_some_and(|csp| csp.contains("sandbox")));
    // A name that says another type is saved with the file's own extension.
    let disguised = upload(server.addr, "?senderId=alice&name=invoice.html", "image/png", PNG).await.json();
    let disguised = get(server.addr, &format!("{}?senderId=alice", disguised["url"].as_str().unwrap()), &[]).await;
    assert_eq!(disguised.header("content-disposition"), Some("inline; filename=\"invoice.html.png\""));

    for (path, who) in [
        (format!("/media/{id}?senderId=bob"), "another user"),
        (format!("/media/{id}"), "an anonymous caller with no id"),
        ("/media/0123456789abcdef0123456789abcdef?senderId=alice".to_string(), "an unknown id"),
        ("/media/..%2F..%2Fetc%2Fpasswd?senderId=alice".to_string(), "a path, not an id"),
        (format!("/media/{id}?senderId=bob&groupId=team"), "a group it was never sent to"),
    ] {
        let refused = get(server.addr, &path, &[]).await;
        assert_refused(&refused, 404, "not_found");
        assert_eq!(refused.body, get(server.addr, "/media/nope?senderId=bob", &[]).await.body, "{who}: 404 as any");
    }
}

#[actix_rt::test]
async fn a_chunked_upload_is_streamed_to_disk_and_a_text_file_served_as_text() {
    let store = tempfile::tempdir().unwrap();
    let server = spawn_server_on_store(store.path(), &[]);
    let chunks: Vec<Vec<u8>> = (0..40).map(|n| format!("line {n} of a streamed file\n").into_bytes()).collect();
    let pieces: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    let answer = http::send(
        server.addr,
        "POST",
        "/media?senderId=alice&name=notes.txt",
        &[("Content-Type", "text/plain; charset=utf-8")],
        Body::Chunked(&pieces),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    let created = answer.json();
    assert_eq!(
        (created["mediaType"].as_str(), created["bytes"].as_u64()),
        (Some("text/plain"), Some(chunks.concat().len() as u64))
    );
    let id = created["mediaId"].as_str().unwrap();
    let on_disk = std::fs::read(store.path().join("media").join("alice").join(id)).unwrap();
    assert_eq!(on_disk, chunks.concat(), "store.dir/media/{{identity}}/{{id}}");
    let served = get(server.addr, &format!("/media/{id}?senderId=alice"), &[]).await;
    assert_eq!((served.status, served.body.clone()), (200, chunks.concat()));
    assert_eq!(served.header("content-disposition"), Some("inline; filename=\"notes.txt\""));
}

#[actix_rt::test]
async fn each_limit_has_its_status_and_code_and_a_refused_upload_leaves_nothing() {
    let store = tempfile::tempdir().unwrap();
    let server = spawn_server_on_store(
        store.path(),
        &[("channels.websocket.media.maxBytes", 1000.into()), ("channels.websocket.media.perUserBytes", 2500.into())],
    );
    let addr = server.addr;
    let post = |headers: Vec<(&'static str, &'static str)>, body: Body<'_>| {
        let raw = http::raw_request("POST", "/media?senderId=alice", &headers, &body);
        let chunked = matches!(body, Body::Chunked(_));
        async move { http::send_raw(addr, raw, chunked).await }
    };
    let text = [("Content-Type", "text/plain")];
    // maxBytes, from Content-Length: refused before a byte of the body is read.
    assert_refused(&post(text.to_vec(), Body::DeclaredOnly(5000)).await, 413, "payload_too_large");
    // maxBytes, while a chunked body streams past it.
    static PART: [u8; 400] = [b'x'; 400];
    let chunked = post(text.to_vec(), Body::Chunked(&[&PART, &PART, &PART, &PART])).await;
    assert_refused(&chunked, 413, "payload_too_large");
    // allowedTypes, by the header.
    assert_refused(
        &post(vec![("Content-Type", "application/zip")], Body::Whole(b"PK\x03\x04")).await,
        415,
        "unsupported_type",
    );
    assert_refused(&post(vec![("Content-Type", "text/html")], Body::Whole(b"<script>")).await, 415, "unsupported_type");
    assert_refused(&post(Vec::new(), Body::Whole(b"no type")).await, 415, "unsupported_type");
    // allowedTypes, by the bytes: the header says PNG, the bytes say HTML.
    let fake_png =
        post(vec![("Content-Type", "image/png")], Body::Whole(b"<html><script>alert(1)</script></html>")).await;
    assert_refused(&fake_png, 415, "unsupported_type");
    let fake_pdf = post(vec![("Content-Type", "application/pdf")], Body::Whole(PNG)).await;
    assert_refused(&fake_pdf, 415, "unsupported_type");
    // Nothing to store.
    assert_refused(&post(text.to_vec(), Body::Whole(b"")).await, 400, "invalid_message");
    // perUserBytes: 2 × 1000 fit in 2500, 600 more do not (413, not 429: waiting does not help).
    static FULL: [u8; 1000] = [b'y'; 1000];
    for _ in 0..2 {
        assert_eq!(post(text.to_vec(), Body::Whole(&FULL)).await.status, 201);
    }
    assert_refused(&post(text.to_vec(), Body::Whole(&FULL[..600])).await, 413, "quota_exceeded");
    assert_refused(&post(text.to_vec(), Body::Chunked(&[&FULL[..300], &FULL[..300]])).await, 413, "quota_exceeded");
    assert_eq!(post(text.to_vec(), Body::Whole(&FULL[..500])).await.status, 201, "exactly the rest fits");
    let bob = http::send(addr, "POST", "/media?senderId=bob", &text, Body::Whole(&FULL)).await;
    assert_eq!(bob.status, 201, "the quota is per user");

    // A client that goes away mid-body: its temp file goes too, and its bytes are not counted.
    {
        use tokio::io::AsyncWriteExt;
        let mut gone = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head =
            "POST /media?senderId=carol HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 900\r\n\r\n";
        gone.write_all(head.as_bytes()).await.unwrap();
        gone.write_all(&FULL[..300]).await.unwrap();
        eventually("the upload's temp file exists", || {
            let dir = store.path().join("media");
            async move { files_under(&dir).iter().any(|file| file.contains(".part")) }
        })
        .await;
    }
    eventually("the broken-off upload's temp file is removed", || {
        let dir = store.path().join("media");
        async move { !files_under(&dir).iter().any(|file| file.contains(".part")) }
    })
    .await;
    let files = files_under(&store.path().join("media"));
    assert_eq!(files.iter().filter(|file| file.starts_with("alice/")).count(), 3, "{files:?}");
    assert!(!files.iter().any(|file| file.starts_with("carol")), "{files:?}");
}

fn auth_server(auth: &FakeAuth, required: bool) -> TestServer {
    spawn_server(&[
        ("channels.websocket.auth.enabled", true.into()),
        ("channels.websocket.auth.required", required.into()),
        ("channels.websocket.auth.endpoint", auth.url.clone().into()),
    ])
}

fn two_users() -> FakeAuth {
    FakeAuth::start(
        AuthScript::new()
            .user("tok-alice", json!({"userId": "alice", "username": "Alice"}))
            .user("tok-bob", json!({"userId": "bob", "username": "Bob"})),
    )
}

#[actix_rt::test]
async fn with_auth_required_media_takes_the_websockets_credentials_and_nothing_less() {
    let auth = two_users();
    let server = auth_server(&auth, true);
    let addr = server.addr;
    assert_refused(&upload(addr, "?senderId=alice", "image/png", PNG).await, 401, "token_required");
    assert_refused(&upload(addr, "?token=forged", "image/png", PNG).await, 401, "auth_failed");
    let answer = upload(addr, "?token=tok-alice", "image/png", PNG).await;
    assert_eq!(answer.status, 201);
    let id = answer.json()["mediaId"].as_str().unwrap().to_string();
    let path = format!("/media/{id}");

    assert_eq!(get(addr, &path, &[("Authorization", "Bearer tok-alice")]).await.body, PNG, "a Bearer header");
    assert_eq!(get(addr, &format!("{path}?token=tok-alice"), &[]).await.status, 200, "?token=");
    assert_refused(&get(addr, &path, &[("Authorization", "Bearer tok-bob")]).await, 404, "not_found");
    assert_refused(&get(addr, &path, &[]).await, 401, "token_required");
    assert_refused(&get(addr, &format!("{path}?senderId=alice"), &[]).await, 401, "token_required");
}

#[actix_rt::test]
async fn a_guest_naming_itself_like_a_user_cannot_read_that_users_media() {
    let auth = two_users();
    let server = auth_server(&auth, false);
    let answer = upload(server.addr, "?token=tok-alice", "image/png", PNG).await;
    let id = answer.json()["mediaId"].as_str().unwrap().to_string();
    assert_refused(&get(server.addr, &format!("/media/{id}?senderId=alice"), &[]).await, 404, "not_found");
    let guest = upload(server.addr, "?senderId=alice", "image/png", PNG).await;
    assert_eq!(guest.status, 201, "a guest may upload where auth is not required");
    let guest_id = guest.json()["mediaId"].as_str().unwrap().to_string();
    assert_eq!(get(server.addr, &format!("/media/{guest_id}?senderId=alice"), &[]).await.status, 200);
    let user_reads_guest = get(server.addr, &format!("/media/{guest_id}?token=tok-alice"), &[]).await;
    assert_refused(&user_reads_guest, 404, "not_found");
}

fn openai_server(agent: &FakeAgent, extra: &[(&str, SettingValue)]) -> TestServer {
    let mut settings: Vec<(&str, SettingValue)> =
        vec![("agent.kind", "openai".into()), ("agent.url", agent.url_v1().into())];
    settings.extend(extra.iter().cloned());
    spawn_server(&settings)
}

fn agent_saying(text: &'static str) -> FakeAgent {
    FakeAgent::start(Arc::new(move |_, _| answer_with(&[text])))
}

/// The last message of a recorded chat request: the turn's user message.
fn user_message(call: &Recorded) -> &Value {
    call.body["messages"].as_array().and_then(|messages| messages.last()).expect("messages")
}

fn send_with_media(message_id: &str, content: &str, media_ids: &[&str]) -> Value {
    json!({"type": "chat.send", "messageId": message_id, "content": content, "mediaIds": media_ids})
}

#[actix_rt::test]
async fn a_chat_send_gives_the_agent_its_images_as_image_url_parts_and_history_keeps_the_ids() {
    let agent = agent_saying("a tiny red dot");
    let server = openai_server(&agent, &[]);
    let image = uploaded(server.addr, "alice", "image/png", PNG).await;
    let notes = upload(server.addr, "?senderId=alice&name=notes.txt", "text/plain", b"buy milk").await.json();
    let notes_id = notes["mediaId"].as_str().unwrap();

    let mut client = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    client.send_json(send_with_media("m1", "what is this?", &[&image, notes_id])).await;
    let frames = client.turn("m1").await;
    assert_eq!(last(&frames)["content"], "a tiny red dot", "{frames:?}");

    let calls = agent.requests();
    let content = &user_message(&calls[0])["content"];
    let parts = content.as_array().unwrap_or_else(|| panic!("content parts: {content}"));
    assert_eq!(parts[0]["type"], "text");
    let text = parts[0]["text"].as_str().unwrap();
    assert!(text.starts_with("what is this?"), "{text}");
    assert!(text.contains("[media: notes.txt (text/plain, 8 bytes)]"), "a file is a text reference: {text}");
    assert_eq!(parts[1]["type"], "image_url");
    let expected = format!("data:image/png;base64,{}", base64_of(PNG));
    assert_eq!(parts[1]["image_url"]["url"], expected.as_str());

    client.send_json(json!({"type": "chat.history"})).await;
    let history = loop {
        let frame = client.recv().await;
        if frame["type"] == "chat.history" {
            break frame;
        }
    };
    assert_eq!(history["messages"][0]["role"], "user");
    assert_eq!(history["messages"][0]["mediaIds"], json!([image, notes_id]));

    // Only media may be sent, with no words.
    client.send_json(send_with_media("m2", "", &[&image])).await;
    assert_eq!(last(&client.turn("m2").await)["type"], "chat.response");
    let second = &agent.requests()[1];
    let earlier = &second.body["messages"][1]["content"];
    assert!(
        earlier.as_str().is_some_and(|text| text.contains(&format!("[media: {image} (sent earlier)]"))),
        "{earlier}"
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[actix_rt::test]
async fn someone_elses_or_an_unknown_media_id_is_refused_before_any_agent_call() {
    let agent = agent_saying("never");
    let server = openai_server(&agent, &[]);
    let alices = uploaded(server.addr, "alice", "image/png", PNG).await;
    let mut bob = WsClient::connect_welcomed(&server.ws_url("senderId=bob")).await.0;
    for (message_id, id) in [("b1", alices.as_str()), ("b2", "0123456789abcdef0123456789abcdef")] {
        bob.send_json(send_with_media(message_id, "look", &[id])).await;
        let refused = bob.recv().await;
        assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("chat.error"), Some("media_forbidden")));
        assert_eq!(refused["messageId"], message_id);
        assert!(refused["error"].as_str().unwrap().contains(id), "{refused}");
    }
    bob.send_json(send_with_media("b3", "look", &["../../etc/passwd"])).await;
    assert_eq!(bob.recv().await["code"], "invalid_message", "not an id at all");
    let too_many: Vec<String> = (0..17).map(|n| format!("{n:032x}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    bob.send_json(send_with_media("b4", "look", &too_many)).await;
    assert_eq!(bob.recv().await["code"], "invalid_message", "at most 16 ids");
    bob.round_trip().await;
    assert!(agent.requests().is_empty(), "the agent was never asked");
}

#[actix_rt::test]
async fn a_groups_members_read_what_was_sent_to_the_group_with_its_id() {
    let agent = agent_saying("nice");
    let server = openai_server(&agent, &[]);
    let image = uploaded(server.addr, "alice", "image/png", PNG).await;
    let mut alice = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    let mut bob = WsClient::connect_welcomed(&server.ws_url("senderId=bob")).await.0;
    bob.join(json!({"groupId": "team"})).await;
    let before = get(server.addr, &format!("/media/{image}?senderId=bob&groupId=team"), &[]).await;
    assert_refused(&before, 404, "not_found");

    alice
        .send_json(json!({"type": "chat.send", "messageId": "g1", "content": "our logo", "chatType": "group",
            "groupId": "team", "mediaIds": [image]}))
        .await;
    assert_eq!(last(&alice.turn("g1").await)["type"], "chat.response");
    let relayed = bob.turn("g1").await;
    let message = relayed.iter().find(|frame| frame["type"] == "chat.message").expect("the group message");
    assert_eq!(message["mediaIds"], json!([image]));

    let member = get(server.addr, &format!("/media/{image}?senderId=bob&groupId=team"), &[]).await;
    assert_eq!((member.status, member.body.as_slice()), (200, PNG));
    assert_refused(&get(server.addr, &format!("/media/{image}?senderId=bob"), &[]).await, 404, "not_found");
    let other_group = get(server.addr, &format!("/media/{image}?senderId=bob&groupId=other"), &[]).await;
    assert_refused(&other_group, 404, "not_found");
}

/// An OpenClaw gateway whose answer attaches `line` (a `MEDIA:` line) between two texts.
fn gateway_attaching(line: String) -> FakeAgent {
    FakeAgent::start(Arc::new(move |_, _| {
        let deltas = ["Here is the chart:\n".to_string(), line.clone(), "\nAnything else?".to_string()];
        let deltas: Vec<&str> = deltas.iter().map(String::as_str).collect();
        answer_with(&deltas)
    }))
}

fn openclaw_server(agent: &FakeAgent, roots: &Path, extra: &[(&str, SettingValue)]) -> TestServer {
    let mut settings: Vec<(&str, SettingValue)> = vec![
        ("agent.kind", "openclaw".into()),
        ("agent.url", agent.url().into()),
        ("agent.token", "gw".into()),
        ("channels.websocket.media.roots", vec![roots.to_string_lossy().to_string()].into()),
    ];
    settings.extend(extra.iter().cloned());
    spawn_server(&settings)
}

#[actix_rt::test]
async fn an_openclaw_media_file_under_the_roots_becomes_a_chat_media_frame_whose_url_serves_it() {
    let roots = tempfile::tempdir().unwrap();
    std::fs::write(roots.path().join("chart.png"), PNG).unwrap();
    let agent = gateway_attaching(format!("MEDIA: {}/chart.png", roots.path().display()));
    let server = openclaw_server(&agent, roots.path(), &[]);
    let mut client = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    let frames = client.chat("m1", "a chart please").await;

    let media: Vec<&Value> = frames.iter().filter(|frame| frame["type"] == "chat.media").collect();
    assert_eq!(media.len(), 1, "{frames:?}");
    let id = media[0]["mediaId"].as_str().expect("stored: it has a mediaId");
    assert_eq!(media[0]["url"], format!("/media/{id}"));
    assert_eq!((media[0]["mediaType"].as_str(), media[0]["name"].as_str()), (Some("image/png"), Some("chart.png")));
    let answer = last(&frames);
    assert_eq!(answer["content"], "Here is the chart:\nAnything else?", "the line is no text");
    assert_eq!(answer["attachments"][0]["mediaId"], id);

    let served = get(server.addr, &format!("{}?senderId=alice", media[0]["url"].as_str().unwrap()), &[]).await;
    assert_eq!((served.status, served.body.as_slice()), (200, PNG));
    assert_refused(&get(server.addr, &format!("/media/{id}?senderId=bob"), &[]).await, 404, "not_found");

    client.send_json(json!({"type": "chat.history"})).await;
    let history = loop {
        let frame = client.recv().await;
        if frame["type"] == "chat.history" {
            break frame;
        }
    };
    assert_eq!(history["messages"][1]["attachments"][0]["mediaId"], id, "history keeps the attachment");
}

#[actix_rt::test]
async fn an_openclaw_media_file_outside_the_roots_is_dropped_not_served() {
    let roots = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("secret.txt"), roots.path().join("innocent.txt")).unwrap();
    for target in [elsewhere.path().join("secret.txt"), roots.path().join("innocent.txt")] {
        let agent = gateway_attaching(format!("MEDIA: {}", target.display()));
        let server = openclaw_server(&agent, roots.path(), &[]);
        let mut client = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
        let frames = client.chat("m1", "the secret please").await;
        assert!(frames.iter().all(|frame| frame["type"] != "chat.media"), "{target:?}: {frames:?}");
        assert_eq!(last(&frames)["content"], "Here is the chart:\nAnything else?");
    }
}

#[actix_rt::test]
async fn an_image_in_an_openai_style_answer_is_stored_and_sent_as_chat_media() {
    let image = format!("data:image/png;base64,{}", base64_of(PNG));
    let events = [
        json!({"choices": [{"index": 0, "delta": {"content": "Drawn:"}, "finish_reason": null}]}),
        json!({"choices": [{"index": 0, "delta": {"images": [{"type": "image_url", "image_url": {"url": image}}]}, "finish_reason": null}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    ];
    let mut body: String = events.iter().map(|event| format!("data: {event}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    let reply = Reply::Stream(vec![Chunk::Bytes(Duration::ZERO, body.into_bytes())]);
    let agent = FakeAgent::start(Arc::new(move |_, _| reply.clone()));
    let server = openai_server(&agent, &[]);
    let mut client = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    let frames = client.chat("m1", "draw a dot").await;
    let media = frames.iter().find(|frame| frame["type"] == "chat.media").expect("a chat.media frame");
    assert_eq!(media["mediaType"], "image/png");
    let served = get(server.addr, &format!("{}?senderId=alice", media["url"].as_str().unwrap()), &[]).await;
    assert_eq!((served.status, served.body.as_slice()), (200, PNG));
}

#[actix_rt::test]
async fn with_a_public_base_url_the_agent_gets_a_signed_link_that_works_without_credentials() {
    let auth = two_users();
    let agent = agent_saying("seen");
    let server = openai_server(
        &agent,
        &[
            ("channels.websocket.auth.enabled", true.into()),
            ("channels.websocket.auth.endpoint", auth.url.clone().into()),
            ("channels.websocket.media.publicBaseUrl", "https://chat.example.test/".into()),
        ],
    );
    let created = upload(server.addr, "?token=tok-alice", "image/png", PNG).await.json();
    let id = created["mediaId"].as_str().unwrap();
    assert_eq!(created["url"], format!("https://chat.example.test/media/{id}"));
    let mut client = WsClient::connect_welcomed(&server.ws_url("token=tok-alice")).await.0;
    client.send_json(send_with_media("m1", "look", &[id])).await;
    assert_eq!(last(&client.turn("m1").await)["type"], "chat.response");

    let link = user_message(&agent.requests()[0])["content"][1]["image_url"]["url"].as_str().unwrap().to_string();
    let path = link.strip_prefix("https://chat.example.test").expect("under the public base");
    assert!(path.starts_with(&format!("/media/{id}?expires=")), "{link}");
    let fetched = get(server.addr, path, &[]).await;
    assert_eq!((fetched.status, fetched.body.as_slice()), (200, PNG), "no credentials needed");
    let tampered = path.replace("signature=", "signature=0");
    assert_refused(&get(server.addr, &tampered, &[]).await, 401, "token_required");
}

#[actix_rt::test]
async fn deleting_a_thread_deletes_its_media_and_regenerating_shows_the_agent_its_images_again() {
    let agent = agent_saying("seen");
    let server = openai_server(&agent, &[]);
    let (in_t1, in_t2) = (
        uploaded(server.addr, "alice", "image/png", PNG).await,
        uploaded(server.addr, "alice", "text/plain", b"kept").await,
    );
    let mut alice = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    for (message_id, thread, id) in [("m1", "t1", &in_t1), ("m2", "t2", &in_t2)] {
        alice
            .send_json(json!({"type": "chat.send", "messageId": message_id, "content": "look", "threadId": thread,
                "mediaIds": [id]}))
            .await;
        assert_eq!(last(&alice.turn(message_id).await)["type"], "chat.response");
    }

    alice.send_json(json!({"type": "chat.regenerate", "threadId": "t1", "newMessageId": "r1"})).await;
    assert_eq!(last(&alice.turn("r1").await)["type"], "chat.response");
    let calls = agent.requests();
    let again = user_message(calls.last().unwrap());
    assert_eq!(again["content"][1]["type"], "image_url", "the regenerated turn has its image: {again}");

    alice.send_json(json!({"type": "chat.delete", "threadId": "t1"})).await;
    loop {
        if alice.recv().await["type"] == "chat.deleted" {
            break;
        }
    }
    let addr = server.addr;
    let path = format!("/media/{in_t1}?senderId=alice");
    eventually("the deleted thread's upload is gone", || {
        let path = path.clone();
        async move { get(addr, &path, &[]).await.status == 404 }
    })
    .await;
    assert_eq!(get(addr, &format!("/media/{in_t2}?senderId=alice"), &[]).await.status, 200, "t2's stays");
}

// ---- two nodes on one Redis ----

#[actix_rt::test]
async fn two_nodes_share_media_upload_on_one_read_and_send_on_the_other() {
    let redis = RedisServer::start();
    let shared = tempfile::tempdir().unwrap();
    let agent = agent_saying("a dot");
    let extra: Vec<(&str, SettingValue)> = vec![
        ("agent.kind", "openai".into()),
        ("agent.url", agent.url_v1().into()),
        ("channels.websocket.media.dir", shared.path().to_string_lossy().to_string().into()),
        ("channels.websocket.media.perUserBytes", 1000.into()),
    ];
    let nodes = ready_nodes(&redis, &["a", "b"], &extra).await;
    let (on_a, on_b) = (nodes[0].addr, nodes[1].addr);

    let image = uploaded(on_a, "alice", "image/png", PNG).await;
    assert!(redis.command(&["HGET", &format!("cs:media:{{{image}}}"), "owner"]).contains("alice"), "metadata in Redis");
    let served = get(on_b, &format!("/media/{image}?senderId=alice"), &[]).await;
    assert_eq!((served.status, served.body.as_slice()), (200, PNG), "node b serves node a's upload");
    assert_refused(&get(on_b, &format!("/media/{image}?senderId=bob"), &[]).await, 404, "not_found");

    // The quota is the cluster's: 70 bytes held on a, 950 more refused on b.
    let refused = upload(on_b, "?senderId=alice", "text/plain", &[b'x'; 950]).await;
    assert_refused(&refused, 413, "quota_exceeded");

    let mut client = WsClient::connect_welcomed(&format!("ws://{on_b}/ws?senderId=alice")).await.0;
    client.send_json(send_with_media("m1", "what is it?", &[&image])).await;
    assert_eq!(last(&client.turn("m1").await)["content"], "a dot");
    let calls = agent.requests();
    let content = &user_message(&calls[0])["content"];
    assert_eq!(content[1]["image_url"]["url"], format!("data:image/png;base64,{}", base64_of(PNG)).as_str());
    let mut bob = WsClient::connect_welcomed(&format!("ws://{on_b}/ws?senderId=bob")).await.0;
    bob.send_json(send_with_media("b1", "mine now", &[&image])).await;
    assert_eq!(bob.recv().await["code"], "media_forbidden", "ownership is checked cluster-wide");
}

/// A media store as a node builds it, on `store` (and Redis, when `redis_url` is given).
fn media_store(store: &Path, redis_url: Option<&str>) -> Arc<MediaStore> {
    let mut overrides: Vec<(&str, SettingValue)> = vec![
        ("store.dir", store.to_string_lossy().to_string().into()),
        ("agent.kind", "echo".into()),
        ("channels.websocket.media.perUserBytes", 200.into()),
    ];
    if let Some(url) = redis_url {
        overrides.push(("cluster.redis.url", url.into()));
    }
    let settings = Settings::load_with(None, &Environment::new(), &overrides).unwrap();
    let cluster =
        redis_url.map(|_| clawsocket::cluster::Cluster::new(&settings.cluster, "test-node".into()).expect("a cluster"));
    MediaStore::new(&settings, cluster.as_ref()).expect("a media store")
}

async fn store_upload(store: &Arc<MediaStore>, bytes: &'static [u8]) -> String {
    let request =
        UploadRequest { owner: "alice".into(), media_type: "text/plain".into(), name: None, content_length: None };
    let body = futures_util::stream::iter([Ok::<_, String>(bytes::Bytes::from_static(bytes))]);
    store.upload(request, body).await.expect("stored").id
}

/// `delete_for_session` (what `chat.delete` of a thread calls) in one mode.
async fn delete_for_session_in(store: Arc<MediaStore>, dir: &Path) {
    let thread =
        |id: &str| SessionTarget { chat: Chat::Direct("alice".into()), thread_id: Some(id.into()) }.key("main");
    let (only_a, in_both) = (store_upload(&store, &[b'a'; 80]).await, store_upload(&store, &[b'b'; 80]).await);
    store.attach(&[only_a.clone(), in_both.clone()], &thread("a"), None).await.unwrap();
    store.attach(std::slice::from_ref(&in_both), &thread("b"), Some("team")).await.unwrap();
    let alice_dir = dir.join("media").join("alice");
    assert!(alice_dir.join(&only_a).exists());

    assert_eq!(store.delete_for_session(&thread("a")).await.unwrap(), 1);
    assert!(store.get(&only_a).await.unwrap().is_none() && !alice_dir.join(&only_a).exists(), "gone with thread a");
    assert!(store.get(&in_both).await.unwrap().is_some_and(|meta| meta.in_group("team")), "thread b still has it");
    assert!(alice_dir.join(&in_both).exists());
    assert_eq!(store.delete_for_session(&thread("b")).await.unwrap(), 1);
    assert!(!alice_dir.join(&in_both).exists());
    // Both deletions gave their bytes back to the quota of 200.
    store_upload(&store, &[b'c'; 190]).await;
}

#[actix_rt::test]
async fn delete_for_session_removes_a_threads_media_alone_and_in_a_cluster() {
    let alone = tempfile::tempdir().unwrap();
    delete_for_session_in(media_store(alone.path(), None), alone.path()).await;
    let redis = RedisServer::start();
    let clustered = tempfile::tempdir().unwrap();
    delete_for_session_in(media_store(clustered.path(), Some(&redis.url())), clustered.path()).await;
    assert_eq!(redis.command(&["EXISTS", "cs:media-session:{agent:main:websocket:direct:alice:thread:a}"]), "0");
}

// ---- random requests to the upload route ----

/// A server on its own thread and actix system, for the property test's blocking
/// cases (proptest runs them outside any runtime).
fn server_on_a_thread() -> SocketAddr {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = spawn_server(&[
                ("channels.websocket.media.maxBytes", 2048.into()),
                ("channels.websocket.media.perUserBytes", 0.into()),
            ]);
            sender.send(server.addr).expect("the test waits");
            std::future::pending::<()>().await;
            drop(server);
        })
    });
    receiver.recv().expect("the server started")
}

static SERVER: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("image/png".to_string())),
        Just(Some("application/pdf".to_string())),
        Just(Some("text/plain; charset=utf-8".to_string())),
        Just(Some("image/svg+xml".to_string())),
        "[ -~]{0,40}".prop_map(Some),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..3000),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|tail| [PNG, &tail].concat()),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|tail| [&b"%PDF-1.7\n"[..], &tail].concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random bodies, types, names and framings: the route answers 201, 400, 413 or 415,
    /// never a 5xx, and a 201 is served back byte for byte.
    #[test]
    fn random_uploads_get_expected_statuses_only(
        kind in content_type(),
        bytes in body(),
        chunked in any::<bool>(),
        pieces in 1usize..6,
        name in "[^\r\n]{0,30}",
        extra_header in "[A-Za-z-]{1,12}: [ -~]{0,30}",
    ) {
        let addr = *SERVER.get_or_init(server_on_a_thread);
        let name = serde_urlencoded::to_string([("name", name.as_str())]).unwrap();
        let path = format!("/media?senderId=prop&{name}");
        let (header_name, header_value) = extra_header.split_once(": ").unwrap();
        let mut headers = vec![(header_name, header_value)];
        if let Some(kind) = &kind {
            headers.push(("Content-Type", kind.as_str()));
        }
        // A second framing header would make the request itself invalid HTTP.
        headers.retain(|(name, _)| !["content-length", "transfer-encoding", "host", "connection", "expect", "upgrade"]
            .contains(&name.to_ascii_lowercase().as_str()));
        let size = bytes.len().div_ceil(pieces).max(1);
        let parts: Vec<&[u8]> = bytes.chunks(size).collect();
        let framing = if chunked { Body::Chunked(&parts) } else { Body::Whole(&bytes) };
        let answer = http::send_blocking(addr, &http::raw_request("POST", &path, &headers, &framing));
        prop_assert!([201, 400, 413, 415].contains(&answer.status), "{} {}", answer.status, String::from_utf8_lossy(&answer.body));
        if answer.status == 201 {
            let id = answer.json()["mediaId"].as_str().unwrap().to_string();
            let request = http::raw_request("GET", &format!("/media/{id}?senderId=prop"), &[], &Body::None);
            let served = http::send_blocking(addr, &request);
            prop_assert_eq!(served.status, 200);
            prop_assert_eq!(&served.body, &bytes);
        }
        let health = http::send_blocking(addr, &http::raw_request("GET", "/healthz", &[], &Body::None));
        prop_assert_eq!(health.status, 200);
    }
}

/// Opens an upload of `sender` that declares 100 bytes and sends one: a stalled body.
async fn stalled_upload(addr: SocketAddr, sender: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /media?senderId={sender} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nx"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

async fn answer_of(mut stream: tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let _ = actix_rt::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).to_string()
}

#[actix_rt::test]
async fn stalled_uploads_end_and_a_user_runs_only_a_few_at_once() {
    let store = tempfile::tempdir().unwrap();
    let server = spawn_server_on_store(
        store.path(),
        &[("limits.heartbeat.intervalMs", 200.into()), ("limits.heartbeat.timeoutMs", 1500.into())],
    );
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(stalled_upload(server.addr, "mallory").await);
    }
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let fifth = upload(server.addr, "?senderId=mallory", "text/plain", b"hello").await;
    assert_refused(&fifth, 429, "rate_limited");
    let other = upload(server.addr, "?senderId=alice", "text/plain", b"hello").await;
    assert_eq!(other.status, 201, "another user is not held back");
    for stream in held {
        let answer = answer_of(stream).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "a stalled body ends: {answer}");
    }
    let after = upload(server.addr, "?senderId=mallory", "text/plain", b"hello").await;
    assert_eq!(after.status, 201, "the places came back");
    let leftovers: Vec<String> = files_under(store.path()).into_iter().filter(|file| file.contains(".part")).collect();
    assert!(leftovers.is_empty(), "no temp file left: {leftovers:?}");
}

#[actix_rt::test]
async fn an_images_bytes_are_not_estimated_as_prompt_text() {
    let agent = agent_saying("a dot");
    let server = openai_server(&agent, &[]);
    let mut large = PNG.to_vec();
    large.resize(150_000, 0); // a PNG's first bytes, then 150 kB (200 kB of base64)
    let image = uploaded(server.addr, "alice", "image/png", &large).await;
    let mut client = WsClient::connect_welcomed(&server.ws_url("senderId=alice")).await.0;
    client.send_json(send_with_media("m1", "what is this?", &[&image])).await;
    let answer = last(&client.turn("m1").await).clone();
    assert_eq!(answer["usage"]["estimated"], true, "{answer}");
    let prompt = answer["usage"]["promptTokens"].as_u64().unwrap();
    assert!(prompt < 1_000, "an image counts as about 250 tokens, not its base64: {prompt}");
}

#[actix_rt::test]
async fn an_upload_nobody_could_name_is_refused() {
    let server = spawn_server(&[]);
    let nameless = upload(server.addr, "", "text/plain", b"hello").await;
    assert_refused(&nameless, 400, "invalid_message");
    assert_eq!(upload(server.addr, "?senderId=alice", "text/plain", b"hello").await.status, 201);
}

#[actix_rt::test]
async fn a_group_media_is_read_only_by_those_the_group_policy_lets_in() {
    let auth = FakeAuth::start(
        AuthScript::new()
            .user("tok-alice", json!({"userId": "alice", "username": "Alice", "groups": ["team"]}))
            .user("tok-carol", json!({"userId": "carol", "username": "Carol", "groups": ["team"]}))
            .user("tok-mallory", json!({"userId": "mallory", "username": "Mallory", "groups": ["other"]})),
    );
    let agent = agent_saying("nice");
    let server = openai_server(
        &agent,
        &[
            ("channels.websocket.auth.enabled", true.into()),
            ("channels.websocket.auth.endpoint", auth.url.as_str().into()),
            ("channels.websocket.groups.policy", "listed".into()),
        ],
    );
    let upload =
        http::send(server.addr, "POST", "/media?token=tok-alice", &[("Content-Type", "image/png")], Body::Whole(PNG))
            .await;
    let image = upload.json()["mediaId"].as_str().expect("uploaded").to_string();
    let mut alice = WsClient::connect_welcomed(&server.ws_url("token=tok-alice")).await.0;
    alice
        .send_json(json!({"type": "chat.send", "messageId": "g1", "content": "our logo", "chatType": "group",
            "groupId": "team", "mediaIds": [image]}))
        .await;
    assert_eq!(last(&alice.turn("g1").await)["type"], "chat.response");

    let member = get(server.addr, &format!("/media/{image}?token=tok-carol&groupId=team"), &[]).await;
    assert_eq!(member.status, 200, "a listed member reads it");
    let outsider = get(server.addr, &format!("/media/{image}?token=tok-mallory&groupId=team"), &[]).await;
    assert_refused(&outsider, 404, "not_found");
}
