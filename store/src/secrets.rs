//! Secret operations: create, new value, rotate, settings, delete, expiry, reads and verify.
//!
//! Every write that needs a DEK gets it from the key service *before* its transaction, and the
//! transaction is guarded by the current version it was computed for, so no row lock is ever held
//! across a KMS call and a concurrent writer makes the guard fail instead of adding a second version.

use std::time::Duration;

use hyperion_vault_core::envelope;
use hyperion_vault_core::generator::{Charset, GeneratorSpec};
use hyperion_vault_core::keywrap::{EncryptionContext, WrappedDek};
use hyperion_vault_core::name::SecretName;
use hyperion_vault_core::schedule;
use hyperion_vault_core::secret::SecretBytes;
use jiff::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::error::{self, StoreError, check_violation, db, unique_violation};
use crate::model::{
    DueFilter, DueRotation, ListQuery, MetadataUpdate, NewSecret, Owner, Page, RotateOutcome, SecretKind,
    SecretMeta, SecretValue, VersionMeta,
};
use crate::sealed::{LIVE_VERSIONS, SealedRow};
use crate::store::{SealedVersion, Store, with_reader, with_writer};

/// Attempts of `put_value` when concurrent writers keep moving the current version.
const PUT_ATTEMPTS: u32 = 3;
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;
const MAX_DESCRIPTION: usize = 1024;

macro_rules! meta_select {
    () => {
        "SELECT s.id, s.name, s.kind, s.owner_kind, s.owner_uid, s.owner_namespace, s.owner_name, s.description, \
         s.rotation_interval_secs, s.grace_period_secs, s.generator_length, s.generator_charset, s.current_version, \
         s.next_rotation_at, s.created_at, s.updated_at, cv.created_at \
         FROM vault.secrets s LEFT JOIN vault.secret_versions cv ON cv.secret_id = s.id AND cv.version = s.current_version "
    };
}

macro_rules! value_select {
    () => {
        "SELECT s.name, s.kind, s.next_rotation_at, v.version, v.created_at, v.expires_at, v.kms_key_id, \
         v.wrapped_dek, v.nonce, v.ciphertext \
         FROM vault.secrets s JOIN vault.secret_versions v ON v.secret_id = s.id "
    };
}

macro_rules! due_select {
    () => {
        "SELECT name, owner_kind, owner_uid, owner_namespace, owner_name, current_version, next_rotation_at \
         FROM vault.secrets "
    };
}

/// Live versions of a secret, newest first, for `verify`.
const INSERT_VERSION: &str = "INSERT INTO vault.secret_versions \
     (secret_id, version, kms_key_id, wrapped_dek, nonce, ciphertext, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Supersedes version `$2`: it stays live until `$4`, or is shredded at once when `$5` (no grace).
const SUPERSEDE: &str = "UPDATE vault.secret_versions SET superseded_at = $3, expires_at = $4, \
     wrapped_dek = CASE WHEN $5 THEN NULL ELSE wrapped_dek END, \
     nonce = CASE WHEN $5 THEN NULL ELSE nonce END, \
     ciphertext = CASE WHEN $5 THEN NULL ELSE ciphertext END, \
     shredded_at = CASE WHEN $5 AND shredded_at IS NULL THEN $3 ELSE shredded_at END \
     WHERE secret_id = $1 AND version = $2 AND superseded_at IS NULL";

impl Store {
    /// Creates a secret. With a value (or for an automatic secret, which generates one when `value`
    /// is `None`) it gets version 1; a manual secret without a value starts at version 0 with no
    /// versions (the controller's AwaitingValue). `AlreadyExists` if the name (or the owning
    /// resource) already has a live secret.
    pub async fn create_secret(
        &self,
        new: NewSecret,
        value: Option<SecretBytes>,
        now: Timestamp,
    ) -> Result<SecretMeta, StoreError> {
        let now = db_time(now);
        let settings = Settings::validate(new.kind, new.rotation_interval, new.grace_period, new.generator)?;
        let description = validate_description(new.description)?;
        let value = match (new.kind, value) {
            (_, Some(v)) => Some(v),
            (SecretKind::Automatic, None) => Some(generate(settings.generator)?),
            (SecretKind::Manual, None) => None,
        };
        let name = new.name.as_str();
        let sealed = match &value {
            Some(v) => Some(self.seal(name, 1, v).await?),
            None => None,
        };
        let next_rotation_at = match settings.interval {
            Some(interval) => Some(
                schedule::first_rotation(now, interval, name)
                    .map_err(|e| StoreError::invalid("rotation_interval", e.to_string()))?,
            ),
            None => None,
        };
        let (owner_kind, uid, ns, res) = owner_columns(&new.owner);
        let version: i32 = if sealed.is_some() { 1 } else { 0 };
        let interval_secs = settings.interval.map(secs_i64);
        let grace_secs = secs_i64(settings.grace);
        let (gen_len, gen_charset) = generator_columns(settings.generator);
        let result: Result<(), StoreError> = with_writer!(self, |client| {
            async {
            let tx = client.transaction().await.map_err(db("begin the create transaction"))?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO vault.secrets (name, kind, owner_kind, owner_uid, owner_namespace, owner_name, \
                     description, rotation_interval_secs, grace_period_secs, generator_length, generator_charset, \
                     current_version, next_rotation_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) RETURNING id",
                )
                .await
                .map_err(db("prepare the secret insert"))?;
            let row = tx
                .query_one(
                    &stmt,
                    &[
                        &name,
                        &new.kind.as_str(),
                        &owner_kind,
                        &uid,
                        &ns,
                        &res,
                        &description,
                        &interval_secs,
                        &grace_secs,
                        &gen_len,
                        &gen_charset,
                        &version,
                        &next_rotation_at,
                        &now,
                    ],
                )
                .await
                .map_err(|e| already_exists(e, &new.name, &new.owner).unwrap_or_else(|e| db("insert the secret")(e)))?;
            let id: i64 = row.get(0);
            if let Some(s) = &sealed {
                insert_version(&tx, id, 1, s, now).await?;
            }
            tx.commit().await.map_err(db("commit the new secret"))
        }
        .await
        });
        result?;
        Ok(SecretMeta {
            name: new.name,
            kind: new.kind,
            owner: new.owner,
            description,
            current_version: version as u32,
            rotation_interval: settings.interval,
            grace_period: settings.grace,
            generator: settings.generator,
            next_rotation_at,
            last_rotated_at: sealed.as_ref().map(|_| now),
            created_at: now,
            updated_at: now,
        })
    }

    /// Stores a new value as version n+1 (any kind; a manual secret awaiting its value gets
    /// version 1). The previous version enters its grace period. The schedule of an automatic
    /// secret is not changed.
    pub async fn put_value(
        &self,
        name: &SecretName,
        value: SecretBytes,
        now: Timestamp,
    ) -> Result<VersionMeta, StoreError> {
        let now = db_time(now);
        for _ in 0..PUT_ATTEMPTS {
            let meta = self.live_row(name).await?.ok_or_else(|| not_found(name))?;
            let next = next_version(meta.current_version)?;
            let sealed = self.seal(name.as_str(), next, &value).await?;
            if let Some(v) = self.commit_version(&meta, &sealed, None, None, now).await? {
                return Ok(v);
            }
        }
        Err(StoreError::Conflict(format!("secret {name:?} kept changing concurrently; retry")))
    }

    /// Rotates an automatic secret from `expected_current_version` to the next, in one
    /// transaction guarded by that version. `new_value: None` generates one with the secret's
    /// generator. The schedule stays anchored: the next slot is the first `slot + k·interval`
    /// after `now`; a rotation forced before its slot re-anchors on `now`.
    pub async fn rotate(
        &self,
        name: &SecretName,
        expected_current_version: u32,
        new_value: Option<SecretBytes>,
        now: Timestamp,
    ) -> Result<RotateOutcome, StoreError> {
        self.rotate_answering(name, expected_current_version, new_value, None, now).await
    }

    /// [`Store::rotate`] for a `rotate-now` request (a VaultSecret's nonce): the request is
    /// recorded in the same transaction as the new version, so [`Store::served_rotate_request`]
    /// tells afterwards, exactly, whether it was served — even if the caller crashed before it
    /// could acknowledge it anywhere else.
    pub async fn rotate_on_request(
        &self,
        name: &SecretName,
        expected_current_version: u32,
        request: &str,
        now: Timestamp,
    ) -> Result<RotateOutcome, StoreError> {
        self.rotate_answering(name, expected_current_version, None, Some(request), now).await
    }

    /// Whether `request` is the rotate-now request that this secret's latest request-driven
    /// rotation ([`Store::rotate_on_request`]) answered. Read on the primary.
    pub async fn served_rotate_request(&self, name: &SecretName, request: &str) -> Result<bool, StoreError> {
        let row: Option<Row> = with_writer!(self, |client| async {
            let stmt = client
                .prepare_cached(
                    "SELECT last_rotate_request FROM vault.secrets WHERE name = $1 AND deleted_at IS NULL",
                )
                .await
                .map_err(db("prepare the rotate request read"))?;
            client.query_opt(&stmt, &[&name.as_str()]).await.map_err(db("read the last rotate request"))
        }
        .await)?;
        let recorded: Option<String> = row.and_then(|r| r.get(0));
        Ok(recorded.is_some_and(|r| r == request_digest(request)))
    }

    async fn rotate_answering(
        &self,
        name: &SecretName,
        expected_current_version: u32,
        new_value: Option<SecretBytes>,
        request: Option<&str>,
        now: Timestamp,
    ) -> Result<RotateOutcome, StoreError> {
        let now = db_time(now);
        let meta = self.live_row(name).await?.ok_or_else(|| not_found(name))?;
        if meta.kind != SecretKind::Automatic {
            return Err(StoreError::invalid(
                "kind",
                "manual secrets are not rotated; set a new value instead",
            ));
        }
        if meta.current_version != expected_current_version {
            return Ok(RotateOutcome::Conflict { current_version: meta.current_version });
        }
        let interval = meta.rotation_interval.ok_or(StoreError::Corrupt {
            what: "secret",
            detail: "automatic secret without a rotation interval".into(),
        })?;
        let slot = meta.next_rotation_at.unwrap_or(now);
        let next_slot = if schedule::is_due(slot, now) {
            schedule::next_after(slot, interval, now)
        } else {
            schedule::first_rotation(now, interval, name.as_str())
        }
        .map_err(|e| StoreError::invalid("rotation_interval", e.to_string()))?;
        let value = match new_value {
            Some(v) => v,
            None => generate(meta.generator)?,
        };
        let next = next_version(meta.current_version)?;
        let sealed = self.seal(name.as_str(), next, &value).await?;
        let request = request.map(request_digest);
        match self.commit_version(&meta, &sealed, Some(next_slot), request.as_deref(), now).await? {
            Some(version) => Ok(RotateOutcome::Rotated { version, next_rotation_at: Some(next_slot) }),
            None => {
                let current = self.live_row(name).await?.map(|m| m.current_version).unwrap_or(0);
                Ok(RotateOutcome::Conflict { current_version: current })
            }
        }
    }

    /// The guarded transaction shared by `put_value` and `rotate`. `None` when the guard failed.
    /// `request`: the digest of the rotate-now request this version answers, if any.
    async fn commit_version(
        &self,
        meta: &LiveRow,
        sealed: &SealedVersion,
        next_rotation_at: Option<Timestamp>,
        request: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<VersionMeta>, StoreError> {
        let current = meta.current_version as i32;
        let next = current + 1;
        let expires = schedule::grace_expiry(now, meta.grace_period)
            .map_err(|e| StoreError::invalid("grace_period", e.to_string()))?;
        let shred_now = meta.grace_period.is_zero();
        with_writer!(self, |client| async {
            let tx = client.transaction().await.map_err(db("begin the version transaction"))?;
            let stmt = tx
                .prepare_cached(
                    "UPDATE vault.secrets SET current_version = $3, updated_at = $4, \
                     next_rotation_at = COALESCE($5, next_rotation_at), \
                     last_rotate_request = COALESCE($6, last_rotate_request) \
                     WHERE id = $1 AND current_version = $2 AND deleted_at IS NULL",
                )
                .await
                .map_err(db("prepare the version guard"))?;
            let moved = tx
                .execute(&stmt, &[&meta.id, &current, &next, &now, &next_rotation_at, &request])
                .await
                .map_err(db("advance the current version"))?;
            if moved == 0 {
                tx.rollback().await.map_err(db("roll back a lost version race"))?;
                return Ok(None);
            }
            if current >= 1 {
                let stmt = tx.prepare_cached(SUPERSEDE).await.map_err(db("prepare the supersede"))?;
                match tx.execute(&stmt, &[&meta.id, &current, &now, &expires, &shred_now]).await {
                    Ok(_) => {}
                    // The current version was written after the caller took `now` (e.g. an API
                    // rotate between the controller's clock read and its database read): a
                    // version may not be superseded before it existed, so this write lost the
                    // race like any other and the caller retries with a fresh clock.
                    Err(e) if check_violation(&e) == Some("versions_timestamps") => {
                        tx.rollback().await.map_err(db("roll back a version older than its predecessor"))?;
                        return Ok(None);
                    }
                    Err(e) => return Err(db("supersede the previous version")(e)),
                }
            }
            insert_version(&tx, meta.id, next, sealed, now).await?;
            tx.commit().await.map_err(db("commit the new version"))?;
            Ok(Some(VersionMeta {
                version: next as u32,
                kms_key_id: sealed.wrapped.key_id.clone(),
                created_at: now,
                superseded_at: None,
                expires_at: None,
                shredded_at: None,
            }))
        }
        .await)
    }

    /// Changes a secret's settings. `requester` must own it: the API may only change API-owned
    /// secrets (`OwnedByResource` otherwise), a VaultSecret only its own.
    pub async fn update_metadata(
        &self,
        name: &SecretName,
        requester: &Owner,
        update: MetadataUpdate,
        now: Timestamp,
    ) -> Result<SecretMeta, StoreError> {
        let now = db_time(now);
        let meta: Result<SecretMeta, StoreError> = with_writer!(self, |client| {
            async {
            let tx = client.transaction().await.map_err(db("begin the settings transaction"))?;
            let stmt = tx
                .prepare_cached(concat!(meta_select!(), "WHERE s.name = $1 AND s.deleted_at IS NULL FOR UPDATE OF s"))
                .await
                .map_err(db("prepare the settings read"))?;
            let row = tx.query_opt(&stmt, &[&name.as_str()]).await.map_err(db("read the secret for update"))?;
            let row = row.ok_or_else(|| not_found(name))?;
            let id: i64 = row.get(0);
            let mut meta = meta_from_row(&row)?;
            check_owner(&meta, requester)?;
            let kind = update.kind.unwrap_or(meta.kind);
            let interval = match (kind, update.rotation_interval) {
                (SecretKind::Manual, _) => None,
                (SecretKind::Automatic, Some(i)) => Some(i),
                (SecretKind::Automatic, None) => meta.rotation_interval,
            };
            let generator = match kind {
                SecretKind::Manual => None,
                SecretKind::Automatic => update.generator.or(meta.generator),
            };
            let settings =
                Settings::validate(kind, interval, update.grace_period.unwrap_or(meta.grace_period), generator)?;
            if kind == SecretKind::Automatic && meta.current_version == 0 {
                return Err(StoreError::invalid("kind", "a secret awaiting its first value cannot become automatic"));
            }
            let schedule_changed = settings.interval != meta.rotation_interval || kind != meta.kind;
            let next_rotation_at = match settings.interval {
                None => None,
                Some(_) if !schedule_changed => meta.next_rotation_at,
                Some(interval) => Some(
                    schedule::first_rotation(meta.last_rotated_at.unwrap_or(now), interval, name.as_str())
                        .map_err(|e| StoreError::invalid("rotation_interval", e.to_string()))?,
                ),
            };
            let description = match &update.description {
                None => meta.description.clone(),
                Some(d) => validate_description(Some(d.clone()))?,
            };
            let (gen_len, gen_charset) = generator_columns(settings.generator);
            let stmt = tx
                .prepare_cached(
                    "UPDATE vault.secrets SET kind = $2, description = $3, rotation_interval_secs = $4, \
                     grace_period_secs = $5, generator_length = $6, generator_charset = $7, next_rotation_at = $8, \
                     updated_at = GREATEST($9, created_at) WHERE id = $1",
                )
                .await
                .map_err(db("prepare the settings update"))?;
            tx.execute(
                &stmt,
                &[
                    &id,
                    &kind.as_str(),
                    &description,
                    &settings.interval.map(secs_i64),
                    &secs_i64(settings.grace),
                    &gen_len,
                    &gen_charset,
                    &next_rotation_at,
                    &now,
                ],
            )
            .await
            .map_err(db("update the secret settings"))?;
            tx.commit().await.map_err(db("commit the settings"))?;
            meta.kind = kind;
            meta.description = description;
            meta.rotation_interval = settings.interval;
            meta.grace_period = settings.grace;
            meta.generator = settings.generator;
            meta.next_rotation_at = next_rotation_at;
            meta.updated_at = now.max(meta.created_at);
            Ok(meta)
        }
        .await
        });
        meta
    }

    /// Deletes a secret: destroys the crypto material of every version, frees the name (a new
    /// secret of that name starts at version 1), keeps the metadata rows and the audit trail.
    /// `false` if there was no live secret of that name.
    pub async fn delete(
        &self,
        name: &SecretName,
        requester: &Owner,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        with_writer!(self, |client| {
            async {
            let tx = client.transaction().await.map_err(db("begin the delete transaction"))?;
            let stmt = tx
                .prepare_cached(concat!(meta_select!(), "WHERE s.name = $1 AND s.deleted_at IS NULL FOR UPDATE OF s"))
                .await
                .map_err(db("prepare the delete read"))?;
            let Some(row) = tx.query_opt(&stmt, &[&name.as_str()]).await.map_err(db("read the secret to delete"))? else {
                return Ok(false);
            };
            let id: i64 = row.get(0);
            check_owner(&meta_from_row(&row)?, requester)?;
            let stmt = tx
                .prepare_cached(
                    "UPDATE vault.secret_versions SET wrapped_dek = NULL, nonce = NULL, ciphertext = NULL, \
                     shredded_at = GREATEST($2, created_at), \
                     superseded_at = COALESCE(superseded_at, GREATEST($2, created_at)), \
                     expires_at = LEAST(COALESCE(expires_at, GREATEST($2, created_at)), GREATEST($2, created_at, superseded_at)) \
                     WHERE secret_id = $1 AND shredded_at IS NULL",
                )
                .await
                .map_err(db("prepare the shred"))?;
            tx.execute(&stmt, &[&id, &now]).await.map_err(db("shred the versions"))?;
            let stmt = tx
                .prepare_cached(
                    "UPDATE vault.secrets SET deleted_at = GREATEST($2, created_at), updated_at = GREATEST($2, created_at), \
                     next_rotation_at = NULL WHERE id = $1",
                )
                .await
                .map_err(db("prepare the delete"))?;
            tx.execute(&stmt, &[&id, &now]).await.map_err(db("mark the secret deleted"))?;
            tx.commit().await.map_err(db("commit the delete"))?;
            Ok(true)
        }
        .await
        })
    }

    /// Hands the live secret owned by the VaultSecret with this uid over to the API
    /// (`owner = api`), versions and schedule untouched: what `deletionPolicy: Retain` leaves
    /// behind keeps rotating (the API sweep) and an admin can manage or delete it, instead of an
    /// orphan owned by a uid that no longer exists. Idempotent: `None` if that uid owns nothing.
    pub async fn release_to_api(
        &self,
        owner_uid: &str,
        now: Timestamp,
    ) -> Result<Option<SecretName>, StoreError> {
        let row: Option<Row> = with_writer!(self, |client| async {
            let stmt = client
                .prepare_cached(
                    "UPDATE vault.secrets SET owner_kind = 'api', owner_uid = NULL, owner_namespace = NULL, \
                     owner_name = NULL, updated_at = GREATEST($2, updated_at) \
                     WHERE owner_uid = $1 AND deleted_at IS NULL RETURNING name",
                )
                .await
                .map_err(db("prepare the release"))?;
            client.query_opt(&stmt, &[&owner_uid, &now]).await.map_err(db("release the secret to the API"))
        }
        .await)?;
        row.map(|r| parse_name(r.get(0))).transpose()
    }

    /// Crypto-shreds every version whose grace period ended at or before `now`. Returns how many.
    pub async fn expire_grace_versions(&self, now: Timestamp) -> Result<u64, StoreError> {
        with_writer!(self, |client| async {
            let stmt = client
                .prepare_cached(
                    "UPDATE vault.secret_versions SET wrapped_dek = NULL, nonce = NULL, ciphertext = NULL, \
                     shredded_at = GREATEST($1, created_at) WHERE expires_at <= $1 AND shredded_at IS NULL",
                )
                .await
                .map_err(db("prepare the expiry"))?;
            client.execute(&stmt, &[&now]).await.map_err(db("shred expired versions"))
        }
        .await)
    }

    /// The current value (from the reader pool; may lag the primary by the replication delay).
    pub async fn read_current(&self, name: &SecretName) -> Result<Option<SecretValue>, StoreError> {
        let row: Option<Row> = with_reader!(self, |client| async {
            let stmt = client
                .prepare_cached(concat!(
                    value_select!(),
                    "AND v.version = s.current_version WHERE s.name = $1 AND s.deleted_at IS NULL"
                ))
                .await
                .map_err(db("prepare the current read"))?;
            client.query_opt(&stmt, &[&name.as_str()]).await.map_err(db("read the current version"))
        }
        .await)?;
        match row {
            Some(row) => Ok(Some(self.open_row(&row).await?)),
            None => Ok(None),
        }
    }

    /// Version `version` if it is still live at `now` (current, or inside its grace period).
    pub async fn read_version(
        &self,
        name: &SecretName,
        version: u32,
        now: Timestamp,
    ) -> Result<Option<SecretValue>, StoreError> {
        let Ok(version) = i32::try_from(version) else { return Ok(None) };
        let row: Option<Row> = with_reader!(self, |client| async {
            let stmt = client
                .prepare_cached(concat!(
                    value_select!(),
                    "AND v.version = $2 WHERE s.name = $1 AND s.deleted_at IS NULL \
                     AND v.ciphertext IS NOT NULL AND (v.expires_at IS NULL OR v.expires_at > $3)"
                ))
                .await
                .map_err(db("prepare the version read"))?;
            client.query_opt(&stmt, &[&name.as_str(), &version, &now]).await.map_err(db("read a version"))
        }
        .await)?;
        match row {
            Some(row) => Ok(Some(self.open_row(&row).await?)),
            None => Ok(None),
        }
    }

    /// Current values of several secrets in one query, in the order asked; unknown names omitted.
    pub async fn read_current_many(&self, names: &[SecretName]) -> Result<Vec<SecretValue>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        let rows: Vec<Row> = with_reader!(self, |client| async {
            let stmt = client
                .prepare_cached(concat!(
                    value_select!(),
                    "AND v.version = s.current_version WHERE s.name = ANY($1) AND s.deleted_at IS NULL"
                ))
                .await
                .map_err(db("prepare the batch read"))?;
            client.query(&stmt, &[&wanted]).await.map_err(db("read current versions"))
        }
        .await)?;
        let mut opened = Vec::with_capacity(rows.len());
        for row in &rows {
            opened.push(Some(self.open_row(row).await?));
        }
        let mut out = Vec::with_capacity(opened.len());
        for name in names {
            if let Some(slot) = opened.iter_mut().find(|v| v.as_ref().is_some_and(|v| &v.name == name))
                && let Some(v) = slot.take()
            {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Compares `presented` with every live version in constant time; `Some(version)` on a match.
    /// An unknown name answers `None` after comparable work. Reads from the reader pool, so a
    /// version written moments ago may not be seen yet: see [`Store::verify_on_primary`].
    pub async fn verify(
        &self,
        name: &SecretName,
        presented: &[u8],
        now: Timestamp,
    ) -> Result<Option<u32>, StoreError> {
        self.verify_at(name, presented, now, Consistency::Replica).await
    }

    /// [`Store::verify`] answered by the primary, which sees every committed version. For answers
    /// that decide a write (the controller's "has the source value changed?"): a lagging standby
    /// would make a value just sealed look new and have it sealed again.
    pub async fn verify_on_primary(
        &self,
        name: &SecretName,
        presented: &[u8],
        now: Timestamp,
    ) -> Result<Option<u32>, StoreError> {
        self.verify_at(name, presented, now, Consistency::Primary).await
    }

    async fn verify_at(
        &self,
        name: &SecretName,
        presented: &[u8],
        now: Timestamp,
        consistency: Consistency,
    ) -> Result<Option<u32>, StoreError> {
        let rows: Vec<Row> = match consistency {
            Consistency::Replica => with_reader!(self, |client| async {
                let stmt =
                    client.prepare_cached(LIVE_VERSIONS).await.map_err(db("prepare the verify read"))?;
                client.query(&stmt, &[&name.as_str(), &now]).await.map_err(db("read live versions"))
            }
            .await)?,
            Consistency::Primary => with_writer!(self, |client| async {
                let stmt =
                    client.prepare_cached(LIVE_VERSIONS).await.map_err(db("prepare the verify read"))?;
                client.query(&stmt, &[&name.as_str(), &now]).await.map_err(db("read live versions"))
            }
            .await)?,
        };
        let rows = rows.iter().map(SealedRow::from_row).collect::<Result<Vec<_>, _>>()?;
        self.verify_sealed(&rows, presented, now).await
    }

    /// Metadata of a live secret.
    pub async fn metadata(&self, name: &SecretName) -> Result<Option<SecretMeta>, StoreError> {
        let row: Option<Row> = with_writer!(self, |client| async {
            let stmt = client
                .prepare_cached(concat!(meta_select!(), "WHERE s.name = $1 AND s.deleted_at IS NULL"))
                .await
                .map_err(db("prepare the metadata read"))?;
            client.query_opt(&stmt, &[&name.as_str()]).await.map_err(db("read secret metadata"))
        }
        .await)?;
        row.as_ref().map(meta_from_row).transpose()
    }

    /// The live secret owned by the VaultSecret with this uid.
    pub async fn find_by_owner_uid(&self, uid: &str) -> Result<Option<SecretMeta>, StoreError> {
        let row: Option<Row> = with_writer!(self, |client| async {
            let stmt = client
                .prepare_cached(concat!(meta_select!(), "WHERE s.owner_uid = $1 AND s.deleted_at IS NULL"))
                .await
                .map_err(db("prepare the owner lookup"))?;
            client.query_opt(&stmt, &[&uid]).await.map_err(db("find a secret by owner"))
        }
        .await)?;
        row.as_ref().map(meta_from_row).transpose()
    }

    /// Live secrets by name, in name order.
    pub async fn list(&self, query: &ListQuery) -> Result<Page<SecretMeta>, StoreError> {
        let limit = page_size(query.limit);
        let prefix = query.prefix.clone().unwrap_or_default();
        let cursor = query.cursor.clone().unwrap_or_default();
        let fetch = i64::from(limit) + 1;
        let rows: Vec<Row> = with_writer!(self, |client| {
            async {
            let stmt = client
                .prepare_cached(concat!(
                    meta_select!(),
                    "WHERE s.deleted_at IS NULL AND starts_with(s.name, $1) AND s.name > $2 ORDER BY s.name LIMIT $3"
                ))
                .await
                .map_err(db("prepare the list"))?;
            client.query(&stmt, &[&prefix, &cursor, &fetch]).await.map_err(db("list secrets"))
        }
        .await
        })?;
        let mut items = rows.iter().map(meta_from_row).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|m| m.name.as_str().to_owned())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Every version's metadata, newest first.
    pub async fn history(&self, name: &SecretName) -> Result<Option<Vec<VersionMeta>>, StoreError> {
        let rows: Option<Vec<Row>> = with_writer!(self, |client| async {
            let stmt = client
                .prepare_cached("SELECT id FROM vault.secrets WHERE name = $1 AND deleted_at IS NULL")
                .await
                .map_err(db("prepare the history lookup"))?;
            let Some(row) =
                client.query_opt(&stmt, &[&name.as_str()]).await.map_err(db("find the secret"))?
            else {
                return Ok(None);
            };
            let id: i64 = row.get(0);
            let stmt = client
                .prepare_cached(
                    "SELECT version, kms_key_id, created_at, superseded_at, expires_at, shredded_at \
                     FROM vault.secret_versions WHERE secret_id = $1 ORDER BY version DESC",
                )
                .await
                .map_err(db("prepare the history read"))?;
            client.query(&stmt, &[&id]).await.map_err(db("read the version history")).map(Some)
        }
        .await)?;
        rows.map(|rows| rows.iter().map(version_from_row).collect()).transpose()
    }

    /// Automatic secrets of the owners `filter` selects whose rotation is due at `now`, oldest
    /// slot first. Both read the `secrets_due` index in slot order (no sort); `ApiOwned` filters
    /// that range, so the due resource-owned rows it skips cost index reads, never the batch.
    pub async fn due_rotations(
        &self,
        now: Timestamp,
        filter: DueFilter,
        limit: u32,
    ) -> Result<Vec<DueRotation>, StoreError> {
        let limit = i64::from(page_size(limit));
        let sql = match filter {
            DueFilter::All => concat!(
                due_select!(),
                "WHERE deleted_at IS NULL AND next_rotation_at <= $1 ORDER BY next_rotation_at LIMIT $2"
            ),
            DueFilter::ApiOwned => concat!(
                due_select!(),
                "WHERE deleted_at IS NULL AND next_rotation_at <= $1 AND owner_kind = 'api' \
                 ORDER BY next_rotation_at LIMIT $2"
            ),
        };
        let rows: Vec<Row> = with_writer!(self, |client| {
            async {
                let stmt = client.prepare_cached(sql).await.map_err(db("prepare the due query"))?;
                client.query(&stmt, &[&now, &limit]).await.map_err(db("find due rotations"))
            }
            .await
        })?;
        rows.iter()
            .map(|r| {
                Ok(DueRotation {
                    name: parse_name(r.get(0))?,
                    owner: owner_from(r.get(1), r.get(2), r.get(3), r.get(4))?,
                    current_version: to_u32(r.get(5))?,
                    next_rotation_at: r.get(6),
                })
            })
            .collect()
    }

    /// When the controller must look at this secret again: the earlier of its next rotation and
    /// its next grace expiry (possibly in the past: shred now). `None` if nothing is scheduled.
    pub async fn next_wakeup(&self, name: &SecretName) -> Result<Option<Timestamp>, StoreError> {
        let row: Option<Row> = with_writer!(self, |client| async {
            let stmt = client
                .prepare_cached(
                    "SELECT s.next_rotation_at, \
                       (SELECT min(v.expires_at) FROM vault.secret_versions v \
                        WHERE v.secret_id = s.id AND v.shredded_at IS NULL AND v.expires_at IS NOT NULL) \
                     FROM vault.secrets s WHERE s.name = $1 AND s.deleted_at IS NULL",
                )
                .await
                .map_err(db("prepare the wakeup query"))?;
            client.query_opt(&stmt, &[&name.as_str()]).await.map_err(db("read the next wakeup"))
        }
        .await)?;
        Ok(row.and_then(|r| {
            let rotation: Option<Timestamp> = r.get(0);
            let expiry: Option<Timestamp> = r.get(1);
            schedule::next_wakeup(rotation, expiry)
        }))
    }

    async fn open_row(&self, row: &Row) -> Result<SecretValue, StoreError> {
        let name = parse_name(row.get(0))?;
        let kind = parse_kind(row.get(1))?;
        let version = to_u32(row.get(3))?;
        let wrapped = WrappedDek { key_id: row.get(6), blob: row.get(7) };
        let nonce: &[u8] = row.get(8);
        let ciphertext: &[u8] = row.get(9);
        let ctx = EncryptionContext { secret: name.as_str(), version };
        let dek = self.dek(&wrapped, ctx).await?;
        let value = envelope::open(&dek, name.as_str(), version, nonce, ciphertext)
            .map_err(error::crypto("open the sealed value"))?;
        drop(dek);
        Ok(SecretValue {
            name,
            kind,
            version,
            created_at: row.get(4),
            expires_at: row.get(5),
            next_rotation_at: row.get(2),
            value,
        })
    }

    /// The fields a version write needs, read from the primary without locks.
    async fn live_row(&self, name: &SecretName) -> Result<Option<LiveRow>, StoreError> {
        let row: Option<Row> = with_writer!(self, |client| async {
            let stmt = client
                .prepare_cached(concat!(meta_select!(), "WHERE s.name = $1 AND s.deleted_at IS NULL"))
                .await
                .map_err(db("prepare the secret read"))?;
            client.query_opt(&stmt, &[&name.as_str()]).await.map_err(db("read the secret"))
        }
        .await)?;
        let Some(row) = row else { return Ok(None) };
        let meta = meta_from_row(&row)?;
        Ok(Some(LiveRow {
            id: row.get(0),
            kind: meta.kind,
            current_version: meta.current_version,
            rotation_interval: meta.rotation_interval,
            grace_period: meta.grace_period,
            generator: meta.generator,
            next_rotation_at: meta.next_rotation_at,
        }))
    }
}

/// Which node a value read is answered by.
#[derive(Clone, Copy)]
enum Consistency {
    /// The reader pool: any node, possibly behind the primary.
    Replica,
    /// The primary: read-your-writes.
    Primary,
}

struct LiveRow {
    id: i64,
    kind: SecretKind,
    current_version: u32,
    rotation_interval: Option<Duration>,
    grace_period: Duration,
    generator: Option<GeneratorSpec>,
    next_rotation_at: Option<Timestamp>,
}

struct Settings {
    interval: Option<Duration>,
    grace: Duration,
    generator: Option<GeneratorSpec>,
}

impl Settings {
    fn validate(
        kind: SecretKind,
        interval: Option<Duration>,
        grace: Duration,
        generator: Option<GeneratorSpec>,
    ) -> Result<Self, StoreError> {
        whole_seconds(grace, "grace_period")?;
        match kind {
            SecretKind::Automatic => {
                let interval = interval.ok_or_else(|| {
                    StoreError::invalid("rotation_interval", "required for automatic secrets")
                })?;
                whole_seconds(interval, "rotation_interval")?;
                if interval < Duration::from_secs(1) {
                    return Err(StoreError::invalid("rotation_interval", "must be at least 1s"));
                }
                Ok(Self { interval: Some(interval), grace, generator: Some(generator.unwrap_or_default()) })
            }
            SecretKind::Manual => {
                if interval.is_some() {
                    return Err(StoreError::invalid("rotation_interval", "only automatic secrets rotate"));
                }
                if generator.is_some() {
                    return Err(StoreError::invalid("generator", "only automatic secrets have a generator"));
                }
                Ok(Self { interval: None, grace, generator: None })
            }
        }
    }
}

/// PostgreSQL keeps microseconds; truncate so returned values equal what was stored.
/// What `vault.secrets.last_rotate_request` holds for a request: lowercase hex SHA-256 (any
/// length of nonce fits the column; a nonce is not secret, the digest only bounds its size).
fn request_digest(request: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(request.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn db_time(t: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
}

fn whole_seconds(d: Duration, field: &'static str) -> Result<(), StoreError> {
    if d.subsec_nanos() != 0 {
        return Err(StoreError::invalid(field, "must be a whole number of seconds"));
    }
    if i64::try_from(d.as_secs()).is_err() {
        return Err(StoreError::invalid(field, "is too large"));
    }
    Ok(())
}

fn secs_i64(d: Duration) -> i64 {
    // Callers validated with `whole_seconds`, which bounds the value.
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn validate_description(d: Option<String>) -> Result<Option<String>, StoreError> {
    match d {
        Some(d) if d.is_empty() => Ok(None),
        Some(d) if d.chars().count() > MAX_DESCRIPTION => {
            Err(StoreError::invalid("description", format!("must be at most {MAX_DESCRIPTION} characters")))
        }
        other => Ok(other),
    }
}

fn generate(generator: Option<GeneratorSpec>) -> Result<SecretBytes, StoreError> {
    generator.unwrap_or_default().generate().map_err(|_| StoreError::Internal("failed to generate a value"))
}

fn next_version(current: u32) -> Result<u32, StoreError> {
    current
        .checked_add(1)
        .filter(|v| i32::try_from(*v).is_ok())
        .ok_or(StoreError::Conflict("the secret has reached the maximum version".into()))
}

fn page_size(limit: u32) -> u32 {
    if limit == 0 { DEFAULT_PAGE } else { limit.min(MAX_PAGE) }
}

fn not_found(name: &SecretName) -> StoreError {
    StoreError::NotFound { what: "secret", name: name.as_str().to_owned() }
}

fn already_exists(
    e: tokio_postgres::Error,
    name: &SecretName,
    owner: &Owner,
) -> Result<StoreError, tokio_postgres::Error> {
    match unique_violation(&e) {
        Some("secrets_live_owner_uid") => {
            Ok(StoreError::AlreadyExists { what: "secret for resource", name: owner.display_name() })
        }
        Some(_) => Ok(StoreError::AlreadyExists { what: "secret", name: name.as_str().to_owned() }),
        None => Err(e),
    }
}

fn check_owner(meta: &SecretMeta, requester: &Owner) -> Result<(), StoreError> {
    match (&meta.owner, requester) {
        (Owner::Api, Owner::Api) => Ok(()),
        (Owner::Resource { uid: a, .. }, Owner::Resource { uid: b, .. }) if a == b => Ok(()),
        (Owner::Resource { namespace, name, .. }, _) => {
            Err(StoreError::OwnedByResource { namespace: namespace.clone(), name: name.clone() })
        }
        (Owner::Api, Owner::Resource { .. }) => Err(StoreError::Conflict(format!(
            "secret {:?} is managed through the API, not by a VaultSecret",
            meta.name.as_str()
        ))),
    }
}

async fn insert_version(
    tx: &deadpool_postgres::Transaction<'_>,
    id: i64,
    version: i32,
    s: &SealedVersion,
    now: Timestamp,
) -> Result<(), StoreError> {
    let stmt = tx.prepare_cached(INSERT_VERSION).await.map_err(db("prepare the version insert"))?;
    let params: [&(dyn ToSql + Sync); 7] = [
        &id,
        &version,
        &s.wrapped.key_id,
        &s.wrapped.blob,
        &s.sealed.nonce.as_slice(),
        &s.sealed.ciphertext,
        &now,
    ];
    tx.execute(&stmt, &params).await.map_err(db("insert the sealed version"))?;
    Ok(())
}

fn owner_columns(owner: &Owner) -> (&'static str, Option<&str>, Option<&str>, Option<&str>) {
    match owner {
        Owner::Api => ("api", None, None, None),
        Owner::Resource { uid, namespace, name } => ("resource", Some(uid), Some(namespace), Some(name)),
    }
}

fn generator_columns(g: Option<GeneratorSpec>) -> (Option<i32>, Option<&'static str>) {
    match g {
        Some(g) => (i32::try_from(g.length()).ok(), Some(g.charset().as_str())),
        None => (None, None),
    }
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: "secret row", detail: detail.into() }
}

pub(crate) fn parse_name(raw: &str) -> Result<SecretName, StoreError> {
    SecretName::parse(raw).map_err(|e| corrupt(format!("invalid name: {e}")))
}

pub(crate) fn parse_kind(raw: &str) -> Result<SecretKind, StoreError> {
    raw.parse().map_err(|_| corrupt(format!("unknown kind {raw:?}")))
}

pub(crate) fn to_u32(v: i32) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt("negative version"))
}

fn owner_from(
    kind: &str,
    uid: Option<String>,
    ns: Option<String>,
    name: Option<String>,
) -> Result<Owner, StoreError> {
    match (kind, uid, ns, name) {
        ("api", ..) => Ok(Owner::Api),
        ("resource", Some(uid), Some(namespace), Some(name)) => Ok(Owner::Resource { uid, namespace, name }),
        _ => Err(corrupt("invalid owner columns")),
    }
}

fn duration_from(secs: Option<i64>) -> Result<Option<Duration>, StoreError> {
    secs.map(|s| u64::try_from(s).map(Duration::from_secs).map_err(|_| corrupt("negative duration")))
        .transpose()
}

pub(crate) fn meta_from_row(r: &Row) -> Result<SecretMeta, StoreError> {
    let generator = match (r.get::<_, Option<i32>>(10), r.get::<_, Option<&str>>(11)) {
        (Some(len), Some(charset)) => {
            let charset: Charset = charset.parse().map_err(|_| corrupt("unknown charset"))?;
            let len = u32::try_from(len).map_err(|_| corrupt("negative generator length"))?;
            Some(GeneratorSpec::new(len, charset).map_err(|e| corrupt(e.to_string()))?)
        }
        _ => None,
    };
    Ok(SecretMeta {
        name: parse_name(r.get(1))?,
        kind: parse_kind(r.get(2))?,
        owner: owner_from(r.get(3), r.get(4), r.get(5), r.get(6))?,
        description: r.get(7),
        rotation_interval: duration_from(r.get(8))?,
        grace_period: duration_from(Some(r.get(9)))?.unwrap_or_default(),
        generator,
        current_version: to_u32(r.get(12))?,
        next_rotation_at: r.get(13),
        created_at: r.get(14),
        updated_at: r.get(15),
        last_rotated_at: r.get(16),
    })
}

fn version_from_row(r: &Row) -> Result<VersionMeta, StoreError> {
    Ok(VersionMeta {
        version: to_u32(r.get(0))?,
        kms_key_id: r.get(1),
        created_at: r.get(2),
        superseded_at: r.get(3),
        expires_at: r.get(4),
        shredded_at: r.get(5),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_reject_kind_mismatches() {
        let spec = GeneratorSpec::default();
        assert!(Settings::validate(SecretKind::Automatic, None, Duration::ZERO, None).is_err());
        assert!(
            Settings::validate(SecretKind::Manual, Some(Duration::from_secs(5)), Duration::ZERO, None)
                .is_err()
        );
        assert!(Settings::validate(SecretKind::Manual, None, Duration::ZERO, Some(spec)).is_err());
        assert!(
            Settings::validate(
                SecretKind::Automatic,
                Some(Duration::from_millis(1500)),
                Duration::ZERO,
                None
            )
            .is_err()
        );
        let ok =
            Settings::validate(SecretKind::Automatic, Some(Duration::from_secs(60)), Duration::ZERO, None)
                .unwrap();
        assert_eq!(ok.generator, Some(spec));
    }

    #[test]
    fn owner_guard() {
        let meta = |owner| SecretMeta {
            name: SecretName::parse("ns/a").unwrap(),
            kind: SecretKind::Manual,
            owner,
            description: None,
            current_version: 0,
            rotation_interval: None,
            grace_period: Duration::ZERO,
            generator: None,
            next_rotation_at: None,
            last_rotated_at: None,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
        };
        let res = |uid: &str| Owner::Resource { uid: uid.into(), namespace: "ns".into(), name: "a".into() };
        assert!(check_owner(&meta(Owner::Api), &Owner::Api).is_ok());
        assert!(check_owner(&meta(res("u1")), &res("u1")).is_ok());
        assert!(matches!(
            check_owner(&meta(res("u1")), &Owner::Api),
            Err(StoreError::OwnedByResource { .. })
        ));
        assert!(matches!(check_owner(&meta(res("u1")), &res("u2")), Err(StoreError::OwnedByResource { .. })));
        assert!(matches!(check_owner(&meta(Owner::Api), &res("u1")), Err(StoreError::Conflict(_))));
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0), DEFAULT_PAGE);
        assert_eq!(page_size(5), 5);
        assert_eq!(page_size(100_000), MAX_PAGE);
    }
}
