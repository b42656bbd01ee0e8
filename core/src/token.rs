//! Admin bearer tokens.
//!
//! A token is `hvt_` followed by 256 random bits in unpadded base64url (URL-safe, 47 characters in
//! all; the prefix lets secret scanners recognise a leaked token). Only its SHA-256 fingerprint is
//! stored, and presented tokens are checked against a fingerprint in constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::secret::{RngError, fill_random};

pub const TOKEN_PREFIX: &str = "hvt_";
pub const TOKEN_RANDOM_BYTES: usize = 32;
pub const FINGERPRINT_LEN: usize = 32;

/// A raw token: shown to its owner once, never stored. No `Debug`/`Clone`/`Display`.
pub struct Token(Zeroizing<String>);

impl Token {
    pub fn generate() -> Result<Self, RngError> {
        let mut raw = Zeroizing::new([0u8; TOKEN_RANDOM_BYTES]);
        fill_random(raw.as_mut())?;
        let mut text = Zeroizing::new(String::with_capacity(TOKEN_PREFIX.len() + 43));
        text.push_str(TOKEN_PREFIX);
        URL_SAFE_NO_PAD.encode_string(raw.as_ref(), &mut text);
        Ok(Self(text))
    }

    /// Adopts an operator-supplied token (e.g. `VAULT_BOOTSTRAP_TOKEN`).
    pub fn from_presented(text: &str) -> Self {
        Self(Zeroizing::new(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.0)
    }
}

/// SHA-256 of a token. Safe to store and log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; FINGERPRINT_LEN]);

impl Fingerprint {
    pub fn of(presented: &str) -> Self {
        Self(Sha256::digest(presented.as_bytes()).into())
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; FINGERPRINT_LEN] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Constant-time check of a presented token against a stored fingerprint.
pub fn verify(presented: &str, expected: &Fingerprint) -> bool {
    Fingerprint::of(presented).0.ct_eq(&expected.0).into()
}

/// Whether `text` has the shape of a generated token (prefix + 43 base64url characters).
pub fn looks_like_token(text: &str) -> bool {
    text.strip_prefix(TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() == 43 && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tokens_are_url_safe_and_carry_256_bits() {
        let t = Token::generate().unwrap();
        assert!(looks_like_token(t.expose()), "{}", t.expose().len());
        let body = t.expose().strip_prefix(TOKEN_PREFIX).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
    }

    #[test]
    fn tokens_are_unique_over_100k_draws() {
        let mut seen = HashSet::with_capacity(100_000);
        for _ in 0..100_000 {
            assert!(seen.insert(Token::generate().unwrap().fingerprint()));
        }
    }

    #[test]
    fn fingerprint_is_sha256_sized_and_verifies() {
        let t = Token::generate().unwrap();
        let fp = t.fingerprint();
        assert_eq!(fp.as_bytes().len(), 32);
        assert_eq!(fp.to_hex().len(), 64);
        assert!(verify(t.expose(), &fp));
        assert!(!verify(&t.expose()[..t.expose().len() - 1], &fp));
        assert!(!verify("", &fp));
        let mut flipped = t.expose().to_owned().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(!verify(std::str::from_utf8(&flipped).unwrap(), &fp));
        assert_eq!(Fingerprint::from_bytes(fp.as_bytes()), Some(fp));
        assert_eq!(Fingerprint::from_bytes(&[0u8; 31]), None);
    }

    #[test]
    fn known_fingerprint_vector() {
        assert_eq!(
            Fingerprint::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn shape_check() {
        assert!(!looks_like_token("hvt_short"));
        assert!(!looks_like_token(&format!("xxx_{}", "a".repeat(43))));
        assert!(looks_like_token(&format!("hvt_{}", "a".repeat(43))));
        assert!(!looks_like_token(&format!("hvt_{}=", "a".repeat(42))));
    }
}
