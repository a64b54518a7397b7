//! The Redis test helper (`support::redis`) itself: what the cluster tests rely on, a
//! write acknowledged by Redis survives a SIGKILL and restart (AOF, `appendfsync always`).

use crate::support::redis::RedisServer;

#[test]
fn a_key_set_before_a_sigkill_is_there_after_the_restart() {
    let mut redis = RedisServer::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(redis.command(&["SET", "k", "v"]), "OK");
    redis.kill();
    redis.kill();
    redis.restart();
    assert_eq!(redis.command(&["GET", "k"]), "v");
}
