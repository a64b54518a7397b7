use super::*;

#[test]
fn a_user_runs_a_few_uploads_at_once_and_gets_places_back() {
    let slots = Arc::new(UploadSlots::default());
    let held: Vec<UploadSlot> = (0..PER_USER).map(|_| slots.admit("alice").expect("a place")).collect();
    assert!(slots.admit("alice").is_none(), "past PER_USER");
    assert!(slots.admit("bob").is_some(), "another user is not held back");
    drop(held);
    assert!(slots.admit("alice").is_some(), "places come back");
    let many: Vec<UploadSlot> =
        (0..SERVER_WIDE).filter_map(|n| slots.admit(&format!("user{}", n / PER_USER))).collect();
    assert_eq!(many.len(), SERVER_WIDE);
    assert!(slots.admit("someone").is_none(), "past SERVER_WIDE");
}
