//! An in-memory [`Backend`]: the test twin of the PostgreSQL store, for router tests that need no
//! database, and for `openapi`-style commands. Not selectable in production configuration.
//!
//! It follows the store's contract (versions, grace, ownership, tokens, roles, lockouts, audit)
//! closely enough to exercise every HTTP path, and can simulate an unavailable database or KMS.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use hyperion_vault_core::generator::GeneratorSpec;
use hyperion_vault_core::keywrap::BoxFuture;
use hyperion_vault_core::name::SecretName;
use hyperion_vault_core::rbac::Role;
use hyperion_vault_core::secret::SecretBytes;
use hyperion_vault_core::token::Fingerprint;
use hyperion_vault_core::verify::find_match;
use jiff::{SignedDuration, Timestamp};

use crate::backend::*;

struct Version {
    version: u32,
    value: Option<Vec<u8>>,
    created_at: Timestamp,
    superseded_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
}

struct Secret {
    meta: SecretMeta,
    generator: Option<GeneratorSpec>,
    versions: Vec<Version>,
}

struct TokenRow {
    name: String,
    role: String,
    fingerprint: Fingerprint,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
}

#[derive(Default)]
struct Inner {
    secrets: BTreeMap<String, Secret>,
    tokens: Vec<TokenRow>,
    roles: BTreeMap<String, RoleDef>,
    failures: BTreeMap<String, Vec<Timestamp>>,
    locked: BTreeMap<String, Timestamp>,
    audit: Vec<AuditRecord>,
}

#[derive(Default)]
pub struct MemoryBackend {
    inner: Mutex<Inner>,
    pub db_down: AtomicBool,
    pub kms_down: AtomicBool,
}

/// What the store answers for text PostgreSQL refuses (`invalid byte sequence for encoding "UTF8":
/// 0x00`): an internal error, as a query the API should never have sent.
fn nul_in_text() -> BackendError {
    BackendError::Internal("text with a NUL byte: PostgreSQL refuses it".into())
}

fn secs(d: std::time::Duration) -> SignedDuration {
    SignedDuration::from_secs(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> BackendResult<std::sync::MutexGuard<'_, Inner>> {
        if self.db_down.load(Ordering::SeqCst) {
            return Err(BackendError::DatabaseUnavailable(None));
        }
        Ok(self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn kms(&self) -> BackendResult<()> {
        if self.kms_down.load(Ordering::SeqCst) {
            return Err(BackendError::KmsUnavailable(None));
        }
        Ok(())
    }

    /// Test helper: mark a secret as reconciled from a VaultSecret.
    pub fn set_owner(&self, name: &str, namespace: &str, resource: &str) {
        if let Ok(mut g) = self.lock()
            && let Some(s) = g.secrets.get_mut(name)
        {
            s.meta.owner = Owner::Resource { namespace: namespace.into(), name: resource.into() };
        }
    }

    /// Test helper: the audit rows written so far.
    pub fn audit_rows(&self) -> Vec<AuditRecord> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).audit.clone()
    }

    fn value_of(s: &Secret, v: &Version) -> BackendResult<SecretValue> {
        let bytes = v.value.as_ref().ok_or(BackendError::NotFound)?;
        Ok(SecretValue {
            name: s.meta.name.clone(),
            kind: s.meta.kind,
            version: v.version,
            value: SecretBytes::copy_from(bytes),
            created_at: v.created_at,
            next_rotation_at: s.meta.next_rotation_at,
            expires_at: v.expires_at,
        })
    }

    fn add_version(s: &mut Secret, value: &[u8], now: Timestamp) {
        let grace = SignedDuration::from_secs(i64::try_from(s.meta.grace_period_secs).unwrap_or(i64::MAX));
        for v in s.versions.iter_mut().filter(|v| v.superseded_at.is_none()) {
            v.superseded_at = Some(now);
            v.expires_at = now.checked_add(grace).ok();
            if grace.is_zero() {
                v.value = None;
            }
        }
        let version = s.meta.version + 1;
        s.versions.push(Version {
            version,
            value: Some(value.to_vec()),
            created_at: now,
            superseded_at: None,
            expires_at: None,
        });
        s.meta.version = version;
        s.meta.updated_at = now;
        if let Some(i) = s.meta.rotation_interval_secs {
            s.meta.next_rotation_at =
                now.checked_add(SignedDuration::from_secs(i64::try_from(i).unwrap_or(0))).ok();
        }
    }

    fn live(v: &Version, now: Timestamp) -> bool {
        v.value.is_some() && v.expires_at.is_none_or(|e| e > now)
    }

    fn owned_check(s: &Secret) -> BackendResult<()> {
        match &s.meta.owner {
            Owner::Resource { namespace, name } => {
                Err(BackendError::OwnedByResource { namespace: namespace.clone(), name: name.clone() })
            }
            Owner::Api => Ok(()),
        }
    }
}

impl Backend for MemoryBackend {
    fn ping(&self) -> BoxFuture<'_, BackendResult<()>> {
        Box::pin(async move { self.lock().map(|_| ()) })
    }

    fn stats(&self) -> BackendStats {
        BackendStats::default()
    }

    fn create_secret(&self, new: NewSecret) -> BoxFuture<'_, BackendResult<SecretValue>> {
        Box::pin(async move {
            self.kms()?;
            let mut g = self.lock()?;
            if g.secrets.contains_key(new.name.as_str()) {
                return Err(BackendError::AlreadyExists);
            }
            let now = Timestamp::now();
            let mut s = Secret {
                meta: SecretMeta {
                    name: new.name.as_str().to_owned(),
                    kind: new.kind,
                    owner: Owner::Api,
                    description: new.description,
                    version: 0,
                    rotation_interval_secs: new.rotation_interval.map(|d| d.as_secs()),
                    grace_period_secs: new.grace_period.as_secs(),
                    next_rotation_at: None,
                    created_at: now,
                    updated_at: now,
                },
                generator: new.generator,
                versions: Vec::new(),
            };
            Self::add_version(&mut s, new.value.expose(), now);
            let out = Self::value_of(&s, s.versions.last().ok_or(BackendError::NotFound)?)?;
            g.secrets.insert(new.name.into_string(), s);
            Ok(out)
        })
    }

    fn put_value<'a>(
        &'a self,
        name: &'a SecretName,
        value: SecretBytes,
    ) -> BoxFuture<'a, BackendResult<u32>> {
        Box::pin(async move {
            self.kms()?;
            let mut g = self.lock()?;
            let s = g.secrets.get_mut(name.as_str()).ok_or(BackendError::NotFound)?;
            Self::add_version(s, value.expose(), Timestamp::now());
            Ok(s.meta.version)
        })
    }

    fn update_meta<'a>(
        &'a self,
        name: &'a SecretName,
        update: MetaUpdate,
    ) -> BoxFuture<'a, BackendResult<()>> {
        Box::pin(async move {
            let mut g = self.lock()?;
            let s = g.secrets.get_mut(name.as_str()).ok_or(BackendError::NotFound)?;
            Self::owned_check(s)?;
            if update.rotation_interval.is_some() && s.meta.kind == SecretKind::Manual {
                return Err(BackendError::Invalid(
                    "rotation_interval_secs".into(),
                    "is only valid for automatic secrets".into(),
                ));
            }
            if let Some(d) = update.description {
                s.meta.description = Some(d);
            }
            if let Some(i) = update.rotation_interval {
                s.meta.rotation_interval_secs = Some(i.as_secs());
            }
            if let Some(gp) = update.grace_period {
                s.meta.grace_period_secs = gp.as_secs();
            }
            s.meta.updated_at = Timestamp::now();
            Ok(())
        })
    }

    fn rotate<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<SecretValue>> {
        Box::pin(async move {
            self.kms()?;
            let mut g = self.lock()?;
            let s = g.secrets.get_mut(name.as_str()).ok_or(BackendError::NotFound)?;
            let generator = match (s.meta.kind, s.generator) {
                (SecretKind::Automatic, Some(gen_spec)) => gen_spec,
                _ => {
                    return Err(BackendError::Invalid(
                        "kind".into(),
                        "manual secrets are not rotated; PUT a new value".into(),
                    ));
                }
            };
            let value = generator.generate().map_err(|e| BackendError::Internal(Box::new(e)))?;
            Self::add_version(s, value.expose(), Timestamp::now());
            Self::value_of(s, s.versions.last().ok_or(BackendError::NotFound)?)
        })
    }

    fn read_current<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<SecretValue>> {
        Box::pin(async move {
            let g = self.lock()?;
            let s = g.secrets.get(name.as_str()).ok_or(BackendError::NotFound)?;
            self.kms()?;
            let v = s.versions.iter().find(|v| v.version == s.meta.version).ok_or(BackendError::NotFound)?;
            Self::value_of(s, v)
        })
    }

    fn read_version<'a>(
        &'a self,
        name: &'a SecretName,
        version: u32,
    ) -> BoxFuture<'a, BackendResult<SecretValue>> {
        Box::pin(async move {
            let g = self.lock()?;
            let s = g.secrets.get(name.as_str()).ok_or(BackendError::NotFound)?;
            let now = Timestamp::now();
            let v = s
                .versions
                .iter()
                .find(|v| v.version == version && Self::live(v, now))
                .ok_or(BackendError::NotFound)?;
            self.kms()?;
            Self::value_of(s, v)
        })
    }

    fn verify<'a>(
        &'a self,
        name: &'a SecretName,
        presented: &'a [u8],
    ) -> BoxFuture<'a, BackendResult<Option<u32>>> {
        Box::pin(async move {
            let g = self.lock()?;
            let Some(s) = g.secrets.get(name.as_str()) else {
                return Ok(find_match(presented, std::iter::empty()));
            };
            let now = Timestamp::now();
            let live: Vec<(u32, &[u8])> = s
                .versions
                .iter()
                .filter(|v| Self::live(v, now))
                .filter_map(|v| v.value.as_deref().map(|b| (v.version, b)))
                .collect();
            Ok(find_match(presented, live))
        })
    }

    fn list<'a>(
        &'a self,
        prefix: Option<&'a str>,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, BackendResult<Page<SecretMeta, String>>> {
        Box::pin(async move {
            if [prefix, cursor].into_iter().flatten().any(|t| t.contains('\0')) {
                return Err(nul_in_text());
            }
            let g = self.lock()?;
            let range = match cursor {
                Some(a) => {
                    g.secrets.range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                }
                None => g.secrets.range::<str, _>(..),
            };
            let mut items: Vec<SecretMeta> = range
                .filter(|(n, _)| prefix.is_none_or(|p| n.starts_with(p)))
                .take(limit as usize + 1)
                .map(|(_, s)| s.meta.clone())
                .collect();
            let next = if items.len() > limit as usize {
                items.truncate(limit as usize);
                items.last().map(|m| m.name.clone())
            } else {
                None
            };
            Ok(Page { items, next })
        })
    }

    fn metadata<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<SecretMeta>> {
        Box::pin(async move {
            let g = self.lock()?;
            g.secrets.get(name.as_str()).map(|s| s.meta.clone()).ok_or(BackendError::NotFound)
        })
    }

    fn history<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<Vec<VersionMeta>>> {
        Box::pin(async move {
            let g = self.lock()?;
            let s = g.secrets.get(name.as_str()).ok_or(BackendError::NotFound)?;
            Ok(s.versions
                .iter()
                .map(|v| VersionMeta {
                    version: v.version,
                    created_at: v.created_at,
                    superseded_at: v.superseded_at,
                    expires_at: v.expires_at,
                    has_material: v.value.is_some(),
                })
                .collect())
        })
    }

    fn delete<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<()>> {
        Box::pin(async move {
            let mut g = self.lock()?;
            let s = g.secrets.get(name.as_str()).ok_or(BackendError::NotFound)?;
            Self::owned_check(s)?;
            g.secrets.remove(name.as_str());
            Ok(())
        })
    }

    fn lookup_token(
        &self,
        fingerprint: Fingerprint,
        now: Timestamp,
    ) -> BoxFuture<'_, BackendResult<Option<Principal>>> {
        Box::pin(async move {
            let g = self.lock()?;
            let Some(t) = g.tokens.iter().find(|t| t.fingerprint == fingerprint) else {
                return Ok(None);
            };
            if t.expires_at.is_some_and(|e| e <= now) {
                return Ok(None);
            }
            let roles = g
                .roles
                .get(&t.role)
                .map(|r| vec![Role { is_admin: r.is_admin, rules: r.permissions.clone() }])
                .unwrap_or_default();
            Ok(Some(Principal { token_name: t.name.clone(), roles }))
        })
    }

    fn create_token<'a>(
        &'a self,
        name: &'a str,
        role: &'a str,
        fingerprint: Fingerprint,
        expires_at: Option<Timestamp>,
    ) -> BoxFuture<'a, BackendResult<TokenInfo>> {
        Box::pin(async move {
            let mut g = self.lock()?;
            if !g.roles.contains_key(role) {
                return Err(BackendError::NotFound);
            }
            if g.tokens.iter().any(|t| t.name == name) {
                return Err(BackendError::AlreadyExists);
            }
            let row = TokenRow {
                name: name.to_owned(),
                role: role.to_owned(),
                fingerprint,
                created_at: Timestamp::now(),
                expires_at,
            };
            let info = TokenInfo {
                name: row.name.clone(),
                role: row.role.clone(),
                created_at: row.created_at,
                expires_at,
            };
            g.tokens.push(row);
            Ok(info)
        })
    }

    fn list_tokens(&self) -> BoxFuture<'_, BackendResult<Vec<TokenInfo>>> {
        Box::pin(async move {
            let g = self.lock()?;
            Ok(g.tokens
                .iter()
                .map(|t| TokenInfo {
                    name: t.name.clone(),
                    role: t.role.clone(),
                    created_at: t.created_at,
                    expires_at: t.expires_at,
                })
                .collect())
        })
    }

    fn revoke_token<'a>(&'a self, name: &'a str) -> BoxFuture<'a, BackendResult<()>> {
        Box::pin(async move {
            let mut g = self.lock()?;
            let before = g.tokens.len();
            g.tokens.retain(|t| t.name != name);
            if g.tokens.len() == before { Err(BackendError::NotFound) } else { Ok(()) }
        })
    }

    fn ensure_bootstrap_admin(&self, fingerprint: Fingerprint) -> BoxFuture<'_, BackendResult<()>> {
        Box::pin(async move {
            let mut g = self.lock()?;
            g.roles.entry("admin".into()).or_insert_with(|| RoleDef {
                name: "admin".into(),
                description: Some("Full access".into()),
                is_admin: true,
                permissions: vec![],
            });
            if !g.tokens.iter().any(|t| t.name == "bootstrap-admin") {
                g.tokens.push(TokenRow {
                    name: "bootstrap-admin".into(),
                    role: "admin".into(),
                    fingerprint,
                    created_at: Timestamp::now(),
                    expires_at: None,
                });
            }
            Ok(())
        })
    }

    fn create_role(&self, role: RoleDef) -> BoxFuture<'_, BackendResult<RoleDef>> {
        Box::pin(async move {
            let mut g = self.lock()?;
            if g.roles.contains_key(&role.name) {
                return Err(BackendError::AlreadyExists);
            }
            g.roles.insert(role.name.clone(), role.clone());
            Ok(role)
        })
    }

    fn get_role<'a>(&'a self, name: &'a str) -> BoxFuture<'a, BackendResult<RoleDef>> {
        Box::pin(async move { self.lock()?.roles.get(name).cloned().ok_or(BackendError::NotFound) })
    }

    fn list_roles(&self) -> BoxFuture<'_, BackendResult<Vec<RoleDef>>> {
        Box::pin(async move { Ok(self.lock()?.roles.values().cloned().collect()) })
    }

    fn replace_role(&self, role: RoleDef) -> BoxFuture<'_, BackendResult<RoleDef>> {
        Box::pin(async move {
            let mut g = self.lock()?;
            let slot = g.roles.get_mut(&role.name).ok_or(BackendError::NotFound)?;
            *slot = role.clone();
            Ok(role)
        })
    }

    fn delete_role<'a>(&'a self, name: &'a str) -> BoxFuture<'a, BackendResult<()>> {
        Box::pin(async move {
            let mut g = self.lock()?;
            if g.tokens.iter().any(|t| t.role == name) {
                return Err(BackendError::Conflict(format!("role {name} is still used by tokens")));
            }
            g.roles.remove(name).map(|_| ()).ok_or(BackendError::NotFound)
        })
    }

    fn record_auth_failure<'a>(
        &'a self,
        client: &'a str,
        now: Timestamp,
        policy: LockoutPolicy,
    ) -> BoxFuture<'a, BackendResult<Option<Timestamp>>> {
        Box::pin(async move {
            let mut g = self.lock()?;
            let window_start = now.checked_sub(secs(policy.window)).unwrap_or(now);
            let list = g.failures.entry(client.to_owned()).or_default();
            list.retain(|t| *t > window_start);
            list.push(now);
            if list.len() >= policy.max_failures as usize {
                list.clear();
                let until = now.checked_add(secs(policy.lockout)).unwrap_or(now);
                g.locked.insert(client.to_owned(), until);
                return Ok(Some(until));
            }
            Ok(g.locked.get(client).copied().filter(|u| *u > now))
        })
    }

    fn locked_until<'a>(
        &'a self,
        client: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, BackendResult<Option<Timestamp>>> {
        Box::pin(async move { Ok(self.lock()?.locked.get(client).copied().filter(|u| *u > now)) })
    }

    fn clear_failures<'a>(&'a self, client: &'a str) -> BoxFuture<'a, BackendResult<()>> {
        Box::pin(async move {
            let mut g = self.lock()?;
            g.failures.remove(client);
            g.locked.remove(client);
            Ok(())
        })
    }

    fn append_audit_batch<'a>(&'a self, events: &'a [AuditEvent]) -> BoxFuture<'a, BackendResult<()>> {
        Box::pin(async move {
            let texts = events.iter().flat_map(|e| [Some(&e.actor), e.secret.as_ref(), e.detail.as_ref()]);
            if texts.flatten().any(|t| t.contains('\0')) {
                return Err(nul_in_text());
            }
            let mut g = self.lock()?;
            for e in events {
                let id = i64::try_from(g.audit.len()).unwrap_or(i64::MAX) + 1;
                g.audit.push(AuditRecord {
                    id,
                    at: e.at,
                    actor: e.actor.clone(),
                    client_ip: e.client_ip.map(|ip| ip.to_string()),
                    action: e.action.to_owned(),
                    secret: e.secret.clone(),
                    outcome: e.outcome.to_owned(),
                    detail: e.detail.clone(),
                });
            }
            Ok(())
        })
    }

    fn read_audit<'a>(
        &'a self,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, BackendResult<Page<AuditRecord, String>>> {
        Box::pin(async move {
            let before = match cursor {
                None => i64::MAX,
                Some(c) => {
                    c.parse().map_err(|_| BackendError::Invalid("cursor".into(), "not a cursor".into()))?
                }
            };
            let g = self.lock()?;
            let mut items: Vec<AuditRecord> =
                g.audit.iter().rev().filter(|r| r.id < before).take(limit as usize + 1).cloned().collect();
            let next = if items.len() > limit as usize {
                items.truncate(limit as usize);
                items.last().map(|r| r.id.to_string())
            } else {
                None
            };
            Ok(Page { items, next })
        })
    }
}
