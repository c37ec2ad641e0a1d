//! Encryption of user secrets at rest with the cluster key (AES-256-GCM, ring).
//!
//! HMAC verification needs each secret itself, so secrets cannot be hashed; they are stored
//! (Raft log, snapshots) only as `v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`, sealed
//! with a random 96-bit nonce and the user name as associated data (a ciphertext copied to
//! another user does not open). The key id is the first 8 hex digits of SHA-256(key), so a
//! server can tell which of its keys sealed a secret.
//!
//! Rotation: give every node the new key as `cluster_key` and the old one in
//! `previous_cluster_keys`, restart them one by one, then re-set each password
//! (`comet user update <name> --password …`), which seals it under the new key; once no
//! secret names the old key id (`comet user list` shows it), drop the old key.

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{AuthError, Result};

/// Length of a cluster key in bytes.
pub const KEY_LEN: usize = 32;
const PREFIX: &str = "v1";

/// One AES-256 key with its id.
struct Key {
    id: String,
    key: LessSafeKey,
}

/// Seals and opens secrets with the cluster key (and opens with previous keys).
pub struct SecretCipher {
    primary: Key,
    previous: Vec<Key>,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCipher")
            .field("key_id", &self.primary.id)
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Reads a key written as 64 hex digits or as base64 of 32 bytes (surrounding whitespace
/// ignored, so a file may end with a newline).
///
/// # Errors
/// [`AuthError::Key`] when it is neither.
pub fn parse_key(text: &str) -> Result<[u8; KEY_LEN]> {
    let text = text.trim();
    let mut key = [0u8; KEY_LEN];
    if text.len() == 2 * KEY_LEN && hex::decode_to_slice(text, &mut key).is_ok() {
        return Ok(key);
    }
    match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(bytes) if bytes.len() == KEY_LEN => {
            key.copy_from_slice(&bytes);
            Ok(key)
        }
        _ => Err(AuthError::Key(
            "expected 32 bytes written as 64 hex digits or base64 (e.g. `openssl rand -hex 32`)"
                .to_owned(),
        )),
    }
}

fn make_key(bytes: &[u8; KEY_LEN]) -> Result<Key> {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let id = hex::encode(&digest.as_ref()[..4]);
    let unbound = UnboundKey::new(&AES_256_GCM, bytes)
        .map_err(|_| AuthError::Key("rejected by AES-256-GCM".into()))?;
    Ok(Key {
        id,
        key: LessSafeKey::new(unbound),
    })
}

impl SecretCipher {
    /// A cipher sealing with `primary` and opening with it or any of `previous`.
    ///
    /// # Errors
    /// [`AuthError::Key`] for an unusable key.
    pub fn new(primary: &[u8; KEY_LEN], previous: &[[u8; KEY_LEN]]) -> Result<Self> {
        Ok(SecretCipher {
            primary: make_key(primary)?,
            previous: previous.iter().map(make_key).collect::<Result<_>>()?,
            rng: SystemRandom::new(),
        })
    }

    /// Id of the key new secrets are sealed with.
    pub fn key_id(&self) -> &str {
        &self.primary.id
    }

    /// Seals `secret` for user `name`.
    ///
    /// # Errors
    /// [`AuthError::Secret`] when the system random source fails.
    pub fn seal(&self, name: &str, secret: &[u8]) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| AuthError::Secret("the system random source failed".into()))?;
        let mut buf = secret.to_vec();
        self.primary
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .map_err(|_| AuthError::Secret("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!(
            "{PREFIX}:{}:{}",
            self.primary.id,
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Opens a secret sealed for user `name`.
    ///
    /// # Errors
    /// [`AuthError::Secret`] when it is malformed, sealed with an unknown key, or altered.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Vec<u8>> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(PREFIX), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Secret(format!(
                "user {name}: not a v1:<key id>:<data> secret"
            )));
        };
        let key = std::iter::once(&self.primary)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| {
                AuthError::Secret(format!(
                    "user {name}: sealed with key {id}, which is neither cluster_key ({}) nor in previous_cluster_keys",
                    self.primary.id
                ))
            })?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| AuthError::Secret(format!("user {name}: data is not base64")))?;
        if raw.len() < NONCE_LEN {
            return Err(AuthError::Secret(format!("user {name}: data too short")));
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| AuthError::Secret(format!("user {name}: bad nonce")))?;
        let mut buf = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf)
            .map_err(|_| {
                AuthError::Secret(format!(
                    "user {name}: does not open with key {id} (altered, or sealed for another user)"
                ))
            })?;
        Ok(plain.to_vec())
    }

    /// The key id a sealed secret names, if it is well-formed.
    pub fn key_id_of(sealed: &str) -> Option<&str> {
        let mut parts = sealed.splitn(3, ':');
        match (parts.next(), parts.next()) {
            (Some(PREFIX), Some(id)) => Some(id),
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn given_a_sealed_secret_when_opening_should_round_trip_and_hide_the_plaintext() {
        let key = parse_key(K1).unwrap();
        let c = SecretCipher::new(&key, &[]).unwrap();
        let sealed = c.seal("alice", b"alice-secret").unwrap();
        assert!(!sealed.contains("alice-secret"));
        assert_eq!(SecretCipher::key_id_of(&sealed), Some(c.key_id()));
        assert_eq!(c.open("alice", &sealed).unwrap(), b"alice-secret");
        assert!(c.open("bob", &sealed).is_err(), "bound to the user name");
        assert_ne!(
            sealed,
            c.seal("alice", b"alice-secret").unwrap(),
            "fresh nonce"
        );
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(c.open("alice", &tampered).is_err());
    }

    #[test]
    fn given_a_rotated_key_when_opening_old_secrets_should_use_the_previous_key() {
        let old = parse_key(K1).unwrap();
        let new = [7u8; KEY_LEN];
        let sealed = SecretCipher::new(&old, &[])
            .unwrap()
            .seal("u", b"s")
            .unwrap();
        let rotated = SecretCipher::new(&new, &[old]).unwrap();
        assert_eq!(rotated.open("u", &sealed).unwrap(), b"s");
        let err = SecretCipher::new(&new, &[])
            .unwrap()
            .open("u", &sealed)
            .unwrap_err();
        assert!(err.to_string().contains("previous_cluster_keys"), "{err}");
    }

    #[test]
    fn given_key_texts_when_parsing_should_accept_hex_and_base64_only() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert_eq!(parse_key(&format!("{b64}\n")).unwrap(), [9u8; 32]);
        assert!(parse_key(K1).is_ok());
        assert!(parse_key("short").is_err());
        assert!(parse_key(&K1[..62]).is_err());
    }
}
