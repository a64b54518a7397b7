use super::kinds::tests::PNG;
use super::*;
use crate::config::{Environment, SettingValue};
use crate::identity::{Chat, SessionTarget};

fn store_with(dir: &Path, extra: &[(&str, SettingValue)]) -> Arc<MediaStore> {
    let mut overrides: Vec<(&str, SettingValue)> =
        vec![("store.dir", dir.to_string_lossy().to_string().into()), ("agent.kind", "echo".into())];
    overrides.extend(extra.iter().cloned());
    let settings = Settings::load_with(None, &Environment::new(), &overrides).unwrap();
    MediaStore::new(&settings, None).unwrap()
}

fn body(chunks: &[&[u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
    futures_util::stream::iter(chunks.iter().map(|chunk| Ok(Bytes::copy_from_slice(chunk))).collect::<Vec<_>>())
}

fn request(owner: &str, media_type: &str, length: Option<u64>) -> UploadRequest {
    UploadRequest { owner: owner.into(), media_type: media_type.into(), name: None, content_length: length }
}

fn session(thread: &str) -> SessionKey {
    SessionTarget { chat: Chat::Direct("alice".into()), thread_id: Some(thread.into()) }.key("main")
}

/// The files in `dir` and below (hidden ones included), relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().to_string_lossy().to_string());
            }
        }
    }
    found.sort();
    found
}

#[actix_rt::test]
async fn an_upload_lands_whole_under_its_owner_and_is_found_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), &[]);
    let meta = store.upload(request("alice", "image/png", None), body(&[&PNG[..10], &PNG[10..]])).await.unwrap();
    assert_eq!((meta.owner.as_str(), meta.bytes, meta.media_type.as_str()), ("alice", PNG.len() as u64, "image/png"));
    assert_eq!(fs::read(dir.path().join("media/alice").join(&meta.id)).unwrap(), PNG);
    assert_eq!(store.get(&meta.id).await.unwrap(), Some(meta.clone()));
    assert_eq!(store.get("no-such-id").await.unwrap(), None);
    assert_eq!(store.get("../../etc/passwd").await.unwrap(), None, "not an id's shape");
    assert!(!files_under(&dir.path().join("media")).iter().any(|file| file.ends_with(".part")), "no temp file left");
}

#[actix_rt::test]
async fn limits_refuse_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(
        dir.path(),
        &[("channels.websocket.media.maxBytes", 100.into()), ("channels.websocket.media.perUserBytes", 150.into())],
    );
    let big = [b'x'; 60];
    let too_long = store.upload(request("bob", "text/plain", Some(101)), body(&[])).await;
    assert!(matches!(too_long, Err(UploadError::TooLarge { limit: 100 })), "{too_long:?}");
    let grows = store.upload(request("bob", "text/plain", None), body(&[&big, &big])).await;
    assert!(matches!(grows, Err(UploadError::TooLarge { .. })), "{grows:?}");
    let not_png = store.upload(request("bob", "image/png", None), body(&[b"<svg onload=alert(1)>"])).await;
    assert!(matches!(not_png, Err(UploadError::NotThatType { .. })), "{not_png:?}");
    let empty = store.upload(request("bob", "text/plain", None), body(&[])).await;
    assert!(matches!(empty, Err(UploadError::Empty)), "{empty:?}");

    store.upload(request("bob", "text/plain", Some(60)), body(&[&big])).await.unwrap();
    store.upload(request("bob", "text/plain", None), body(&[&big])).await.unwrap();
    let over = store.upload(request("bob", "text/plain", None), body(&[&big])).await;
    assert!(matches!(over, Err(UploadError::Quota { limit: 150 })), "{over:?}");
    let other_user = store.upload(request("carol", "text/plain", None), body(&[&big])).await;
    assert!(other_user.is_ok(), "a quota is per user");
    // Refused uploads gave their reservations back: 30 more bytes still fit.
    store.upload(request("bob", "text/plain", None), body(&[&big[..30]])).await.unwrap();
    let files = files_under(&dir.path().join("media"));
    assert!(!files.iter().any(|file| file.ends_with(".part")), "{files:?}");
    assert_eq!(files.iter().filter(|file| file.starts_with("bob/")).count(), 3, "{files:?}");
}

#[actix_rt::test]
async fn a_quota_counts_what_the_directory_already_holds_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let limits = [("channels.websocket.media.perUserBytes", SettingValue::from(100))];
    let first = store_with(dir.path(), &limits);
    first.upload(request("dave", "text/plain", None), body(&[&[b'a'; 80]])).await.unwrap();
    let restarted = store_with(dir.path(), &limits);
    let over = restarted.upload(request("dave", "text/plain", None), body(&[&[b'a'; 30]])).await;
    assert!(matches!(over, Err(UploadError::Quota { .. })), "{over:?}");
}

#[actix_rt::test]
async fn delete_for_session_removes_that_sessions_media_and_keeps_media_other_sessions_hold() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), &[("channels.websocket.media.perUserBytes", 1000.into())]);
    let upload = |text: &'static [u8]| {
        let store = store.clone();
        async move { store.upload(request("alice", "text/plain", None), body(&[text])).await.unwrap() }
    };
    let (only_one, shared, never_sent) = (upload(b"one").await, upload(b"two").await, upload(b"three").await);
    let (thread_a, thread_b) = (session("a"), session("b"));
    store.attach(&[only_one.id.clone(), shared.id.clone()], &thread_a, None).await.unwrap();
    store.attach(std::slice::from_ref(&shared.id), &thread_b, Some("team")).await.unwrap();
    assert!(store.get(&shared.id).await.unwrap().unwrap().in_group("team"));

    assert_eq!(store.delete_for_session(&thread_a).await.unwrap(), 1);
    assert_eq!(store.get(&only_one.id).await.unwrap(), None);
    assert!(!store.file_path(&only_one).exists(), "its bytes are gone");
    let kept = store.get(&shared.id).await.unwrap().expect("still in thread b");
    assert_eq!(kept.links.keys().collect::<Vec<_>>(), [thread_b.as_str()]);
    assert!(store.file_path(&shared).exists() && store.file_path(&never_sent).exists());
    assert_eq!(store.delete_for_session(&thread_a).await.unwrap(), 0, "twice is harmless");

    assert_eq!(store.delete_for_session(&thread_b).await.unwrap(), 1);
    assert_eq!(store.get(&shared.id).await.unwrap(), None);
    assert!(store.get(&never_sent.id).await.unwrap().is_some(), "an upload never sent stays");
    // The deleted bytes went back to the quota: 995 of 1000 fit again ("three" = 5 held).
    store.upload(request("alice", "text/plain", None), body(&[&[b'z'; 995]])).await.unwrap();
}

#[actix_rt::test]
async fn an_agents_file_is_copied_only_from_under_the_roots_by_its_real_path() {
    let dir = tempfile::tempdir().unwrap();
    let roots = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(roots.path().join("chart.png"), PNG).unwrap();
    fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), roots.path().join("link.txt")).unwrap();
    let root = roots.path().to_string_lossy().to_string();
    let store = store_with(dir.path(), &[("channels.websocket.media.roots", vec![root].into())]);
    let origin = MediaOrigin { owner: "alice".into(), session: session("a"), group: None };

    let meta =
        store.import_file(roots.path().join("chart.png"), Some("chart.png".into()), origin.clone()).await.unwrap();
    assert_eq!(
        (meta.media_type.as_str(), meta.bytes, meta.name.as_deref()),
        ("image/png", PNG.len() as u64, Some("chart.png"))
    );
    assert_eq!(fs::read(store.file_path(&meta)).unwrap(), PNG);
    assert!(meta.links.contains_key(session("a").as_str()));

    let escaped = store.import_file(roots.path().join("link.txt"), None, origin.clone()).await;
    assert!(escaped.is_err(), "a symlink out of the roots is refused");
    let missing = store.import_file(roots.path().join("nope.png"), None, origin.clone()).await;
    assert!(missing.is_err());
    let directory = store.import_file(roots.path().to_path_buf(), None, origin).await;
    assert!(directory.is_err(), "not a regular file");
    assert_eq!(store.delete_for_session(&session("a")).await.unwrap(), 1, "an attachment goes with its session");
}

#[test]
fn media_ids_have_a_safe_shape() {
    assert!(is_media_id("0f8e2c1d9a7b4c3e8f1a2b3c4d5e6f70"));
    assert!(is_media_id("0f8e2c1d-9a7b-4c3e-8f1a-2b3c4d5e6f70"));
    for bad in ["", "../x", "a/b", "a.json", "a b", &"a".repeat(65)] {
        assert!(!is_media_id(bad), "{bad}");
    }
}

#[test]
fn urls_are_relative_or_under_the_public_base_and_name_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let relative = store_with(dir.path(), &[]);
    assert_eq!(relative.url("abc", None), "/media/abc");
    assert_eq!(relative.url("abc", Some("team a&b")), "/media/abc?groupId=team+a%26b");
    assert_eq!(relative.agent_link("abc"), None, "no public base: no link for the agent");
    let public = store_with(dir.path(), &[("channels.websocket.media.publicBaseUrl", "https://chat.test/".into())]);
    assert_eq!(public.url("abc", None), "https://chat.test/media/abc");
    let link = public.agent_link("abc").unwrap();
    let query: std::collections::HashMap<String, String> =
        serde_urlencoded::from_str(link.split_once('?').unwrap().1).unwrap();
    assert!(public.link_is_valid("abc", query["expires"].parse().unwrap(), &query["signature"]));
    assert!(!public.link_is_valid("abd", query["expires"].parse().unwrap(), &query["signature"]));
}
