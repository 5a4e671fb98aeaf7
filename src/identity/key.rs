//! The API key format: `tol_` + 32 random base62 characters (190 bits) + a 6-character base62
//! checksum of them, so that a mistyped key is refused without a database lookup and secret
//! scanners can recognise one. Only the key's SHA-256 digest and its first 12 characters are
//! stored; the key itself exists once, in the answer that creates it.

use rand::distr::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

/// What every key starts with.
pub const KEY_PREFIX: &str = "tol_";

/// How many random characters a key carries (base62: 32 × 5.95 = 190 bits).
const RANDOM_CHARS: usize = 32;

/// How many characters of checksum follow them (62⁶ > 2³²).
const CHECKSUM_CHARS: usize = 6;

/// How many of a key's first characters are stored to tell keys apart.
pub const SHOWN_PREFIX_CHARS: usize = 12;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly made key, with what is stored of it.
pub struct NewKey {
    /// The key itself: shown once, never stored or logged.
    pub key: String,
    /// Its first 12 characters.
    pub prefix: String,
    /// SHA-256 of the key, lower-case hex.
    pub digest: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Makes a new key from the operating system's random source (through rand's thread RNG,
/// a CSPRNG seeded by it).
pub fn generate() -> NewKey {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(RANDOM_CHARS)
        .map(char::from)
        .collect();
    let key = format!("{KEY_PREFIX}{random}{}", checksum(&random));
    NewKey {
        prefix: key[..SHOWN_PREFIX_CHARS].to_owned(),
        digest: digest(&key),
        key,
    }
}

/// The digest to look `key` up by, when it is well formed and its checksum holds; `None`
/// otherwise, so that a mistyped or made-up key costs no database lookup.
pub fn verified_digest(key: &str) -> Option<String> {
    let body = key.strip_prefix(KEY_PREFIX)?;
    if body.len() != RANDOM_CHARS + CHECKSUM_CHARS
        || !body.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let (random, check) = body.split_at(RANDOM_CHARS);
    (checksum(random) == check).then(|| digest(key))
}

/// SHA-256 of `text`, lower-case hex.
pub fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The first 32 bits of SHA-256 of the random part, in 6 base62 digits.
fn checksum(random: &str) -> String {
    let hash = Sha256::digest(random.as_bytes());
    let mut value = u32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]);
    let mut digits = [b'0'; CHECKSUM_CHARS];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8_lossy(&digits).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_has_the_documented_shape_and_verifies() {
        let new = generate();
        assert!(new.key.starts_with("tol_"));
        assert_eq!(new.key.len(), 4 + 32 + 6);
        assert_eq!(new.prefix, new.key[..12]);
        assert_eq!(
            verified_digest(&new.key).as_deref(),
            Some(new.digest.as_str())
        );
        assert_ne!(generate().key, new.key);
    }

    #[test]
    fn a_mistyped_key_fails_its_checksum() {
        let key = generate().key;
        let mut chars: Vec<char> = key.chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(verified_digest(&typo), None);
        assert_eq!(verified_digest(&key[..key.len() - 1]), None);
        assert_eq!(verified_digest(&format!("{key}x")), None);
        assert_eq!(verified_digest(&key.replace("tol_", "tok_")), None);
        assert_eq!(verified_digest(""), None);
    }
}
