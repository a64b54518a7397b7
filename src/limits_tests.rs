use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_full_bucket_allows_a_burst_of_its_capacity_then_refuses() {
    let start = Instant::now();
    let mut bucket = TokenBucket::per_minute(3, start);
    assert!((0..3).all(|_| bucket.try_take(start)));
    assert!(!bucket.try_take(start));
}

#[test]
fn the_bucket_refills_per_minute_at_its_capacity() {
    let start = Instant::now();
    let mut bucket = TokenBucket::per_minute(60, start);
    assert!((0..60).all(|_| bucket.try_take(start)));
    // 60 per minute is one per second: not yet at 999 ms, one at 1000 ms.
    assert!(!bucket.try_take(start + ms(999)));
    assert!(bucket.try_take(start + ms(1000)));
    assert!(!bucket.try_take(start + ms(1000)));
}

#[test]
fn fractions_of_a_millisecond_are_not_lost_between_close_messages() {
    let start = Instant::now();
    let mut bucket = TokenBucket::per_minute(60, start);
    assert!((0..60).all(|_| bucket.try_take(start)));
    let mut now = start;
    for _ in 0..1999 {
        now += Duration::from_micros(500);
        assert!(!bucket.try_take(now), "less than a second has passed");
    }
    now += Duration::from_micros(500);
    assert!(bucket.try_take(now), "exactly one second: one token");
}

#[test]
fn a_long_pause_refills_to_capacity_and_no_more() {
    let start = Instant::now();
    let mut bucket = TokenBucket::per_minute(5, start);
    assert!((0..5).all(|_| bucket.try_take(start)));
    let later = start + Duration::from_secs(3600 * 24 * 365);
    assert!((0..5).all(|_| bucket.try_take(later)));
    assert!(!bucket.try_take(later));
}

#[test]
fn the_largest_limit_does_not_overflow() {
    let start = Instant::now();
    let mut bucket = TokenBucket::per_minute(u32::MAX, start);
    assert!(bucket.try_take(start));
    assert!(bucket.try_take(start + Duration::from_secs(3600 * 24 * 365 * 100)));
}

#[test]
fn a_flooder_gets_ten_warnings_then_is_closed() {
    let start = Instant::now();
    let mut limiter = RateLimiter::per_minute(2, start);
    assert_eq!([limiter.check(start), limiter.check(start)], [Verdict::Accept; 2]);
    for warning in 1..=FLOOD_WARNINGS {
        assert_eq!(limiter.check(start), Verdict::Warn, "warning {warning}");
    }
    assert_eq!(limiter.check(start), Verdict::Close);
}

#[test]
fn warnings_are_counted_per_window_and_accepted_messages_do_not_reset_them() {
    let start = Instant::now();
    let mut limiter = RateLimiter::per_minute(2, start);
    assert_eq!([limiter.check(start), limiter.check(start)], [Verdict::Accept; 2]);
    for _ in 0..FLOOD_WARNINGS - 1 {
        assert_eq!(limiter.check(start), Verdict::Warn);
    }
    // A minute later both tokens are back, and the window of the first refusal is over.
    let later = start + FLOOD_WINDOW;
    assert_eq!([limiter.check(later), limiter.check(later)], [Verdict::Accept; 2]);
    for _ in 0..FLOOD_WARNINGS {
        assert_eq!(limiter.check(later), Verdict::Warn, "a new window gives new warnings");
    }
    // Half a minute on, one token is back; the refusals of this window still count.
    let within = later + Duration::from_secs(30);
    assert_eq!(limiter.check(within), Verdict::Accept);
    assert_eq!(limiter.check(within), Verdict::Close);
}

#[test]
fn connection_slots_are_bounded_and_given_back_on_drop() {
    let slots = ConnectionSlots::new(2);
    let first = slots.try_acquire().expect("room for one");
    let second = slots.try_acquire().expect("room for two");
    assert_eq!(slots.try_acquire().err(), Some(SlotRefusal::Full));
    assert_eq!(slots.open(), 2);
    drop(first);
    assert_eq!(slots.open(), 1);
    let third = slots.try_acquire().expect("a freed slot is reused");
    drop((second, third));
    assert_eq!(slots.open(), 0);
}

#[test]
fn closed_slots_refuse_every_new_connection_but_keep_counting_the_open_ones() {
    let slots = ConnectionSlots::new(10);
    let open = slots.try_acquire().expect("room");
    slots.close();
    assert_eq!(slots.try_acquire().err(), Some(SlotRefusal::ShuttingDown));
    assert_eq!(slots.open(), 1);
    drop(open);
    assert_eq!(slots.open(), 0);
}

#[test]
fn slots_hold_their_bound_under_concurrent_handshakes() {
    let slots = ConnectionSlots::new(50);
    let taken: Vec<Vec<ConnectionSlot>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| (0..100).filter_map(|_| slots.try_acquire().ok()).collect::<Vec<_>>()))
            .collect();
        workers.into_iter().map(|worker| worker.join().expect("worker")).collect()
    });
    assert_eq!(taken.iter().map(Vec::len).sum::<usize>(), 50);
    assert_eq!(slots.open(), 50);
    drop(taken);
    assert_eq!(slots.open(), 0);
}

#[test]
fn a_byte_budget_takes_what_fits_and_gets_it_back() {
    let budget = ByteBudget::new(100);
    assert!(budget.try_reserve(60) && budget.try_reserve(40));
    assert!(!budget.try_reserve(1), "full");
    budget.release(50);
    assert!(budget.try_reserve(50) && !budget.try_reserve(1));
    assert!(!budget.try_reserve(usize::MAX), "no overflow");
    budget.release(1_000);
    assert!(budget.try_reserve(100) && !budget.try_reserve(1), "never below zero");
    budget.release(100);
    assert!(budget.try_admit(500), "one message larger than the budget goes on an empty queue");
    assert!(!budget.try_admit(1), "the next one waits until it is under the limit again");
    budget.release(450);
    assert!(budget.try_admit(1));
}

#[test]
fn a_user_gets_max_connections_and_each_closed_one_back() {
    let users = LocalUserConnections::new();
    let first = users.try_acquire("alice", 2).unwrap();
    let _second = users.try_acquire("alice", 2).unwrap();
    assert!(users.try_acquire("alice", 2).is_none());
    assert!(users.try_acquire("bob", 2).is_some(), "another user is not affected");
    assert!(users.try_acquire("alice", 3).is_some(), "a user with a higher limit (a tier) gets more");
    drop(first);
    assert!(users.try_acquire("alice", 4).is_some());
    let held: Vec<_> = (0..50).filter_map(|_| users.try_acquire("x", 0)).collect();
    assert_eq!(held.len(), 50, "0 is no limit");
}

#[test]
fn user_counts_add_under_a_limit_remove_and_forget_users_at_zero() {
    let counts = UserCounts::default();
    assert!(counts.try_add("alice", 2) && counts.try_add("alice", 2));
    assert!(!counts.try_add("alice", 2), "at the limit");
    assert!(counts.try_add("alice", 0), "0 is no limit (a connection Redis admitted)");
    assert!(counts.try_add("bob", 2));
    let mut snapshot = counts.snapshot();
    snapshot.sort();
    assert_eq!(snapshot, [("alice".to_string(), 3), ("bob".to_string(), 1)]);
    counts.remove("bob");
    counts.remove("nobody");
    assert_eq!(counts.snapshot(), [("alice".to_string(), 3)], "a user at zero is forgotten");
}

#[actix_rt::test]
async fn without_a_cluster_the_counts_are_this_process_s() {
    let users = UserConnections::for_settings(None);
    assert!(matches!(users, UserConnections::Local(_)));
    let first = users.try_acquire("alice", 1).await.expect("a place");
    assert!(users.try_acquire("alice", 1).await.is_none());
    users.heartbeat(false).await;
    drop(first);
    assert!(users.try_acquire("alice", 1).await.is_some());
}
