//! Conversations in a cluster (SPEC §11, §14): each owner's index is a Redis hash of
//! entries by thread (`cs:threads:{owner}`) with a sorted set of its threads by last
//! activity (`cs:threads-order:{owner}`), written with each turn by the append script
//! (`cluster.rs`), so index and transcript never disagree. A running turn is marked
//! by `cs:run:{session}` (its message id, expiring after the turn timeout, so a node
//! that dies mid-turn leaves no turn listed as running for long).

use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};

use crate::cluster::{
    answered_key, conversation_field, conversations_key, conversations_order_key, lease_key, stream_key,
    transcript_key, Cluster, ClusterError,
};
use crate::conversations::ThreadSummary;
use crate::identity::{Chat, SessionKey};

/// KEYS: lease, transcript, answered ids, stream, index, index order. ARGV: lease
/// value, the thread's field. Deletes the conversation if this node holds the lease.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
        redis.call('HDEL', KEYS[5], ARGV[2])
        redis.call('ZREM', KEYS[6], ARGV[2])
        return 1",
    )
});

/// KEYS: index. ARGV: the thread's field, the title. Answers the named entry, or nil
/// when the index has no such thread.
static TITLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local stored = redis.call('HGET', KEYS[1], ARGV[1])
        if not stored then return false end
        local ok, entry = pcall(cjson.decode, stored)
        if not ok or type(entry) ~= 'table' then return false end
        entry.title = ARGV[2]
        entry.titled = true
        local encoded = cjson.encode(entry)
        redis.call('HSET', KEYS[1], ARGV[1], encoded)
        return encoded",
    )
});

fn running_key(key: &str) -> String {
    format!("cs:run:{{{key}}}")
}

impl Cluster {
    /// Deletes a conversation (transcript, idempotency record, event stream and index
    /// entry) if this node still holds `lease`.
    pub async fn delete_conversation(
        &self,
        key: &SessionKey,
        lease: &str,
        owner: &Chat,
        thread_id: &str,
    ) -> Result<(), ClusterError> {
        let deleted: i64 = DELETE
            .key(lease_key(key))
            .key(transcript_key(key))
            .key(answered_key(key))
            .key(stream_key(key))
            .key(conversations_key(owner))
            .key(conversations_order_key(owner))
            .arg(lease)
            .arg(conversation_field(Some(thread_id)))
            .invoke_async(&mut self.commands())
            .await?;
        match deleted {
            1 => Ok(()),
            _ => Err(ClusterError::LeaseLost),
        }
    }

    /// The `limit` most recently active conversations of `owner`, newest first, with
    /// the turns running now. An entry that does not decode is left out (logged).
    pub async fn list_conversations(&self, owner: &Chat, limit: usize) -> Result<Vec<ThreadSummary>, ClusterError> {
        let fields: Vec<String> =
            self.commands().zrevrange(conversations_order_key(owner), 0, limit.max(1) as isize - 1).await?;
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<Option<String>> =
            redis::cmd("HMGET").arg(conversations_key(owner)).arg(&fields).query_async(&mut self.commands()).await?;
        let mut sessions: Vec<ThreadSummary> = stored.iter().flatten().filter_map(|json| decode_entry(json)).collect();
        let mut running = redis::pipe();
        for session in &sessions {
            running.get(running_key(&session.session_key));
        }
        let in_flight: Vec<Option<String>> = running.query_async(&mut self.commands()).await?;
        for (session, message_id) in sessions.iter_mut().zip(in_flight) {
            session.in_flight = message_id;
        }
        Ok(sessions)
    }

    /// Names a conversation of `owner`; `None` when its index has no such thread.
    pub async fn title_conversation(
        &self,
        owner: &Chat,
        thread_id: Option<&str>,
        title: &str,
    ) -> Result<Option<ThreadSummary>, ClusterError> {
        let named: Option<String> = TITLE
            .key(conversations_key(owner))
            .arg(conversation_field(thread_id))
            .arg(title)
            .invoke_async(&mut self.commands())
            .await?;
        Ok(named.as_deref().and_then(decode_entry))
    }

    /// Marks the turn running in `key` (`None`: none), for listings on every node;
    /// the mark expires after `ttl` in case this node dies first.
    pub async fn mark_running(
        &self,
        key: &SessionKey,
        message_id: Option<&str>,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        let mut commands = self.commands();
        match message_id {
            Some(id) => commands.pset_ex::<_, _, ()>(running_key(key.as_str()), id, ttl.as_millis() as u64).await?,
            None => commands.del::<_, ()>(running_key(key.as_str())).await?,
        }
        Ok(())
    }
}

fn decode_entry(json: &str) -> Option<ThreadSummary> {
    serde_json::from_str(json)
        .inspect_err(|error| log::warn!("cluster: a conversation index entry is not valid ({error}); not listed"))
        .ok()
}
