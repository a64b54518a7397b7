use std::sync::atomic::AtomicUsize;

use actix::{Actor, Context, Handler};

use super::*;

fn key(name: &str) -> SessionKey {
    crate::identity::SessionTarget { chat: crate::identity::Chat::Direct(name.into()), thread_id: None }.key("main")
}

/// A session stand-in that counts its wake-ups.
struct Sleeper(Arc<AtomicUsize>);

impl Actor for Sleeper {
    type Context = Context<Self>;
}

impl Handler<SlotFreed> for Sleeper {
    type Result = ();

    fn handle(&mut self, _: SlotFreed, _: &mut Self::Context) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[actix_rt::test]
async fn a_user_runs_max_turns_and_a_waiter_is_woken_when_one_ends() {
    let gate = TurnGate::Local(LocalGate::new());
    let woken = Arc::new(AtomicUsize::new(0));
    let sleeper = Sleeper(woken.clone()).start().recipient();
    let take = |session: &str| match gate.acquire("alice", 2, &key(session), sleeper.clone()) {
        Acquire::Now(permit) => permit,
        Acquire::Later(_) => panic!("a local gate answers at once"),
    };
    let first = take("t1").expect("one");
    let _second = take("t2").expect("two");
    assert!(take("t3").is_none(), "the third waits");
    assert!(take("t3").is_none(), "asking again registers once");
    let other = match gate.acquire("bob", 2, &key("b"), sleeper.clone()) {
        Acquire::Now(permit) => permit,
        Acquire::Later(_) => unreachable!(),
    };
    assert!(other.is_some(), "another user is not affected");
    assert_eq!(gate.running_here("alice").len(), 2);
    drop(first);
    actix_rt::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(woken.load(Ordering::SeqCst), 1, "the waiting session was woken once");
    assert!(take("t3").is_some(), "and gets the freed place");
    let unlimited = match gate.acquire("carol", 0, &key("c"), sleeper.clone()) {
        Acquire::Now(permit) => permit,
        Acquire::Later(_) => unreachable!(),
    };
    assert!(unlimited.is_some());
    assert_eq!(gate.retry_after(), None);
}

#[test]
fn a_user_with_no_turn_left_is_forgotten() {
    let gate = LocalGate::new();
    let id = gate.try_take("alice", 1, &key("a"), None).unwrap();
    assert!(gate.give_back("alice", id).is_empty());
    assert!(gate.users.lock().unwrap().is_empty());
}
