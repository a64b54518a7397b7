//! A WebSocket client with nothing in between: a tokio `TcpStream` with a receive
//! buffer of our choosing, the handshake written by hand, then the plain frame codec.
//! Unlike `WsClient` it never answers a ping by itself and can simply stop reading,
//! so it can play a dead peer or a slow consumer.

use std::net::SocketAddr;
use std::time::Duration;

use actix_codec::Framed;
use awc::ws::{Codec, Frame, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long a read waits before the test fails (a hang, not a timing claim).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames up to this size are read (the answers of the slow-reader test are large).
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// One raw connection.
pub struct RawClient {
    framed: Framed<TcpStream, Codec>,
}

impl RawClient {
    /// Connects to `/ws?{query}` with a kernel receive buffer of about `receive_buffer`
    /// bytes and completes the upgrade; no frame is read.
    pub async fn connect(addr: SocketAddr, query: &str, receive_buffer: u32) -> RawClient {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        socket.set_recv_buffer_size(receive_buffer).expect("set the receive buffer");
        let mut stream = socket.connect(addr).await.expect("connect to the server");
        let request = format!(
            "GET /ws?{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("send the handshake");
        // The head is read byte by byte, so that no byte of the first frame is consumed here.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.expect("the handshake answer"));
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "upgrade refused: {}", String::from_utf8_lossy(&head));
        RawClient { framed: Framed::new(stream, Codec::new().max_size(MAX_FRAME).client_mode()) }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.framed.send(Message::Text(value.to_string().into())).await.expect("send a text frame");
    }

    /// Sends any frame as it is (a pong, for instance).
    pub async fn send_message(&mut self, message: Message) {
        self.framed.send(message).await.expect("send a frame");
    }

    /// The next frame of any kind; `None` when the connection ended without a close frame.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        let item = actix_rt::time::timeout(READ_TIMEOUT, self.framed.next())
            .await
            .expect("no frame and no end from the server within the test timeout");
        item.and_then(Result::ok)
    }

    /// The next frame, which must be a JSON text frame.
    pub async fn recv_json(&mut self) -> Value {
        match self.next_frame().await {
            Some(Frame::Text(bytes)) => serde_json::from_slice(&bytes).expect("server frames are JSON"),
            other => panic!("expected a JSON text frame, got {other:?}"),
        }
    }
}

impl RawClient {
    /// Writes bytes straight to the socket, bypassing the frame codec.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.framed.io_mut().write_all(bytes).await
    }
}
