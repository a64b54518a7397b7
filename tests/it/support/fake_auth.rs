//! A scripted auth service: real actix-web HTTP on 127.0.0.1:0, answering
//! `POST /verify` the way each test says (good tokens, a delay, a non-2xx status, an
//! answer that is not JSON), recording every request body it received.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::serve_on_loopback;

/// How the service answers.
#[derive(Clone, Copy)]
pub enum Answer {
    /// `success:true` with the user's data for a known token, else `success:false`.
    Verdict,
    /// This HTTP status with an empty body.
    Status(u16),
    /// HTTP 200 with a body that is not JSON.
    NotJson,
}

/// What a test wants the service to do.
#[derive(Clone)]
pub struct AuthScript {
    /// token → the `data` object answered for it.
    users: HashMap<String, Value>,
    delay: Duration,
    answer: Answer,
}

impl AuthScript {
    /// A service that knows no token yet and answers at once.
    pub fn new() -> AuthScript {
        AuthScript { users: HashMap::new(), delay: Duration::ZERO, answer: Answer::Verdict }
    }

    /// `token` is good and stands for `data` (which should hold `userId`, `username`).
    pub fn user(mut self, token: &str, data: Value) -> AuthScript {
        self.users.insert(token.to_string(), data);
        self
    }

    /// Waits this long before every answer.
    pub fn delay(mut self, delay: Duration) -> AuthScript {
        self.delay = delay;
        self
    }

    /// Answers this way instead of a verdict.
    pub fn answer(mut self, answer: Answer) -> AuthScript {
        self.answer = answer;
        self
    }
}

/// What the handler shares.
struct State {
    script: AuthScript,
    received: Arc<Mutex<Vec<Value>>>,
}

/// A running fake auth service; dropping it stops it.
pub struct FakeAuth {
    /// The verify endpoint, for `channels.websocket.auth.endpoint`.
    pub url: String,
    received: Arc<Mutex<Vec<Value>>>,
    handle: ServerHandle,
}

impl FakeAuth {
    /// Starts the service on a free port of 127.0.0.1. Must run inside an actix system.
    pub fn start(script: AuthScript) -> FakeAuth {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new(State { script, received: received.clone() });
        let (address, handle) = serve_on_loopback(move |app| {
            app.app_data(state.clone()).route("/verify", web::post().to(verify));
        });
        FakeAuth { url: format!("http://{address}/verify"), received, handle }
    }

    /// Every request body received so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.received.lock().expect("not poisoned").clone()
    }

    /// How many requests were received so far.
    pub fn calls(&self) -> usize {
        self.received.lock().expect("not poisoned").len()
    }
}

impl Drop for FakeAuth {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// An endpoint nothing listens on: the auth service is down.
pub fn dead_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let address = listener.local_addr().expect("bound address");
    drop(listener);
    format!("http://{address}/verify")
}

/// `POST /verify`: records the body, waits, answers as scripted.
async fn verify(body: web::Json<Value>, state: web::Data<State>) -> HttpResponse {
    let body = body.into_inner();
    state.received.lock().expect("not poisoned").push(body.clone());
    let script = &state.script;
    actix_rt::time::sleep(script.delay).await;
    match script.answer {
        Answer::Status(status) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("a valid status")).finish()
        }
        Answer::NotJson => HttpResponse::Ok().content_type("text/html").body("<html>oops</html>"),
        Answer::Verdict => {
            let token = body["token"].as_str().unwrap_or_default();
            match script.users.get(token) {
                Some(data) => HttpResponse::Ok().json(json!({"success": true, "data": data})),
                None => HttpResponse::Ok().json(json!({"success": false, "error": "invalid token"})),
            }
        }
    }
}
