use super::*;

#[test]
fn values_expire_after_the_ttl() {
    let cache: TtlCache<&str, u32> = TtlCache::new(Duration::from_secs(60), 10);
    let now = Instant::now();
    cache.put("a", 1, now);
    assert_eq!(cache.get(&"a", now + Duration::from_secs(59)), Some(1));
    assert_eq!(cache.get(&"a", now + Duration::from_secs(60)), None);
    cache.put("a", 2, now + Duration::from_secs(30));
    assert_eq!(cache.get(&"a", now + Duration::from_secs(80)), Some(2), "put again: the later expiry holds");
}

#[test]
fn a_full_cache_drops_its_oldest() {
    let cache: TtlCache<u32, u32> = TtlCache::new(Duration::from_secs(60), 100);
    let now = Instant::now();
    for n in 0..150 {
        cache.put(n, n, now);
    }
    assert_eq!(cache.count(), 100);
    assert_eq!(cache.get(&0, now), None);
    assert_eq!(cache.get(&149, now), Some(149));
}
