//! Envelope encryption of one secret version.
//!
//! Each version is sealed with XChaCha20-Poly1305 under its own 32-byte DEK and a fresh 24-byte
//! random nonce. The associated data is `<name>:<version>`, rebuilt from the row being read, so a
//! ciphertext moved to another secret or version fails authentication. Names cannot contain `:`,
//! which keeps that encoding unambiguous.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::secret::{Dek, RngError, SecretBytes, fill_random};

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;

/// Ciphertext of one version. Not secret: this is exactly what PostgreSQL stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    /// The encrypted value followed by the 16-byte Poly1305 tag.
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error(transparent)]
    Rng(#[from] RngError),
    #[error("failed to seal the value")]
    Seal,
    /// Wrong key, wrong name/version binding, or tampered bytes; deliberately not more specific.
    #[error("failed to open the sealed value: authentication failed")]
    Open,
    #[error("stored nonce has {0} bytes, expected {NONCE_LEN}")]
    NonceLength(usize),
}

/// The associated data binding a ciphertext to one version of one secret.
pub fn associated_data(name: &str, version: u32) -> Vec<u8> {
    format!("{name}:{version}").into_bytes()
}

/// Seals `plaintext` as version `version` of secret `name` with a fresh random nonce.
pub fn seal(dek: &Dek, name: &str, version: u32, plaintext: &[u8]) -> Result<Sealed, EnvelopeError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let aad = associated_data(name, version);
    let ciphertext = cipher(dek)
        .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: &aad })
        .map_err(|_| EnvelopeError::Seal)?;
    Ok(Sealed { nonce, ciphertext })
}

/// Opens a version read back from storage. `name` and `version` come from the row, not from the
/// ciphertext, so the binding is checked by the AEAD tag.
pub fn open(
    dek: &Dek,
    name: &str,
    version: u32,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<SecretBytes, EnvelopeError> {
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| EnvelopeError::NonceLength(nonce.len()))?;
    let aad = associated_data(name, version);
    cipher(dek)
        .decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad: &aad })
        .map(SecretBytes::new)
        .map_err(|_| EnvelopeError::Open)
}

fn cipher(dek: &Dek) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&(*dek.expose()).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn dek() -> Dek {
        Dek::generate().unwrap()
    }

    #[test]
    fn ciphertext_is_plaintext_plus_tag() {
        let k = dek();
        let s = seal(&k, "a/b", 1, b"0123456789").unwrap();
        assert_eq!(s.ciphertext.len(), 10 + TAG_LEN);
        assert!(!s.ciphertext.windows(10).any(|w| w == b"0123456789"));
    }

    #[test]
    fn empty_value_round_trips() {
        let k = dek();
        let s = seal(&k, "n", 1, b"").unwrap();
        assert!(open(&k, "n", 1, &s.nonce, &s.ciphertext).unwrap().is_empty());
    }

    #[test]
    fn nonce_of_wrong_length_is_rejected() {
        let k = dek();
        let s = seal(&k, "n", 1, b"v").unwrap();
        assert!(matches!(
            open(&k, "n", 1, &s.nonce[..23], &s.ciphertext),
            Err(EnvelopeError::NonceLength(23))
        ));
    }

    #[test]
    fn nonces_and_deks_are_unique_over_100k_draws() {
        let k = dek();
        let mut nonces = HashSet::with_capacity(100_000);
        let mut keys = HashSet::with_capacity(100_000);
        for _ in 0..100_000 {
            assert!(nonces.insert(seal(&k, "n", 1, b"").unwrap().nonce));
            assert!(keys.insert(*dek().expose()));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn round_trip(value in prop::collection::vec(any::<u8>(), 0..2048), version in 1u32..u32::MAX) {
            let k = dek();
            let s = seal(&k, "team/db", version, &value).unwrap();
            let opened = open(&k, "team/db", version, &s.nonce, &s.ciphertext).unwrap();
            prop_assert_eq!(opened.expose(), &value[..]);
        }

        #[test]
        fn any_flipped_bit_in_ciphertext_or_tag_is_rejected(value in prop::collection::vec(any::<u8>(), 1..256), pick in any::<prop::sample::Index>(), bit in 0u8..8) {
            let k = dek();
            let s = seal(&k, "n", 3, &value).unwrap();
            let mut ct = s.ciphertext.clone();
            let i = pick.index(ct.len());
            ct[i] ^= 1 << bit;
            prop_assert!(matches!(open(&k, "n", 3, &s.nonce, &ct), Err(EnvelopeError::Open)));
        }

        #[test]
        fn tag_tampering_and_truncation_are_rejected(value in prop::collection::vec(any::<u8>(), 0..64), cut in 1usize..=TAG_LEN) {
            let k = dek();
            let s = seal(&k, "n", 1, &value).unwrap();
            let truncated = &s.ciphertext[..s.ciphertext.len() - cut];
            prop_assert!(open(&k, "n", 1, &s.nonce, truncated).is_err());
            let mut tag_flipped = s.ciphertext.clone();
            let last = tag_flipped.len() - 1;
            tag_flipped[last] ^= 0x80;
            prop_assert!(open(&k, "n", 1, &s.nonce, &tag_flipped).is_err());
        }

        #[test]
        fn tampered_nonce_is_rejected(pick in 0usize..NONCE_LEN, bit in 0u8..8) {
            let k = dek();
            let s = seal(&k, "n", 1, b"value").unwrap();
            let mut nonce = s.nonce;
            nonce[pick] ^= 1 << bit;
            prop_assert!(open(&k, "n", 1, &nonce, &s.ciphertext).is_err());
        }

        #[test]
        fn ciphertext_moved_to_another_name_or_version_is_rejected(version in 1u32..1_000_000, other in 1u32..1_000_000, suffix in "[a-z]{1,8}") {
            let k = dek();
            let s = seal(&k, "svc/key", version, b"value").unwrap();
            let other_name = format!("svc/key{suffix}");
            prop_assert!(open(&k, &other_name, version, &s.nonce, &s.ciphertext).is_err());
            if other != version {
                prop_assert!(open(&k, "svc/key", other, &s.nonce, &s.ciphertext).is_err());
            }
            // "a:12" vs "a:1" + "2": the separator keeps bindings distinct.
            prop_assert!(open(&k, "svc/ke", version, &s.nonce, &s.ciphertext).is_err());
        }

        #[test]
        fn wrong_dek_is_rejected(value in prop::collection::vec(any::<u8>(), 0..64)) {
            let s = seal(&dek(), "n", 1, &value).unwrap();
            prop_assert!(open(&dek(), "n", 1, &s.nonce, &s.ciphertext).is_err());
        }
    }
}
