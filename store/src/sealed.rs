//! Live versions as sealed rows (ciphertext, wrapped DEK, nonce — never plaintext), for callers
//! that cache them briefly (the API, DESIGN.md §6) and open them on use. `verify` goes through
//! here as well, so the constant-time comparison and the decoy for unknown names live in one place.

use hyperion_vault_core::envelope;
use hyperion_vault_core::keywrap::{EncryptionContext, WrappedDek};
use hyperion_vault_core::name::SecretName;
use hyperion_vault_core::verify::find_match;
use jiff::Timestamp;
use tokio_postgres::Row;

use crate::error::{self, StoreError, db};
use crate::model::{SecretKind, SecretValue};
use crate::secrets::{parse_kind, parse_name, to_u32};
use crate::store::{Store, with_reader};

/// Every live version of a secret (current and grace), newest first; `ORDER BY` makes the first
/// row the current version (versions only grow, and the current one never expires).
pub(crate) const LIVE_VERSIONS: &str = "SELECT s.name, s.kind, s.next_rotation_at, v.version, v.created_at, \
     v.expires_at, v.kms_key_id, v.wrapped_dek, v.nonce, v.ciphertext \
     FROM vault.secrets s JOIN vault.secret_versions v ON v.secret_id = s.id \
     WHERE s.name = $1 AND s.deleted_at IS NULL AND v.ciphertext IS NOT NULL \
     AND (v.expires_at IS NULL OR v.expires_at > $2) ORDER BY v.version DESC";

/// One version as stored: encrypted, with the metadata the read endpoints return. No `Debug`:
/// nothing here is plaintext, but nothing here belongs in a log either.
pub struct SealedRow {
    pub name: SecretName,
    pub kind: SecretKind,
    pub version: u32,
    pub created_at: Timestamp,
    /// `Some` for a grace version: live until then.
    pub expires_at: Option<Timestamp>,
    pub next_rotation_at: Option<Timestamp>,
    wrapped: WrappedDek,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl SealedRow {
    pub(crate) fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            name: parse_name(row.get(0))?,
            kind: parse_kind(row.get(1))?,
            next_rotation_at: row.get(2),
            version: to_u32(row.get(3))?,
            created_at: row.get(4),
            expires_at: row.get(5),
            wrapped: WrappedDek { key_id: row.get(6), blob: row.get(7) },
            nonce: row.get(8),
            ciphertext: row.get(9),
        })
    }

    /// Live at `at`: the current version, or a grace version before its expiry.
    pub fn is_live(&self, at: Timestamp) -> bool {
        self.expires_at.is_none_or(|e| e > at)
    }
}

impl Store {
    /// The live versions of `name` at `now`, sealed, newest (current) first; empty when the
    /// secret does not exist. Reads from the reader pool, like every value read.
    pub async fn live_sealed(&self, name: &SecretName, now: Timestamp) -> Result<Vec<SealedRow>, StoreError> {
        let rows: Vec<Row> = with_reader!(self, |client| async {
            let stmt = client.prepare_cached(LIVE_VERSIONS).await.map_err(db("prepare the live read"))?;
            client.query(&stmt, &[&name.as_str(), &now]).await.map_err(db("read live versions"))
        }
        .await)?;
        rows.iter().map(SealedRow::from_row).collect()
    }

    /// Decrypts one sealed version (DEK from the cache, or unwrapped by the key service).
    pub async fn open_sealed(&self, row: &SealedRow) -> Result<SecretValue, StoreError> {
        let ctx = EncryptionContext { secret: row.name.as_str(), version: row.version };
        let dek = self.dek(&row.wrapped, ctx).await?;
        let value = envelope::open(&dek, row.name.as_str(), row.version, &row.nonce, &row.ciphertext)
            .map_err(error::crypto("open the sealed value"))?;
        drop(dek);
        Ok(SecretValue {
            name: row.name.clone(),
            kind: row.kind,
            version: row.version,
            created_at: row.created_at,
            expires_at: row.expires_at,
            next_rotation_at: row.next_rotation_at,
            value,
        })
    }

    /// Compares `presented` with every version of `rows` live at `now`, in constant time;
    /// `Some(version)` on a match. With no live version (an unknown name) it opens and compares
    /// a decoy instead, so the answer costs comparable work.
    pub async fn verify_sealed(
        &self,
        rows: &[SealedRow],
        presented: &[u8],
        now: Timestamp,
    ) -> Result<Option<u32>, StoreError> {
        let mut values = Vec::with_capacity(rows.len());
        for row in rows.iter().filter(|r| r.is_live(now)) {
            values.push(self.open_sealed(row).await?);
        }
        if values.is_empty() {
            let (dek, sealed) = &self.inner.decoy;
            let decoy = envelope::open(dek, "decoy", 1, &sealed.nonce, &sealed.ciphertext)
                .map_err(error::crypto("open the decoy"))?;
            let _ = find_match(presented, [(1u32, decoy.expose())]);
            return Ok(None);
        }
        Ok(find_match(presented, values.iter().map(|v| (v.version, v.value.expose()))))
    }
}
