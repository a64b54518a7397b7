//! How many uploads run at once: a few per user and a bound for the server, so that
//! bodies that stall (a slow-loris client) cannot hold file descriptors and temp files
//! without end. Each upload also ends when no byte of its body comes for
//! `limits.heartbeat.timeoutMs` (`MediaStore::upload`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Uploads one user may run at once.
pub const PER_USER: usize = 4;
/// Uploads the server runs at once (each holds a socket and a temp file).
pub const SERVER_WIDE: usize = 256;

/// The uploads running now: in all, and per user.
#[derive(Debug, Default)]
pub struct UploadSlots {
    held: Mutex<(usize, HashMap<String, usize>)>,
}

/// One running upload's place, given back when dropped (however the upload ends).
#[derive(Debug)]
pub struct UploadSlot {
    slots: Arc<UploadSlots>,
    owner: String,
}

impl UploadSlots {
    /// A place for an upload of `owner`, unless they or the server run the most already.
    pub fn admit(self: &Arc<Self>, owner: &str) -> Option<UploadSlot> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, users) = &mut *held;
        let mine = users.get(owner).copied().unwrap_or(0);
        if *total >= SERVER_WIDE || mine >= PER_USER {
            return None;
        }
        *total += 1;
        users.insert(owner.to_string(), mine + 1);
        Some(UploadSlot { slots: self.clone(), owner: owner.to_string() })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, users) = &mut *held;
        *total = total.saturating_sub(1);
        if let Some(mine) = users.get_mut(&self.owner) {
            *mine -= 1;
            if *mine == 0 {
                users.remove(&self.owner);
            }
        }
    }
}

#[cfg(test)]
#[path = "slots_tests.rs"]
mod tests;
