//! A scripted group-access service for `channels.websocket.groups.policy = "proxy"`:
//! real actix-web HTTP on 127.0.0.1:0 answering `POST /groups` with
//! `{"allowed": bool}` for the `{userId, groupId, action}` it receives, from a table
//! (a pair not in the table is refused), recording every request body.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::serve_on_loopback;

/// What the handler shares.
struct State {
    /// (userId, groupId) pairs that are allowed.
    allowed: HashSet<(String, String)>,
    received: Arc<Mutex<Vec<Value>>>,
}

/// A running fake group-access service; dropping it stops it.
pub struct FakeGroups {
    /// The endpoint, for `channels.websocket.groups.endpoint`.
    pub url: String,
    received: Arc<Mutex<Vec<Value>>>,
    handle: ServerHandle,
}

impl FakeGroups {
    /// Starts the service allowing exactly the `(userId, groupId)` pairs given. Must run
    /// inside an actix system.
    pub fn start(allowed: &[(&str, &str)]) -> FakeGroups {
        let received = Arc::new(Mutex::new(Vec::new()));
        let allowed = allowed.iter().map(|(user, group)| (user.to_string(), group.to_string())).collect();
        let state = web::Data::new(State { allowed, received: received.clone() });
        let (address, handle) = serve_on_loopback(move |app| {
            app.app_data(state.clone()).route("/groups", web::post().to(decide));
        });
        FakeGroups { url: format!("http://{address}/groups"), received, handle }
    }

    /// Every request body received so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.received.lock().expect("not poisoned").clone()
    }

    /// How many requests asked about `user_id` in `group_id`.
    pub fn calls_about(&self, user_id: &str, group_id: &str) -> usize {
        self.requests().iter().filter(|body| body["userId"] == user_id && body["groupId"] == group_id).count()
    }
}

impl Drop for FakeGroups {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// `POST /groups`: records the body, answers from the table.
async fn decide(body: web::Json<Value>, state: web::Data<State>) -> HttpResponse {
    let body = body.into_inner();
    state.received.lock().expect("not poisoned").push(body.clone());
    let pair = (
        body["userId"].as_str().unwrap_or_default().to_string(),
        body["groupId"].as_str().unwrap_or_default().to_string(),
    );
    HttpResponse::Ok().json(json!({"allowed": state.allowed.contains(&pair)}))
}
