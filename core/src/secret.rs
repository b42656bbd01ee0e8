//! Secret-bearing byte containers.
//!
//! These types deliberately implement neither `Debug`, `Clone`, `Display` nor `Serialize`: the only
//! way to reach the bytes is the narrow `expose` accessor, and the memory is zeroized on drop.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of a data-encryption key (XChaCha20-Poly1305 key), in bytes.
pub const DEK_LEN: usize = 32;

/// A failure of the operating system's random number generator.
#[derive(Debug, thiserror::Error)]
#[error("failed to read from the operating system's random number generator")]
pub struct RngError;

/// Fills `buf` from the OS CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<(), RngError> {
    getrandom::fill(buf).map_err(|_| RngError)
}

/// A plaintext secret value (or any other secret byte string).
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new zeroizing buffer.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value as UTF-8 text, if it is valid UTF-8.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

/// A 256-bit data-encryption key, used for exactly one secret version.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Dek([u8; DEK_LEN]);

impl Dek {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self, RngError> {
        let mut key = [0u8; DEK_LEN];
        fill_random(&mut key)?;
        Ok(Self(key))
    }

    /// Takes key bytes handed back by a key wrapper; the slice must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, InvalidKeyLength> {
        let key: [u8; DEK_LEN] =
            bytes.try_into().map_err(|_| InvalidKeyLength { expected: DEK_LEN, actual: bytes.len() })?;
        Ok(Self(key))
    }

    pub fn expose(&self) -> &[u8; DEK_LEN] {
        &self.0
    }
}

/// Key material of the wrong size was supplied.
#[derive(Debug, thiserror::Error)]
#[error("key material has {actual} bytes, expected {expected}")]
pub struct InvalidKeyLength {
    pub expected: usize,
    pub actual: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dek_from_slice_requires_exact_length() {
        assert!(Dek::from_slice(&[7u8; 32]).is_ok());
        let err = Dek::from_slice(&[7u8; 31]).err().unwrap();
        assert_eq!(err.actual, 31);
        assert!(Dek::from_slice(&[7u8; 33]).is_err());
        assert!(Dek::from_slice(&[]).is_err());
    }

    #[test]
    fn generated_deks_differ() {
        let a = Dek::generate().unwrap();
        let b = Dek::generate().unwrap();
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn secret_bytes_expose_str_only_for_utf8() {
        assert_eq!(SecretBytes::copy_from(b"abc").expose_str(), Some("abc"));
        assert_eq!(SecretBytes::copy_from(&[0xff, 0xfe]).expose_str(), None);
    }
}
