//! The operators' routes (SPEC §13): `GET /admin/usage` and `GET /admin/sessions`.
//!
//! They exist only while `admin.token` is set (else 404, as for any unknown path), and
//! answer only a request carrying `Authorization: Bearer {admin.token}`: the token is
//! never taken from the query string (proxies log those), never logged, and compared in
//! constant time (the SHA-256 digests of the two, compared byte by byte without an
//! early exit, so neither the token's length nor its prefix leaks through timing). A
//! missing and a wrong token get the same 401. Nothing here is reachable through the
//! WebSocket or a user's token: these routes know only the admin token.
//!
//! - `GET /admin/usage?userId=…&from=YYYY-MM-DD&to=YYYY-MM-DD`: the user's usage per UTC
//!   day (days without any left out) and the total; `from` and `to` default to today,
//!   and cover at most `usage::MAX_RANGE_DAYS` days.
//! - `GET /admin/sessions?userId=…`: the sessions the user ran turns in (most recent
//!   first, at most `usage::MAX_SESSIONS_PER_USER`), and whether a turn of theirs runs
//!   in each now.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::protocol;
use crate::server::AppState;
use crate::usage::{Day, UsageCounts, MAX_RANGE_DAYS};

/// Adds the routes (call only when `admin.token` is set).
pub(crate) fn routes(app: &mut web::ServiceConfig) {
    app.route("/admin/usage", web::get().to(usage)).route("/admin/sessions", web::get().to(sessions));
}

/// Whether `presented` is `expected`, in time independent of where they differ.
pub fn tokens_match(presented: &[u8], expected: &[u8]) -> bool {
    let (presented, expected) = (Sha256::digest(presented), Sha256::digest(expected));
    let difference = presented.iter().zip(expected.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

/// Whether the request carries the admin token as a bearer.
fn authorized(request: &HttpRequest, state: &AppState) -> bool {
    let expected = state.settings.admin.token.as_bytes();
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().as_bytes());
    presented.is_some_and(|token| !expected.is_empty() && tokens_match(token, expected))
}

/// The 401 of a request without the admin token (missing and wrong alike).
fn unauthorized() -> HttpResponse {
    log::info!("an /admin request without the admin token was refused (401)");
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"clawsocket admin\""))
        .json(json!({"error": "the admin token is required: Authorization: Bearer <admin.token>"}))
}

/// Why a request to an admin route is not answered.
enum Refused {
    /// No admin token, or a wrong one: 401.
    Unauthorized,
    /// A parameter that cannot be used: 400 with the reason.
    BadRequest(String),
}

impl Refused {
    fn response(self) -> HttpResponse {
        match self {
            Refused::Unauthorized => unauthorized(),
            Refused::BadRequest(why) => HttpResponse::BadRequest().json(json!({ "error": why })),
        }
    }
}

/// The parameters of both routes (`/admin/sessions` reads only `userId`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdminQuery {
    user_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// The user a request with the admin token asks about (checked as an id from the
/// network is), and its other parameters.
fn admitted(request: &HttpRequest, state: &AppState) -> Result<(String, AdminQuery), Refused> {
    if !authorized(request, state) {
        return Err(Refused::Unauthorized);
    }
    let bad = |why: &str| Refused::BadRequest(why.to_string());
    let query = web::Query::<AdminQuery>::from_query(request.query_string())
        .map_err(|_| bad("the query could not be read"))?
        .into_inner();
    match query.user_id.as_deref() {
        Some(id) if protocol::is_valid_id(id) => Ok((id.to_string(), query)),
        Some(_) => Err(bad("userId must be 1 to 256 bytes without control characters")),
        None => Err(bad("userId is required")),
    }
}

/// The days `from` to `to` asked for (each `YYYY-MM-DD`, default today), at most
/// [`MAX_RANGE_DAYS`] of them.
fn day_range(query: &AdminQuery) -> Result<(Day, Day), Refused> {
    let today = Day::today();
    let day = |raw: Option<&str>, name: &str| match raw {
        None => Ok(today),
        Some(text) => Day::parse(text).ok_or_else(|| Refused::BadRequest(format!("{name} must be a date YYYY-MM-DD"))),
    };
    let (from, to) = (day(query.from.as_deref(), "from")?, day(query.to.as_deref(), "to")?);
    if from > to {
        return Err(Refused::BadRequest("from is after to".into()));
    }
    if to.0 - from.0 >= MAX_RANGE_DAYS {
        return Err(Refused::BadRequest(format!("from and to span more than {MAX_RANGE_DAYS} days")));
    }
    Ok((from, to))
}

/// `GET /admin/usage`.
async fn usage(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let asked = admitted(&request, &state).and_then(|(user, query)| Ok((user, day_range(&query)?)));
    let (user, (from, to)) = match asked {
        Ok(asked) => asked,
        Err(refused) => return refused.response(),
    };
    match state.tenancy.usage_range(&user, from, to).await {
        Ok(days) => {
            let mut total = UsageCounts::default();
            let days: Vec<_> = days
                .iter()
                .map(|(day, counts)| {
                    total.add(counts);
                    let mut value = counts_json(counts);
                    value["day"] = json!(day.to_string());
                    value
                })
                .collect();
            HttpResponse::Ok().json(json!({
                "userId": user,
                "from": from.to_string(),
                "to": to.to_string(),
                "days": days,
                "total": counts_json(&total),
            }))
        }
        Err(error) => unavailable("/admin/usage", &user, &error),
    }
}

fn counts_json(counts: &UsageCounts) -> serde_json::Value {
    json!({
        "turns": counts.turns,
        "promptTokens": counts.prompt_tokens,
        "completionTokens": counts.completion_tokens,
        "totalTokens": counts.total_tokens(),
        "estimatedTokens": counts.estimated_tokens,
    })
}

/// `GET /admin/sessions`.
async fn sessions(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (user, _) = match admitted(&request, &state) {
        Ok(asked) => asked,
        Err(refused) => return refused.response(),
    };
    match state.tenancy.sessions_of(&user).await {
        Ok(sessions) => HttpResponse::Ok().json(json!({ "userId": user, "sessions": sessions })),
        Err(error) => unavailable("/admin/sessions", &user, &error),
    }
}

/// 503: what was asked for could not be read (the detail goes to the log).
fn unavailable(route: &str, user: &str, error: &str) -> HttpResponse {
    log::error!("{route}: what user {user:?} used could not be read: {error}");
    HttpResponse::ServiceUnavailable().json(json!({"error": "the usage could not be read; try again"}))
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
