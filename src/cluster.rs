//! The cluster's shared state on Redis (SPEC §14): session leases, the per-session
//! event streams, node inboxes and the transcripts, one call each.
//!
//! A [`Cluster`] is created only when `cluster.redis.url` is set; the embedded single
//! node never builds one. It talks to Redis through the `redis` crate's connection
//! manager (created lazily: a node that starts while Redis is down is not ready, and
//! becomes ready when Redis answers, without a restart). Every write a session's
//! owner makes checks its lease in the same Lua script, so an owner that was paused
//! past its lease (and replaced) cannot write after the fact: the lease value holds
//! a fencing token that grows on every takeover.
//!
//! Keys (the `{…}` hash tag keeps one session's keys in one Redis Cluster slot):
//! `cs:lease:{K}` (owner `node token`, expiring), `cs:fence:{K}` (the token counter),
//! `cs:tx:{K}` (the transcript, a list of JSON entries), `cs:ev:{K}` (the event
//! stream), and the pub/sub channel `cs:node:{node}` (a node's inbox).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, RedisError, Script};
use tokio::sync::oneshot;

use crate::agents::AgentRecord;
use crate::config::ClusterSettings;
use crate::conversations::{TurnRecord, MAX_INDEXED};
use crate::followed_turn;
use crate::identity::{Chat, SessionKey};
use crate::protocol::{Role, TranscriptEntry};
use crate::redact;
use crate::stream_entries;
use crate::transcript::{self, Tail};

/// How long one Redis command may take before it counts as Redis being down.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a cluster operation failed; the text is for the log (passwords masked).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis is unreachable: {0}")]
    Unreachable(String),
    #[error("this node no longer holds the session's lease")]
    LeaseLost,
    #[error("Redis answered something unexpected: {0}")]
    Unexpected(String),
}

impl From<RedisError> for ClusterError {
    fn from(error: RedisError) -> Self {
        ClusterError::Unreachable(redact::secrets(&error.to_string()))
    }
}

/// What claiming a session's lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node owns the session now; the lease value (`node token`) fences its writes.
    Owner(Arc<str>),
    /// Another node owns it.
    HeldBy { node: String, lease: String },
}

/// One event of a session's stream, as a follower reads it.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// The stream entry id (orders the events).
    pub id: String,
    /// The owner's lease value when it was written.
    pub lease: String,
    /// The serialized frames, newline-separated (JSON text has no raw newline).
    pub frames: bytes::Bytes,
    /// A connection that must not get these frames (the sender of a group message).
    pub except: Option<String>,
}

/// The cluster handle every actor that needs Redis shares.
pub struct Cluster {
    pub node_id: Arc<str>,
    pub lease: Duration,
    client: Client,
    commands: ConnectionManager,
    stream_max_len: u64,
    stream_ttl_ms: u64,
    /// The last health check's verdict (`/readyz`).
    healthy: AtomicBool,
    scripts: Scripts,
    /// Commands this node forwarded and waits to hear were received, by id.
    acks: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
}

/// A forwarded command's acknowledgement, awaited; dropping it forgets the command.
pub struct PendingAck {
    acks: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
    id: String,
    received: oneshot::Receiver<()>,
}

impl PendingAck {
    /// Whether the acknowledgement came within `wait`.
    pub async fn within(mut self, wait: Duration) -> bool {
        matches!(tokio::time::timeout(wait, &mut self.received).await, Ok(Ok(())))
    }
}

impl Drop for PendingAck {
    fn drop(&mut self) {
        self.acks.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}

/// The Lua scripts: each check-and-write is atomic in Redis.
struct Scripts {
    acquire: Script,
    renew: Script,
    release: Script,
    append: Script,
    publish: Script,
    reserve_agent: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            // KEYS: lease, fence. ARGV: node, leaseMs. A lease of this same node is
            // stale (one node runs one actor per session): it is taken over too.
            acquire: Script::new(
                r"local holder = redis.call('GET', KEYS[1])
                if holder and string.sub(holder, 1, #ARGV[1] + 1) ~= ARGV[1] .. ' ' then
                  return {0, holder}
                end
                local value = ARGV[1] .. ' ' .. redis.call('INCR', KEYS[2])
                redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
                return {1, value}",
            ),
            renew: Script::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then
                  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
                end
                return 0",
            ),
            release: Script::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
                return 0",
            ),
            append: Script::new(APPEND),
            // KEYS: lease, stream. ARGV: lease value, maxlen, ttl, then (frames, except)
            // pairs ('' = no except). Returns the last id, or 0 without the lease.
            publish: Script::new(
                r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
                local id = ''
                for i = 4, #ARGV, 2 do
                  if ARGV[i + 1] == '' then
                    id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'o', ARGV[1], 'f', ARGV[i])
                  else
                    id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'o', ARGV[1], 'f', ARGV[i], 'x', ARGV[i + 1])
                  end
                end
                redis.call('PEXPIRE', KEYS[2], ARGV[3])
                return id",
            ),
            reserve_agent: Script::new(RESERVE_AGENT),
        }
    }
}

/// The key of a session's lease.
pub(crate) fn lease_key(key: &SessionKey) -> String {
    format!("cs:lease:{{{key}}}")
}

fn fence_key(key: &SessionKey) -> String {
    format!("cs:fence:{{{key}}}")
}

pub(crate) fn transcript_key(key: &SessionKey) -> String {
    format!("cs:tx:{{{key}}}")
}

/// The message ids of a session's last answers (`store.idempotencyWindow` of them),
/// so a node taking the session over reads ids, not the whole transcript.
pub(crate) fn answered_key(key: &SessionKey) -> String {
    format!("cs:ans:{{{key}}}")
}

/// An owner's conversation index: a hash of entries (JSON) by thread.
pub(crate) fn conversations_key(owner: &Chat) -> String {
    format!("cs:threads:{{{}}}", owner_name(owner))
}

/// An owner's conversations by last activity (a sorted set of threads), so a listing
/// reads only the newest entries.
pub(crate) fn conversations_order_key(owner: &Chat) -> String {
    format!("cs:threads-order:{{{}}}", owner_name(owner))
}

fn owner_name(owner: &Chat) -> String {
    match owner {
        Chat::Direct(sender) => format!("direct:{sender}"),
        Chat::Group(group) => format!("group:{group}"),
    }
}

/// A thread's field in its owner's index (`""`: the default session; no thread id is
/// empty).
pub(crate) fn conversation_field(thread_id: Option<&str>) -> &str {
    thread_id.unwrap_or_default()
}

/// Appends a turn under the lease and records it in the conversation index.
/// KEYS: lease, transcript, answered ids, index hash, index order. ARGV: lease value,
/// the answer's message id, how many ids to keep, the thread's field, the entry a
/// first turn creates (JSON), messages added, the turn's time, the most entries an
/// index keeps, then the entries. An entry that does not decode (damaged) is made
/// anew, its count from the transcript's length.
const APPEND: &str = r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 9, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)
local fresh = cjson.decode(ARGV[5])
local entry = nil
local stored = redis.call('HGET', KEYS[4], ARGV[4])
if stored then
  local ok, decoded = pcall(cjson.decode, stored)
  if ok and type(decoded) == 'table' and tonumber(decoded.messageCount) then entry = decoded end
end
if entry then
  entry.sessionKey = fresh.sessionKey
  entry.messageCount = tonumber(entry.messageCount) + tonumber(ARGV[6])
  entry.lastActivity = math.max(tonumber(entry.lastActivity) or 0, tonumber(ARGV[7]))
  if entry.title == nil or entry.title == '' then entry.title = fresh.title end
else
  entry = fresh
  if stored then entry.messageCount = redis.call('LLEN', KEYS[2]) end
end
redis.call('HSET', KEYS[4], ARGV[4], cjson.encode(entry))
redis.call('ZADD', KEYS[5], entry.lastActivity, ARGV[4])
local excess = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[8])
if excess > 0 then
  local oldest = redis.call('ZRANGE', KEYS[5], 0, excess - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[5], 0, excess - 1)
  redis.call('HDEL', KEYS[4], unpack(oldest))
end
return 1";

/// The key of a session's event stream.
pub fn stream_key(key: &SessionKey) -> String {
    format!("cs:ev:{{{key}}}")
}

/// The node a lease value (`node token`) names.
fn node_of(lease: &str) -> String {
    lease.split_once(' ').map_or(lease, |(node, _)| node).to_string()
}

/// The pub/sub channel of a node's inbox.
pub fn inbox_channel(node: &str) -> String {
    format!("cs:node:{node}")
}

impl Cluster {
    /// The cluster handle for `settings` (not connected yet: the first command
    /// connects). Fails only on a URL the client does not accept (config checks that).
    pub fn new(settings: &ClusterSettings, node_id: String) -> Result<Arc<Cluster>, ClusterError> {
        let client = Client::open(settings.redis.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Arc::new(Cluster {
            node_id: Arc::from(node_id),
            lease: Duration::from_millis(settings.lease_ms),
            client,
            commands,
            stream_max_len: settings.stream_max_len,
            stream_ttl_ms: settings.stream_ttl_ms,
            healthy: AtomicBool::new(false),
            acks: Arc::default(),
            scripts: Scripts::new(),
        }))
    }

    /// The client, for the connections that block (stream reads) or subscribe.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A handle on the shared (multiplexed) connection, for one kind of shared state.
    pub(crate) fn commands(&self) -> ConnectionManager {
        self.commands.clone()
    }

    /// Whether the last health check reached Redis.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Pings Redis and records the verdict; answers it.
    pub async fn check_health(&self) -> Result<(), ClusterError> {
        let pinged: Result<String, RedisError> = redis::cmd("PING").query_async(&mut self.commands()).await;
        let verdict = pinged.map(drop).map_err(ClusterError::from);
        let healthy = verdict.is_ok();
        if self.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            match &verdict {
                Ok(()) => {
                    log::info!("cluster: Redis answers; node {} is ready", self.node_id);
                    self.load_scripts().await;
                }
                Err(error) => log::error!("cluster: node {} is not ready: {error}", self.node_id),
            }
        }
        verdict
    }

    /// Loads the scripts into Redis (a Redis that restarted forgot them), so that the
    /// sessions starting next do not each find one missing and load it.
    async fn load_scripts(&self) {
        let scripts = &self.scripts;
        for script in [
            &scripts.acquire,
            &scripts.renew,
            &scripts.release,
            &scripts.append,
            &scripts.publish,
            &scripts.reserve_agent,
        ] {
            if let Err(error) = script.prepare_invoke().load_async(&mut self.commands()).await {
                log::debug!("cluster: a script was not loaded ahead (it loads on first use): {error}");
            }
        }
    }

    /// Claims `key` for this node unless another node holds it.
    pub async fn claim(&self, key: &SessionKey) -> Result<Claim, ClusterError> {
        let (won, value): (i64, String) = self
            .scripts
            .acquire
            .key(lease_key(key))
            .key(fence_key(key))
            .arg(&*self.node_id)
            .arg(self.lease_ms())
            .invoke_async(&mut self.commands())
            .await?;
        if won == 1 {
            return Ok(Claim::Owner(Arc::from(value)));
        }
        let node = node_of(&value);
        Ok(Claim::HeldBy { node, lease: value })
    }

    /// Extends this node's lease on `key`; `false` when it is no longer this node's.
    pub async fn renew(&self, key: &SessionKey, lease: &str) -> Result<bool, ClusterError> {
        let renewed: i64 = self
            .scripts
            .renew
            .key(lease_key(key))
            .arg(lease)
            .arg(self.lease_ms())
            .invoke_async(&mut self.commands())
            .await?;
        Ok(renewed == 1)
    }

    /// Gives up this node's lease on `key` (a retired session).
    pub async fn release(&self, key: &SessionKey, lease: &str) -> Result<(), ClusterError> {
        let _: i64 = self.scripts.release.key(lease_key(key)).arg(lease).invoke_async(&mut self.commands()).await?;
        Ok(())
    }

    /// Who holds `key`'s lease, as a claim would find it (never taking it): `None`
    /// when nobody does, or only a stale lease of this node.
    pub async fn holder_of(&self, key: &SessionKey) -> Result<Option<Claim>, ClusterError> {
        let Some(lease) = self.lease_holder(key).await? else { return Ok(None) };
        let node = node_of(&lease);
        if node == *self.node_id {
            return Ok(None);
        }
        Ok(Some(Claim::HeldBy { node, lease }))
    }

    /// Who holds `key` now (`node token`), if anyone.
    pub async fn lease_holder(&self, key: &SessionKey) -> Result<Option<String>, ClusterError> {
        Ok(self.commands().get(lease_key(key)).await?)
    }

    /// Starts waiting for the acknowledgement of forwarded command `id`.
    pub fn expect_ack(&self, id: &str) -> PendingAck {
        let (sender, received) = oneshot::channel();
        self.acks.lock().unwrap_or_else(PoisonError::into_inner).insert(id.to_string(), sender);
        PendingAck { acks: self.acks.clone(), id: id.to_string(), received }
    }

    /// Command `id` was received by the node it was sent to.
    pub fn acknowledged(&self, id: &str) {
        if let Some(waiting) = self.acks.lock().unwrap_or_else(PoisonError::into_inner).remove(id) {
            let _ = waiting.send(());
        }
    }

    /// Publishes `payload` to `node`'s inbox; answers how many listeners got it (0: the
    /// node is not running).
    pub async fn send_to_node(&self, node: &str, payload: String) -> Result<usize, ClusterError> {
        Ok(self.commands().publish(inbox_channel(node), payload).await?)
    }

    /// Appends a completed turn's entries (and its answer's id, keeping the last
    /// `answers` ids), if this node still holds `lease`.
    /// The conversation's entry in its owner's index is brought up to date in the same
    /// script (`record`).
    pub async fn append(
        &self,
        key: &SessionKey,
        lease: &str,
        entries: &[TranscriptEntry],
        answers: usize,
        owner: &Chat,
        record: &TurnRecord,
    ) -> Result<(), ClusterError> {
        let answered =
            entries.iter().find(|entry| entry.role == Role::Assistant).map(|entry| entry.message_id.as_str());
        let new_entry =
            serde_json::to_string(&record.new_entry()).map_err(|error| ClusterError::Unexpected(error.to_string()))?;
        let mut invocation = self.scripts.append.key(lease_key(key));
        invocation
            .key(transcript_key(key))
            .key(answered_key(key))
            .key(conversations_key(owner))
            .key(conversations_order_key(owner))
            .arg(lease)
            .arg(answered.unwrap_or_default())
            .arg(answers.max(1))
            .arg(conversation_field(record.thread_id.as_deref()))
            .arg(new_entry)
            .arg(record.added)
            .arg(record.ts)
            .arg(MAX_INDEXED);
        for entry in entries {
            let line = serde_json::to_string(entry).map_err(|error| ClusterError::Unexpected(error.to_string()))?;
            invocation.arg(line);
        }
        let appended: i64 = invocation.invoke_async(&mut self.commands()).await?;
        if appended == 1 {
            Ok(())
        } else {
            Err(ClusterError::LeaseLost)
        }
    }

    /// Publishes events (serialized frames, each with the connection that must not get
    /// them) to `key`'s stream, if this node still holds `lease`; answers the last id.
    pub async fn publish(
        &self,
        key: &SessionKey,
        lease: &str,
        events: &[(bytes::Bytes, Option<String>)],
    ) -> Result<String, ClusterError> {
        let mut invocation = self.scripts.publish.key(lease_key(key));
        invocation.key(stream_key(key)).arg(lease).arg(self.stream_max_len).arg(self.stream_ttl_ms);
        for (frames, except) in events {
            invocation.arg(frames.as_ref()).arg(except.as_deref().unwrap_or(""));
        }
        let published: redis::Value = invocation.invoke_async(&mut self.commands()).await?;
        match published {
            redis::Value::Int(0) => Err(ClusterError::LeaseLost),
            other => redis::from_redis_value(other).map_err(|error| ClusterError::Unexpected(error.to_string())),
        }
    }

    /// The newest events of `key`'s stream back to the start of the latest turn,
    /// newest first: pages of `PAGE` events until a turn's first frame, the stream's
    /// start, or `max_bytes` of frames (a follower needs no more of a turn).
    pub async fn latest_turn_events(
        &self,
        key: &SessionKey,
        max_bytes: usize,
    ) -> Result<Vec<StreamEvent>, ClusterError> {
        const PAGE: usize = 512;
        let mut events: Vec<StreamEvent> = Vec::new();
        let mut bytes = 0;
        let mut end = "+".to_string();
        loop {
            let reply: redis::Value = self.commands().xrevrange_count(stream_key(key), &end, "-", PAGE).await?;
            let page_len = match &reply {
                redis::Value::Array(entries) => entries.len(),
                _ => 0,
            };
            let (oldest, page) = stream_entries::parse_entries(reply);
            if let Some(oldest) = oldest {
                end = format!("({oldest}");
            }
            for event in page {
                bytes += event.frames.len();
                let starts_turn = followed_turn::starts_turn(&event.frames);
                events.push(event);
                if starts_turn || bytes > max_bytes {
                    return Ok(events);
                }
            }
            if page_len < PAGE {
                return Ok(events);
            }
        }
    }

    /// The end of `key`'s transcript: the last `keep` entries and the ids of the last
    /// `answers` answers (what a session that takes over loads; no more of it).
    pub async fn load_tail(&self, key: &SessionKey, keep: usize, answers: usize) -> Result<Tail, ClusterError> {
        let recent = self.read_tail(key, keep).await?;
        let answered: Vec<String> = self.commands().lrange(answered_key(key), -(answers.max(1) as isize), -1).await?;
        let total: usize = self.commands().llen(transcript_key(key)).await?;
        Ok(Tail { more_on_disk: total > recent.len(), answered, recent })
    }

    /// The last `limit` entries of `key`'s transcript, oldest first.
    pub async fn read_tail(&self, key: &SessionKey, limit: usize) -> Result<Vec<TranscriptEntry>, ClusterError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // A regenerated answer hides the one before it: twice the lines hold enough.
        let lines: Vec<String> = self.commands().lrange(transcript_key(key), -(2 * limit as isize), -1).await?;
        let mut entries = transcript::visible(lines.iter().filter_map(|line| parse_entry(line)).collect());
        entries.drain(..entries.len().saturating_sub(limit));
        Ok(entries)
    }

    /// The stored answer to `message_id`, searched from the end in pages.
    pub async fn find_answer(
        &self,
        key: &SessionKey,
        message_id: &str,
    ) -> Result<Option<TranscriptEntry>, ClusterError> {
        // Entries are up to `limits.maxAnswerBytes` each: a page holds few.
        const PAGE: isize = 16;
        let mut end: isize = -1;
        loop {
            let lines: Vec<String> = self.commands().lrange(transcript_key(key), end - PAGE + 1, end).await?;
            let found = lines
                .iter()
                .rev()
                .filter_map(|line| parse_entry(line))
                .find(|entry| entry.role == Role::Assistant && entry.message_id == message_id);
            if found.is_some() || (lines.len() as isize) < PAGE {
                return Ok(found);
            }
            end -= PAGE;
        }
    }

    fn lease_ms(&self) -> u64 {
        self.lease.as_millis() as u64
    }
}

/// One stored transcript line; a line that does not parse is skipped (logged).
fn parse_entry(line: &str) -> Option<TranscriptEntry> {
    serde_json::from_str(line)
        .inspect_err(|error| log::warn!("cluster: a transcript entry in Redis is not valid ({error}); skipped"))
        .ok()
}

/// The default node id: this machine's hostname and the port.
pub fn default_node_id(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "node".to_string());
    format!("{host}:{port}")
}

/// What reserving a user's agent in the shared registry found.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentReservation {
    /// The user has this agent (reserved now, or created earlier by any node).
    Agent(AgentRecord),
    /// `maxAgents` agents exist: the user talks to the default agent.
    AtLimit,
}

/// The shared dynamic-agent registry: sender id → record, and the agent ids given.
const AGENTS_KEY: &str = "cs:{agents}";
const AGENT_IDS_KEY: &str = "cs:{agents}:ids";

/// KEYS: registry, ids. ARGV: sender, record, its id, fallback record, its id, max.
/// The fallback (the hashed id) is taken when the first id is already given.
const RESERVE_AGENT: &str = r"local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then return existing end
local max = tonumber(ARGV[6])
if max > 0 and redis.call('HLEN', KEYS[1]) >= max then return '' end
local record, id = ARGV[2], ARGV[3]
if redis.call('SISMEMBER', KEYS[2], string.lower(id)) == 1 then record, id = ARGV[4], ARGV[5] end
redis.call('HSET', KEYS[1], ARGV[1], record)
redis.call('SADD', KEYS[2], string.lower(id))
return record";

impl Cluster {
    /// Gives `sender` its agent in the shared registry, atomically across nodes:
    /// the one it has, else `planned` (or `fallback` when `planned`'s id is given),
    /// unless `max_agents` (0 = no limit) agents exist.
    pub async fn reserve_agent(
        &self,
        sender: &str,
        planned: &AgentRecord,
        fallback: &AgentRecord,
        max_agents: usize,
    ) -> Result<AgentReservation, ClusterError> {
        let json = |record: &AgentRecord| serde_json::to_string(record).unwrap_or_default();
        let reply: String = self
            .scripts
            .reserve_agent
            .key(AGENTS_KEY)
            .key(AGENT_IDS_KEY)
            .arg(sender)
            .arg(json(planned))
            .arg(&planned.agent_id)
            .arg(json(fallback))
            .arg(&fallback.agent_id)
            .arg(max_agents)
            .invoke_async(&mut self.commands())
            .await?;
        if reply.is_empty() {
            return Ok(AgentReservation::AtLimit);
        }
        let record = serde_json::from_str(&reply).map_err(|error| ClusterError::Unexpected(error.to_string()))?;
        Ok(AgentReservation::Agent(record))
    }
}

impl Cluster {
    /// `sender`'s agent in the shared registry, if any node created one.
    pub async fn find_agent(&self, sender: &str) -> Result<Option<AgentRecord>, ClusterError> {
        let found: Option<String> = self.commands().hget(AGENTS_KEY, sender).await?;
        found
            .map(|json| serde_json::from_str(&json).map_err(|error| ClusterError::Unexpected(error.to_string())))
            .transpose()
    }
}
