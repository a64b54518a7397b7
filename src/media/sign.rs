//! Signed media links: `GET /media/{id}?expires=…&signature=…` serves the file
//! without credentials until `expires` (Unix seconds). They are what the agent is
//! given under `channels.websocket.media.publicBaseUrl` (it has no user token). The
//! signature is HMAC-SHA256 over the id and the expiry with a key of 32 random bytes
//! kept in the media directory (`.link-key`, created once; in a cluster the directory
//! is shared, so every node signs and checks with the same key).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// How long a signed link works, seconds.
pub const LINK_SECS: u64 = 3600;
/// The key's file in the media directory (not a name `path_safe` can produce).
const KEY_FILE: &str = ".link-key";
const BLOCK: usize = 64;

/// Signs and checks links.
pub struct Signer {
    key: [u8; 32],
}

impl Signer {
    /// The media directory's key, created (atomically: a temp file hard-linked into
    /// place, so two nodes starting at once agree on one) when there is none.
    pub fn load_or_create(dir: &Path) -> io::Result<Signer> {
        fs::create_dir_all(dir)?;
        let path = dir.join(KEY_FILE);
        if !path.exists() {
            let mut key = Vec::with_capacity(32);
            key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            let temp = dir.join(format!("{KEY_FILE}.{}.tmp", uuid::Uuid::new_v4().simple()));
            // Readable by this service's user only: whoever reads it can sign links.
            let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp)?;
            file.write_all(&key)?;
            file.sync_all()?;
            let linked = fs::hard_link(&temp, &path);
            let _ = fs::remove_file(&temp);
            match linked {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(error),
            }
        }
        let bytes = fs::read(&path)?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{} is not 32 bytes", path.display())))?;
        Ok(Signer { key })
    }

    /// A signer with this key (tests).
    pub fn with_key(key: [u8; 32]) -> Signer {
        Signer { key }
    }

    /// The signature (hex) of `id`'s link expiring at `expires`.
    pub fn signature(&self, id: &str, expires: u64) -> String {
        hex(&hmac_sha256(&self.key, format!("{id}\n{expires}").as_bytes()))
    }

    /// Whether `signature` is `id`'s for `expires`, and `expires` is not past `now`.
    pub fn verify(&self, id: &str, expires: u64, signature: &str, now: u64) -> bool {
        expires >= now && constant_time_eq(self.signature(id, expires).as_bytes(), signature.as_bytes())
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|key_byte| key_byte ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Equal without telling, by its timing, where two values first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |differs, (x, y)| differs | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2: key "Jefe".
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex(&mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn a_link_works_until_it_expires_and_only_for_its_id() {
        let signer = Signer::with_key([7; 32]);
        let signature = signer.signature("abc", 1000);
        assert!(signer.verify("abc", 1000, &signature, 999));
        assert!(signer.verify("abc", 1000, &signature, 1000));
        assert!(!signer.verify("abc", 1000, &signature, 1001), "expired");
        assert!(!signer.verify("abd", 1000, &signature, 999), "another id");
        assert!(!signer.verify("abc", 2000, &signature, 999), "another expiry");
        assert!(!signer.verify("abc", 1000, "00", 999));
    }

    #[test]
    fn two_loads_of_one_directory_share_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = Signer::load_or_create(dir.path()).unwrap();
        let second = Signer::load_or_create(dir.path()).unwrap();
        assert_eq!(first.signature("x", 1), second.signature("x", 1));
        let other = Signer::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert_ne!(first.signature("x", 1), other.signature("x", 1));
    }
}
