//! A session run without a socket: a test subscriber behind an `Outbox`, the echo
//! backend, a real store thread.

use serde_json::Value;

use super::*;
use crate::actors::outbox::{Outgoing, ToConnection};
use crate::actors::store_writer::StoreThreads;
use crate::config::{Environment, SettingValue};
use crate::identity::{Chat, ConnectionId};
use crate::limits::ByteBudget;
use crate::protocol::Inbound;

/// Collects the frames delivered to it; hands them over once a turn has ended.
struct Subscriber {
    frames: Vec<Value>,
    ended: Option<oneshot::Sender<Vec<Value>>>,
}

impl Actor for Subscriber {
    type Context = Context<Self>;
}

impl Handler<ToConnection> for Subscriber {
    type Result = ();

    fn handle(&mut self, message: ToConnection, _ctx: &mut Self::Context) {
        let ToConnection::Deliver(outgoing, _) = message else { return };
        let frames: Vec<Frame> = match outgoing {
            Outgoing::One(frame) => vec![frame],
            Outgoing::Batch(frames) => frames.to_vec(),
        };
        for frame in frames {
            let value: Value = serde_json::from_str(&frame.text()).expect("frames are JSON");
            let ends = matches!(value["type"].as_str(), Some("chat.response" | "chat.error"));
            self.frames.push(value);
            if ends {
                if let Some(ended) = self.ended.take() {
                    let _ = ended.send(std::mem::take(&mut self.frames));
                }
            }
        }
    }
}

/// Takes the idle reports (nothing to do with them here).
struct Idle;

impl Actor for Idle {
    type Context = Context<Self>;
}

impl Handler<SessionIdle> for Idle {
    type Result = ();

    fn handle(&mut self, _: SessionIdle, _ctx: &mut Self::Context) {}
}

fn send_message(content: &str) -> SendMessage {
    let json = serde_json::json!({"type": "chat.send", "content": content}).to_string();
    match protocol::decode(json.as_bytes()) {
        Ok(Inbound::Send(message)) => *message,
        _ => panic!("a chat.send"),
    }
}

#[actix_rt::test]
async fn a_session_runs_a_turn_for_a_test_subscriber_without_a_socket() {
    let store = tempfile::tempdir().unwrap();
    let overrides: [(&str, SettingValue); 3] = [
        ("agent.kind", "echo".into()),
        ("agent.echoDelayMs", 0.into()),
        ("store.dir", store.path().to_string_lossy().to_string().into()),
    ];
    let settings = Arc::new(Settings::load_with(None, &Environment::new(), &overrides).unwrap());
    let target = SessionTarget { chat: Chat::Direct("u1".into()), thread_id: None };
    let key = target.key("main");
    let transcript_path = store::transcript_path(store.path(), &key);
    let media = crate::media::MediaStore::new(&settings, None).unwrap();
    let conversations = ConversationIndex::local(StoreThreads::start(1), store.path().into());
    let session = SessionActor::new(SessionSetup {
        store: conversations.transcript_store(&key, &target, store.path()),
        conversations,
        cluster: None,
        key,
        agent_id: Arc::from("main"),
        target,
        workspace: None,
        confirm_new_agent: None,
        backend: crate::backend::from_settings(&settings, media.clone()),
        media,
        tenancy: crate::quota::Tenancy::new(&settings, None, Arc::new(Metrics::new())),
        settings,
        idle: Idle.start().recipient(),
        metrics: Arc::new(Metrics::new()),
    })
    .start();

    let (ended, frames) = oneshot::channel();
    let subscriber = Subscriber { frames: Vec::new(), ended: Some(ended) }.start();
    let id = ConnectionId::new();
    let outbox = Outbox::new(id.clone(), subscriber.recipient(), ByteBudget::new(1 << 20));
    let turn = Turn {
        tools: crate::protocol::ToolTurn::Message,
        message_id: Arc::from("m1"),
        identity: Identity::anonymous(&id, Some("u1"), None),
        message: send_message("hello there"),
        origin: id,
    };
    session.do_send(SessionCommand::Submit { from: outbox, turn: Box::new(turn) });

    let frames = frames.await.expect("the turn ends");
    let kinds: Vec<&str> = frames.iter().filter_map(|frame| frame["type"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"chat.typing"));
    let streamed: String =
        frames.iter().filter(|f| f["type"] == "chat.stream").filter_map(|f| f["content"].as_str()).collect();
    let response = frames.last().unwrap();
    assert_eq!(
        (response["type"].as_str(), response["content"].as_str()),
        (Some("chat.response"), Some("echo: hello there"))
    );
    assert_eq!(streamed, "echo: hello there");
    let stored = std::fs::read_to_string(&transcript_path).expect("the turn was stored before its answer");
    assert_eq!(stored.lines().count(), 2);
}
