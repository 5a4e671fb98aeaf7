//! The keys that seal tool credentials, and sealing and opening with them.
//!
//! A sealed value is `nonce (24 bytes) || ciphertext || tag (16 bytes)` under XChaCha20-Poly1305,
//! with a fresh random nonce per seal. The associated data binds it to its place,
//! `(org_id, tool_id, field, key_id)`: a ciphertext copied onto another tool, another
//! organization or another column, or relabelled with another key's id, does not open.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::config::{ConfigError, Secret};

const NONCE_BYTES: usize = 24;
const KEY_BYTES: usize = 32;
/// Names the format in the associated data, so that a later format cannot be confused with it.
const CONTEXT: &[u8] = b"tolstoy credentials v1";
/// The longest key id accepted (the column holds 64 characters).
const MAX_KEY_ID_CHARS: usize = 64;

/// One 256-bit key: wiped from memory when dropped, never printed.
struct Key(Zeroizing<[u8; KEY_BYTES]>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key([redacted])")
    }
}

/// The configured keys, by id; the first seals, every one opens.
pub struct Keyring {
    keys: Vec<(String, Key)>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

/// Credentials as stored: the id of the key that sealed them and the sealed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl Sealed {
    /// What `tool` stores, when it has credentials.
    pub fn of_tool(tool: &entity::tool::Model) -> Option<Self> {
        Some(Self {
            key_id: tool.credentials_key_id.clone()?,
            bytes: tool.credentials_sealed.clone()?,
        })
    }
}

/// Sealed credentials that do not open: tampered with, moved to another row, or sealed under a
/// key that is no longer configured. Deliberately says no more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stored credentials do not open (tampered with, moved, or sealed under a key that is not configured)")]
pub struct Unreadable;

/// There is no key to seal with: storing credentials is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no CREDENTIALS_KEY is configured, so credentials cannot be stored")]
pub struct NoSealingKey;

impl Keyring {
    /// No keys: nothing can be sealed, and stored credentials do not open.
    pub fn empty() -> Self {
        Self { keys: Vec::new() }
    }

    /// The keys of `CREDENTIALS_KEYS` (`id:base64,id:base64`, the first seals) or of
    /// `CREDENTIALS_KEY` (one base64 key, its id derived from it). An entry without `id:` gets
    /// the derived id too, so that a key keeps its id when it moves from one variable to the
    /// other.
    pub fn parse(variable: &'static str, text: &Secret) -> Result<Self, ConfigError> {
        let mut keys: Vec<(String, Key)> = Vec::new();
        for entry in text
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (id, encoded) = match entry.split_once(':') {
                Some((id, encoded)) => (Some(id.trim()), encoded.trim()),
                None => (None, entry),
            };
            let key = decode_key(encoded).map_err(|message| ConfigError::new(variable, message))?;
            let id = match id {
                Some(id) => {
                    if id.is_empty()
                        || id.len() > MAX_KEY_ID_CHARS
                        || !id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    {
                        return Err(ConfigError::new(
                            variable,
                            format!(
                                "a key id must be 1 to {MAX_KEY_ID_CHARS} letters, digits, \
                                 '-', '_' or '.'"
                            ),
                        ));
                    }
                    id.to_owned()
                }
                None => fingerprint(&key),
            };
            if keys.iter().any(|(known, _)| *known == id) {
                return Err(ConfigError::new(
                    variable,
                    format!("the key id {id} is given twice"),
                ));
            }
            keys.push((id, key));
        }
        if keys.is_empty() {
            return Err(ConfigError::new(variable, "holds no key"));
        }
        Ok(Self { keys })
    }

    /// The development key in `path`, made (32 random bytes, base64, mode 0600) when the file
    /// does not exist yet.
    pub fn development(path: &Path) -> Result<Self, ConfigError> {
        let variable = "CREDENTIALS_KEY";
        let unusable = |err: std::io::Error| {
            ConfigError::new(
                variable,
                format!(
                    "is unset and the development key file {} cannot be used: {err}",
                    path.display()
                ),
            )
        };
        match std::fs::read_to_string(path).map(Zeroizing::new) {
            Ok(text) => {
                let keyring = Self::parse(variable, &Secret::new(text.trim()))?;
                tracing::info!(path = %path.display(), key_id = %keyring.sealing_key_id().unwrap_or_default(),
                    "CREDENTIALS_KEY is unset: using the development key file");
                Ok(keyring)
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut key = Zeroizing::new([0u8; KEY_BYTES]);
                OsRng.fill_bytes(key.as_mut());
                let encoded = Zeroizing::new(STANDARD.encode(key.as_ref()));
                match write_private(path, encoded.as_bytes()) {
                    Ok(()) => {}
                    // Another process (a worker started beside the server) made it first.
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        return Self::development(path);
                    }
                    Err(err) => return Err(unusable(err)),
                }
                let keyring = Self::parse(variable, &Secret::new(encoded.as_str()))?;
                tracing::warn!(path = %path.display(), key_id = %keyring.sealing_key_id().unwrap_or_default(),
                    "CREDENTIALS_KEY is unset: generated a development key into this file (mode 0600); \
                     losing it makes stored credentials unreadable");
                Ok(keyring)
            }
            Err(err) => Err(unusable(err)),
        }
    }

    /// The id of the key new seals use; `None` when no key is configured.
    pub fn sealing_key_id(&self) -> Option<&str> {
        self.keys.first().map(|(id, _)| id.as_str())
    }

    /// Seals `plaintext` as the `field` of tool `tool_id` of organization `org_id`.
    pub fn seal(
        &self,
        org_id: Uuid,
        tool_id: Uuid,
        field: &str,
        plaintext: &[u8],
    ) -> Result<Sealed, NoSealingKey> {
        let (key_id, key) = self.keys.first().ok_or(NoSealingKey)?;
        let cipher = XChaCha20Poly1305::new(key.0.as_ref().into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = associated_data(org_id, tool_id, field, key_id);
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // Only a message beyond 256 GiB fails to encrypt.
            .map_err(|_| NoSealingKey)?;
        let mut bytes = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ciphertext);
        Ok(Sealed {
            key_id: key_id.clone(),
            bytes,
        })
    }

    /// Opens what [`Keyring::seal`] sealed for the same place.
    pub fn open(
        &self,
        org_id: Uuid,
        tool_id: Uuid,
        field: &str,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, Unreadable> {
        let (key_id, key) = self
            .keys
            .iter()
            .find(|(id, _)| *id == sealed.key_id)
            .ok_or(Unreadable)?;
        if sealed.bytes.len() < NONCE_BYTES {
            return Err(Unreadable);
        }
        let (nonce, ciphertext) = sealed.bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| Unreadable)?;
        let cipher = XChaCha20Poly1305::new(key.0.as_ref().into());
        let aad = associated_data(org_id, tool_id, field, key_id);
        cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Unreadable)
    }
}

/// Where the development key lives: beside the SQLite database file, or in the working
/// directory when the database is not a file.
pub fn development_key_path(database_url: &str) -> PathBuf {
    let file = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or_default())
        .filter(|path| !path.is_empty() && !path.contains(":memory:"));
    match file {
        Some(path) => PathBuf::from(format!("{path}.credentials-key")),
        None => PathBuf::from("tolstoy.credentials-key"),
    }
}

fn decode_key(encoded: &str) -> Result<Key, String> {
    let bytes = Zeroizing::new(
        STANDARD
            .decode(encoded)
            .map_err(|_| "a key must be 32 bytes in standard base64".to_owned())?,
    );
    let array: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "a key must be 32 bytes in standard base64 (this one is {} bytes)",
            bytes.len()
        )
    })?;
    Ok(Key(Zeroizing::new(array)))
}

/// `k` and the first 12 hex digits of the key's SHA-256: names a key without revealing it.
fn fingerprint(key: &Key) -> String {
    let digest = Sha256::digest(key.0.as_slice());
    format!("k{}", &hex::encode(digest)[..12])
}

fn associated_data(org_id: Uuid, tool_id: Uuid, field: &str, key_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(CONTEXT.len() + 32 + field.len() + key_id.len() + 2);
    aad.extend_from_slice(CONTEXT);
    aad.extend_from_slice(org_id.as_bytes());
    aad.extend_from_slice(tool_id.as_bytes());
    // Lengths first, so that no two (field, key id) pairs give the same bytes.
    aad.push(field.len() as u8);
    aad.extend_from_slice(field.as_bytes());
    aad.push(key_id.len() as u8);
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

/// Creates `path` readable and writable by its owner only, failing when it exists.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(text: &str) -> Keyring {
        Keyring::parse("CREDENTIALS_KEYS", &Secret::new(text)).expect("keys")
    }

    const A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const B: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    #[test]
    fn a_seal_opens_only_in_its_place_and_under_its_key() {
        let ring = keyring(&format!("a:{A}"));
        let (org, tool, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let sealed = ring
            .seal(org, tool, "credentials", b"secret")
            .expect("seal");
        assert_eq!(sealed.key_id, "a");
        assert_eq!(
            ring.open(org, tool, "credentials", &sealed)
                .expect("open")
                .as_slice(),
            b"secret"
        );
        assert_eq!(
            ring.open(org, other, "credentials", &sealed),
            Err(Unreadable)
        );
        assert_eq!(
            ring.open(other, tool, "credentials", &sealed),
            Err(Unreadable)
        );
        assert_eq!(ring.open(org, tool, "other", &sealed), Err(Unreadable));
        let mut flipped = sealed.clone();
        let last = flipped.bytes.len() - 1;
        flipped.bytes[last] ^= 1;
        assert_eq!(
            ring.open(org, tool, "credentials", &flipped),
            Err(Unreadable)
        );
        let relabelled = Sealed {
            key_id: "b".into(),
            ..sealed.clone()
        };
        assert_eq!(
            keyring(&format!("b:{A}")).open(org, tool, "credentials", &relabelled),
            Err(Unreadable)
        );
        // Two seals of the same text differ (fresh nonce).
        assert_ne!(
            ring.seal(org, tool, "credentials", b"secret")
                .expect("seal")
                .bytes,
            sealed.bytes
        );
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let (org, tool) = (Uuid::now_v7(), Uuid::now_v7());
        let old = keyring(&format!("a:{A}"))
            .seal(org, tool, "credentials", b"x")
            .expect("seal");
        let both = keyring(&format!("b:{B}, a:{A}"));
        assert_eq!(both.sealing_key_id(), Some("b"));
        assert!(both.open(org, tool, "credentials", &old).is_ok());
        assert_eq!(
            keyring(&format!("b:{B}")).open(org, tool, "credentials", &old),
            Err(Unreadable)
        );
    }

    #[test]
    fn a_key_without_an_id_is_named_by_its_fingerprint_and_never_printed() {
        let ring = keyring(A);
        let id = ring.sealing_key_id().expect("id").to_owned();
        assert!(id.starts_with('k') && id.len() == 13, "{id}");
        assert_eq!(
            keyring(&format!("{id}:{A}")).sealing_key_id(),
            Some(id.as_str())
        );
        assert!(!format!("{ring:?}").contains(A));
        for bad in [
            "",
            "a:",
            "a:AAAA",
            &format!("a:{A},a:{B}"),
            &format!("bad id:{A}"),
        ] {
            assert!(
                Keyring::parse("CREDENTIALS_KEYS", &Secret::new(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_development_key_file_is_made_once_for_its_owner_only() {
        let dir = std::env::temp_dir().join(format!("tolstoy_key_{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("db.credentials-key");
        let made = Keyring::development(&path).expect("made");
        let again = Keyring::development(&path).expect("read");
        assert_eq!(made.sealing_key_id(), again.sealing_key_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            development_key_path("sqlite://data/tolstoy.db?mode=rwc"),
            PathBuf::from("data/tolstoy.db.credentials-key")
        );
        assert_eq!(
            development_key_path("postgres://x/y"),
            PathBuf::from("tolstoy.credentials-key")
        );
    }
}
