//! The local keyring: master keys held in process memory, for development, tests and
//! single-cluster installs without a KMS.
//!
//! Configured as `VAULT_LOCAL_MASTER_KEYS=id1:base64,id2:base64` (32-byte keys). The first key wraps
//! new DEKs; every listed key still unwraps, so keys can be rotated by prepending a new one. A
//! wrapped DEK is `0x01 || nonce(24) || XChaCha20-Poly1305(master, dek)` with the key id and the
//! encryption context bound as associated data, exactly as AWS KMS binds its context.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::envelope::NONCE_LEN;
use crate::keywrap::{BoxFuture, EncryptionContext, KeyWrapper, NewDek, WrapError, WrappedDek};
use crate::secret::{DEK_LEN, Dek, RngError, fill_random};

const BLOB_FORMAT: u8 = 1;
const MAX_KEY_ID_LEN: usize = 64;

struct MasterKey {
    id: String,
    key: Zeroizing<[u8; DEK_LEN]>,
}

/// Master keys for the `local` key-wrapping mode. No `Debug`/`Clone`: it holds key material.
pub struct LocalKeyring {
    keys: Vec<MasterKey>,
    ephemeral: bool,
}

/// A malformed `VAULT_LOCAL_MASTER_KEYS` value. Messages name the entry, never the key bytes.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("keyring entry {0} is empty")]
    EmptyEntry(usize),
    #[error("keyring entry {0} is not of the form id:base64key")]
    MissingSeparator(usize),
    /// The text is not repeated: before the first ':' of a mistyped entry (`<key>:<id>`) may be
    /// the key itself.
    #[error("keyring entry {0} has an invalid key id (1-64 characters of A-Z a-z 0-9 . _ -)")]
    InvalidId(usize),
    #[error("keyring entry {id:?} is not valid base64")]
    InvalidBase64 { id: String },
    #[error("keyring entry {id:?} decodes to {len} bytes; master keys are 32 bytes")]
    InvalidLength { id: String, len: usize },
    #[error("keyring key id {0:?} appears more than once")]
    DuplicateId(String),
    #[error("keyring is empty")]
    Empty,
    #[error("failed to generate an ephemeral master key")]
    Rng,
}

impl LocalKeyring {
    /// Parses `id1:base64,id2:base64`. The first entry is the active key.
    pub fn parse(spec: &str) -> Result<Self, KeyringError> {
        let mut keys: Vec<MasterKey> = Vec::new();
        for (i, entry) in spec.split(',').enumerate() {
            let position = i + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(KeyringError::EmptyEntry(position));
            }
            let (id, b64) = entry.split_once(':').ok_or(KeyringError::MissingSeparator(position))?;
            if !valid_key_id(id) {
                return Err(KeyringError::InvalidId(position));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyringError::DuplicateId(id.to_owned()));
            }
            let bytes = Zeroizing::new(
                STANDARD.decode(b64.trim()).map_err(|_| KeyringError::InvalidBase64 { id: id.to_owned() })?,
            );
            let key: [u8; DEK_LEN] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| KeyringError::InvalidLength { id: id.to_owned(), len: bytes.len() })?;
            keys.push(MasterKey { id: id.to_owned(), key: Zeroizing::new(key) });
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Self { keys, ephemeral: false })
    }

    /// A random in-memory key. Everything sealed under it is lost when the process exits; callers
    /// must warn loudly (see [`Self::is_ephemeral`]).
    pub fn ephemeral() -> Result<Self, KeyringError> {
        let mut key = Zeroizing::new([0u8; DEK_LEN]);
        fill_random(key.as_mut()).map_err(|_| KeyringError::Rng)?;
        let mut tag = [0u8; 4];
        fill_random(&mut tag).map_err(|_| KeyringError::Rng)?;
        let id = format!("ephemeral-{}", tag.iter().map(|b| format!("{b:02x}")).collect::<String>());
        Ok(Self { keys: vec![MasterKey { id, key }], ephemeral: true })
    }

    /// `Some(spec)` parses it; `None` or a blank value gives an ephemeral keyring.
    pub fn from_config(spec: Option<&str>) -> Result<Self, KeyringError> {
        match spec.map(str::trim) {
            Some(s) if !s.is_empty() => Self::parse(s),
            _ => Self::ephemeral(),
        }
    }

    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Wraps `dek` under the active key.
    pub fn wrap(&self, dek: &Dek, ctx: EncryptionContext<'_>) -> Result<WrappedDek, WrapError> {
        let active = self.active();
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let aad = context_aad(&active.id, ctx);
        let sealed = XChaCha20Poly1305::new(&(*active.key).into())
            .encrypt(&XNonce::from(nonce), Payload { msg: dek.expose(), aad: &aad })
            .map_err(|_| WrapError::Malformed)?;
        let mut blob = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        blob.push(BLOB_FORMAT);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(WrappedDek { key_id: active.id.clone(), blob })
    }

    /// Unwraps a DEK wrapped by any key of the ring, checking the context binding.
    pub fn unwrap(&self, wrapped: &WrappedDek, ctx: EncryptionContext<'_>) -> Result<Dek, WrapError> {
        let master = self
            .keys
            .iter()
            .find(|k| k.id == wrapped.key_id)
            .ok_or_else(|| WrapError::UnknownKey(wrapped.key_id.clone()))?;
        let blob = &wrapped.blob;
        if blob.len() != 1 + NONCE_LEN + DEK_LEN + crate::envelope::TAG_LEN || blob[0] != BLOB_FORMAT {
            return Err(WrapError::Rejected("wrapped key has an unexpected format".into()));
        }
        let nonce: [u8; NONCE_LEN] = blob[1..1 + NONCE_LEN].try_into().map_err(|_| WrapError::Malformed)?;
        let aad = context_aad(&master.id, ctx);
        let plain = Zeroizing::new(
            XChaCha20Poly1305::new(&(*master.key).into())
                .decrypt(&XNonce::from(nonce), Payload { msg: &blob[1 + NONCE_LEN..], aad: &aad })
                .map_err(|_| WrapError::Rejected("wrapped key failed authentication".into()))?,
        );
        Dek::from_slice(&plain).map_err(|_| WrapError::Malformed)
    }

    fn active(&self) -> &MasterKey {
        // `parse` and `ephemeral` never build an empty ring.
        &self.keys[0]
    }
}

impl KeyWrapper for LocalKeyring {
    fn active_key_id(&self) -> &str {
        &self.active().id
    }

    fn generate_dek<'a>(&'a self, ctx: EncryptionContext<'a>) -> BoxFuture<'a, Result<NewDek, WrapError>> {
        Box::pin(async move {
            let dek = Dek::generate().map_err(|e: RngError| WrapError::Rng(e))?;
            let wrapped = self.wrap(&dek, ctx)?;
            Ok(NewDek { dek, wrapped })
        })
    }

    fn unwrap_dek<'a>(
        &'a self,
        wrapped: &'a WrappedDek,
        ctx: EncryptionContext<'a>,
    ) -> BoxFuture<'a, Result<Dek, WrapError>> {
        Box::pin(async move { self.unwrap(wrapped, ctx) })
    }

    fn rewrap<'a>(
        &'a self,
        wrapped: &'a WrappedDek,
        ctx: EncryptionContext<'a>,
    ) -> BoxFuture<'a, Result<WrappedDek, WrapError>> {
        Box::pin(async move {
            let dek = self.unwrap(wrapped, ctx)?;
            self.wrap(&dek, ctx)
        })
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn context_aad(key_id: &str, ctx: EncryptionContext<'_>) -> Vec<u8> {
    format!("hyperion-vault/dek/v1\0{key_id}\0secret={}\0version={}", ctx.secret, ctx.version).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b64(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    fn ctx(version: u32) -> EncryptionContext<'static> {
        EncryptionContext { secret: "team/db", version }
    }

    #[test]
    fn parse_orders_keys_and_activates_the_first() {
        let ring = LocalKeyring::parse(&format!("new:{}, old:{}", b64(1), b64(2))).unwrap();
        assert_eq!(ring.active_key_id(), "new");
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["new", "old"]);
        assert!(!ring.is_ephemeral());
    }

    #[test]
    fn parse_errors_name_the_entry_and_never_the_key() {
        let short = STANDARD.encode([9u8; 16]);
        assert_eq!(LocalKeyring::parse("").err(), Some(KeyringError::EmptyEntry(1)));
        assert_eq!(LocalKeyring::parse(&format!("a:{},", b64(1))).err(), Some(KeyringError::EmptyEntry(2)));
        assert_eq!(LocalKeyring::parse("nocolon").err(), Some(KeyringError::MissingSeparator(1)));
        assert_eq!(
            LocalKeyring::parse(&format!("bad id:{}", b64(1))).err(),
            Some(KeyringError::InvalidId(1))
        );
        // Key and id swapped: the key must not appear in the error.
        let swapped = LocalKeyring::parse(&format!("a:{},{}:b", b64(1), b64(2))).err().unwrap();
        assert_eq!(swapped, KeyringError::InvalidId(2));
        assert!(!format!("{swapped} {swapped:?}").contains(&b64(2)));
        assert_eq!(LocalKeyring::parse("k:!!!").err(), Some(KeyringError::InvalidBase64 { id: "k".into() }));
        let err = LocalKeyring::parse(&format!("k:{short}")).err().unwrap();
        assert_eq!(err, KeyringError::InvalidLength { id: "k".into(), len: 16 });
        assert!(!err.to_string().contains(&short));
        assert_eq!(
            LocalKeyring::parse(&format!("k:{},k:{}", b64(1), b64(2))).err(),
            Some(KeyringError::DuplicateId("k".into()))
        );
    }

    #[test]
    fn from_config_without_keys_is_ephemeral() {
        assert!(LocalKeyring::from_config(None).unwrap().is_ephemeral());
        assert!(LocalKeyring::from_config(Some("  ")).unwrap().is_ephemeral());
        assert!(!LocalKeyring::from_config(Some(&format!("a:{}", b64(1)))).unwrap().is_ephemeral());
        let a = LocalKeyring::ephemeral().unwrap();
        let b = LocalKeyring::ephemeral().unwrap();
        let dek = Dek::generate().unwrap();
        let w = a.wrap(&dek, ctx(1)).unwrap();
        assert!(b.unwrap(&WrappedDek { key_id: b.active_key_id().into(), blob: w.blob }, ctx(1)).is_err());
    }

    #[test]
    fn rotation_keeps_old_keys_unwrapping_and_wraps_with_the_new() {
        let old_ring = LocalKeyring::parse(&format!("k1:{}", b64(1))).unwrap();
        let dek = Dek::generate().unwrap();
        let old_wrapped = old_ring.wrap(&dek, ctx(1)).unwrap();
        assert_eq!(old_wrapped.key_id, "k1");

        let rotated = LocalKeyring::parse(&format!("k2:{},k1:{}", b64(2), b64(1))).unwrap();
        assert_eq!(rotated.unwrap(&old_wrapped, ctx(1)).unwrap().expose(), dek.expose());
        let new_wrapped = rotated.wrap(&dek, ctx(1)).unwrap();
        assert_eq!(new_wrapped.key_id, "k2");
        assert!(old_ring.unwrap(&new_wrapped, ctx(1)).is_err(), "old ring lacks k2");

        let rewrapped = futures_lite_block_on(rotated.rewrap(&old_wrapped, ctx(1))).unwrap();
        assert_eq!(rewrapped.key_id, "k2");
        assert_eq!(rotated.unwrap(&rewrapped, ctx(1)).unwrap().expose(), dek.expose());
    }

    #[test]
    fn wrong_master_key_with_same_id_is_rejected() {
        let a = LocalKeyring::parse(&format!("k:{}", b64(1))).unwrap();
        let b = LocalKeyring::parse(&format!("k:{}", b64(2))).unwrap();
        let w = a.wrap(&Dek::generate().unwrap(), ctx(1)).unwrap();
        assert!(matches!(b.unwrap(&w, ctx(1)), Err(WrapError::Rejected(_))));
    }

    #[test]
    fn unknown_key_id_is_reported() {
        let a = LocalKeyring::parse(&format!("k:{}", b64(1))).unwrap();
        let mut w = a.wrap(&Dek::generate().unwrap(), ctx(1)).unwrap();
        w.key_id = "gone".into();
        assert!(matches!(a.unwrap(&w, ctx(1)), Err(WrapError::UnknownKey(id)) if id == "gone"));
    }

    /// Drives a future that never pends (the local keyring does no I/O).
    fn futures_lite_block_on<T>(fut: BoxFuture<'_, T>) -> T {
        use std::task::{Context, Poll, Waker};
        let mut fut = fut;
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => v,
            Poll::Pending => unreachable!("local keyring futures complete immediately"),
        }
    }

    proptest! {
        #[test]
        fn wrap_round_trips_and_binds_context(version in 1u32..10_000, other in 1u32..10_000, flip in 0usize..73) {
            let ring = LocalKeyring::parse(&format!("k:{}", b64(3))).unwrap();
            let dek = Dek::generate().unwrap();
            let w = ring.wrap(&dek, ctx(version)).unwrap();
            let back = ring.unwrap(&w, ctx(version)).unwrap();
            prop_assert_eq!(back.expose(), dek.expose());
            if other != version {
                prop_assert!(ring.unwrap(&w, ctx(other)).is_err());
            }
            let other_ctx = EncryptionContext { secret: "team/dc", version };
            prop_assert!(ring.unwrap(&w, other_ctx).is_err());
            let mut tampered = w.clone();
            tampered.blob[flip] ^= 1;
            prop_assert!(ring.unwrap(&tampered, ctx(version)).is_err());
            let via_trait = futures_lite_block_on(ring.generate_dek(ctx(version))).unwrap();
            let back = futures_lite_block_on(ring.unwrap_dek(&via_trait.wrapped, ctx(version))).unwrap();
            prop_assert_eq!(back.expose(), via_trait.dek.expose());
        }
    }
}
