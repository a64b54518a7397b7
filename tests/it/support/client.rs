//! A WebSocket test client on awc: send JSON, receive parsed JSON, see close codes.

use std::time::Duration;

use actix_codec::Framed;
use awc::ws::{Codec, Frame, Message};
use awc::BoxedSocket;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;

/// How long a test waits for a frame before failing (a hang is a failure, not a timing claim).
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One client connection.
pub struct WsClient {
    framed: Framed<BoxedSocket, Codec>,
}

/// What the server sent next.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Closed(Option<u16>),
}

impl WsClient {
    /// Connects and returns the client; the welcome frame is left unread.
    pub async fn connect(url: &str) -> WsClient {
        Self::try_connect(url, &[]).await.unwrap_or_else(|error| panic!("connect {url}: {error}"))
    }

    /// Connects with extra headers; `Err` carries the HTTP status or error text.
    pub async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, String> {
        let mut request = awc::Client::builder().max_http_version(awc::http::Version::HTTP_11).finish().ws(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        match request.max_frame_size(64 * 1024 * 1024).connect().await {
            Ok((_, framed)) => Ok(WsClient { framed }),
            Err(awc::error::WsClientError::InvalidResponseStatus(status)) => Err(status.as_u16().to_string()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Connects and reads the welcome frame, returning both.
    pub async fn connect_welcomed(url: &str) -> (WsClient, Value) {
        let mut client = Self::connect(url).await;
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "chat.response", "first frame is the welcome: {welcome}");
        (client, welcome)
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.framed.send(Message::Text(text.to_string().into())).await.expect("send text frame");
    }

    /// Sends any frame as it is (fragments, control frames).
    pub async fn send_message(&mut self, message: Message) {
        self.framed.send(message).await.expect("send a frame");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.framed.send(Message::Binary(bytes.into())).await.expect("send binary frame");
    }

    /// The next JSON frame; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Received::Json(value) => value,
            Received::Closed(code) => panic!("expected a frame, the server closed ({code:?})"),
        }
    }

    /// Sends a WebSocket ping and waits for its pong: the server has handled every
    /// frame sent before it (it reads a connection's frames in order).
    pub async fn round_trip(&mut self) {
        self.framed.send(Message::Ping(bytes::Bytes::from_static(b"sync"))).await.expect("send a ping");
        loop {
            let item = actix_rt::time::timeout(RECEIVE_TIMEOUT, self.framed.next())
                .await
                .expect("no pong from the server within the test timeout");
            match item {
                Some(Ok(Frame::Pong(payload))) if &payload[..] == b"sync" => return,
                Some(Ok(_)) => {}
                other => panic!("the connection ended before the pong: {other:?}"),
            }
        }
    }

    /// The next JSON frame or the close, skipping pings.
    pub async fn next(&mut self) -> Received {
        self.next_within(RECEIVE_TIMEOUT).await.expect("no frame from the server within the test timeout")
    }

    /// The next JSON frame if one arrives within `wait` (`None`: nothing came; a close panics).
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        match self.next_within(wait).await? {
            Received::Json(value) => Some(value),
            Received::Closed(code) => panic!("expected a frame, the server closed ({code:?})"),
        }
    }

    /// The next JSON frame or the close, skipping pings; `None` when nothing came within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<Received> {
        loop {
            let Ok(item) = actix_rt::time::timeout(wait, self.framed.next()).await else { return None };
            match item {
                Some(Ok(Frame::Text(bytes))) | Some(Ok(Frame::Binary(bytes))) => {
                    return Some(Received::Json(serde_json::from_slice(&bytes).expect("server frames are JSON")));
                }
                Some(Ok(Frame::Close(reason))) => {
                    return Some(Received::Closed(reason.map(|reason| reason.code.into())));
                }
                Some(Ok(Frame::Ping(payload))) => {
                    let _ = self.framed.send(Message::Pong(payload)).await;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Some(Received::Closed(None)),
            }
        }
    }

    /// Waits for the close and returns its code, skipping any frames before it.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Received::Closed(code) = self.next().await {
                return code;
            }
        }
    }

    /// Every frame up to and including the `chat.response` or `chat.error` of `message_id`.
    pub async fn turn(&mut self, message_id: &str) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.recv().await;
            let kind = frame["type"].as_str().unwrap_or_default().to_string();
            let ends = (kind == "chat.response" || kind == "chat.error") && frame["messageId"] == message_id;
            frames.push(frame);
            if ends {
                return frames;
            }
        }
    }

    /// Sends `chat.join` with `selector`'s fields (`groupId`, `afterSeq`…) and returns
    /// the `chat.joined` (frames before it are skipped).
    pub async fn join(&mut self, selector: serde_json::Value) -> serde_json::Value {
        let mut join = serde_json::json!({"type": "chat.join"});
        if let (Some(join), Some(fields)) = (join.as_object_mut(), selector.as_object()) {
            join.extend(fields.clone());
        }
        self.send_json(join).await;
        loop {
            let frame = self.recv().await;
            if frame["type"] == "chat.joined" {
                return frame;
            }
        }
    }

    /// Sends `content` as `message_id` and returns the frames of that turn.
    pub async fn chat(&mut self, message_id: &str, content: &str) -> Vec<Value> {
        self.send_json(serde_json::json!({"type": "chat.send", "content": content, "messageId": message_id})).await;
        self.turn(message_id).await
    }

    /// Closes the socket from the client side and forgets it.
    pub async fn close(mut self) {
        self.send_close().await;
    }

    /// Sends a normal close frame, keeping the client to read the server's answer.
    pub async fn send_close(&mut self) {
        let reason = awc::ws::CloseReason { code: awc::ws::CloseCode::Normal, description: None };
        let _ = self.framed.send(Message::Close(Some(reason))).await;
    }
}

/// The `chat.stream` frames among `frames`.
pub fn streams(frames: &[Value]) -> Vec<&Value> {
    frames.iter().filter(|frame| frame["type"] == "chat.stream").collect()
}

/// The concatenated `content` of the `chat.stream` frames.
pub fn streamed_text(frames: &[Value]) -> String {
    streams(frames).iter().filter_map(|frame| frame["content"].as_str()).collect()
}

/// The last frame, which `turn` guarantees is the answer or the error.
pub fn last(frames: &[Value]) -> &Value {
    frames.last().expect("a turn has frames")
}
