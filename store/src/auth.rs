//! Management authentication: roles, admin tokens (stored as SHA-256 fingerprints only) and
//! failed-authentication lockouts. All on the primary, so every API replica sees changes at once.

use hyperion_vault_core::rbac::{Role, Rule};
use hyperion_vault_core::token::Fingerprint;
use jiff::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::error::{StoreError, db, is_code, unique_violation};
use crate::model::{LockoutPolicy, LockoutState, NewRole, RoleRecord, TokenMeta, TokenRecord};
use crate::secrets::db_time;
use crate::store::{Store, with_writer};

/// The role and token [`Store::ensure_bootstrap_admin`] creates.
pub const BOOTSTRAP_ROLE: &str = "admin";
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap-admin";
const MAX_RULES: usize = 1000;

fn valid_object_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_name(field: &'static str, name: &str) -> Result<(), StoreError> {
    if valid_object_name(name) {
        Ok(())
    } else {
        Err(StoreError::invalid(field, "must be 1-64 characters of A-Z a-z 0-9 . _ -"))
    }
}

impl Store {
    /// Creates a role; `AlreadyExists` if the name is taken.
    pub async fn create_role(&self, role: NewRole, now: Timestamp) -> Result<RoleRecord, StoreError> {
        self.write_role(role, now, false).await
    }

    /// Replaces a role's description, admin flag and rules; `NotFound` if it does not exist.
    pub async fn update_role(&self, role: NewRole, now: Timestamp) -> Result<RoleRecord, StoreError> {
        self.write_role(role, now, true).await
    }

    async fn write_role(
        &self,
        role: NewRole,
        now: Timestamp,
        replace: bool,
    ) -> Result<RoleRecord, StoreError> {
        let now = db_time(now);
        check_name("name", &role.name)?;
        if role.rules.len() > MAX_RULES {
            return Err(StoreError::invalid("permissions", format!("at most {MAX_RULES} rules")));
        }
        if role.description.as_ref().is_some_and(|d| d.chars().count() > 1024) {
            return Err(StoreError::invalid("description", "must be at most 1024 characters"));
        }
        let description = role.description.clone().filter(|d| !d.is_empty());
        let created: Timestamp = with_writer!(self, |client| {
            async {
            let tx = client.transaction().await.map_err(db("begin the role transaction"))?;
            let created: Timestamp = if replace {
                let stmt = tx
                    .prepare_cached(
                        "UPDATE vault.roles SET description = $2, is_admin = $3, updated_at = GREATEST($4, created_at) \
                         WHERE name = $1 RETURNING created_at",
                    )
                    .await
                    .map_err(db("prepare the role update"))?;
                let row = tx
                    .query_opt(&stmt, &[&role.name, &description, &role.is_admin, &now])
                    .await
                    .map_err(db("update the role"))?
                    .ok_or_else(|| StoreError::NotFound { what: "role", name: role.name.clone() })?;
                let stmt = tx
                    .prepare_cached("DELETE FROM vault.role_permissions WHERE role_name = $1")
                    .await
                    .map_err(db("prepare the rule reset"))?;
                tx.execute(&stmt, &[&role.name]).await.map_err(db("reset the role's rules"))?;
                row.get(0)
            } else {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO vault.roles (name, description, is_admin, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $4)",
                    )
                    .await
                    .map_err(db("prepare the role insert"))?;
                tx.execute(&stmt, &[&role.name, &description, &role.is_admin, &now]).await.map_err(|e| {
                    if unique_violation(&e).is_some() {
                        StoreError::AlreadyExists { what: "role", name: role.name.clone() }
                    } else {
                        db("insert the role")(e)
                    }
                })?;
                now
            };
            let stmt = tx
                .prepare_cached("INSERT INTO vault.role_permissions (role_name, position, action, path) VALUES ($1, $2, $3, $4)")
                .await
                .map_err(db("prepare the rule insert"))?;
            for (i, rule) in role.rules.iter().enumerate() {
                let position = i as i32;
                tx.execute(&stmt, &[&role.name, &position, &rule.action.as_str(), &rule.path.to_string()])
                    .await
                    .map_err(|e| {
                        if is_code(&e, &SqlState::CHECK_VIOLATION) {
                            StoreError::invalid("permissions", format!("rule {} is not storable", i + 1))
                        } else {
                            db("insert a role rule")(e)
                        }
                    })?;
            }
            tx.commit().await.map_err(db("commit the role"))?;
            Ok(created)
        }
        .await
        })?;
        Ok(RoleRecord {
            name: role.name,
            description,
            is_admin: role.is_admin,
            rules: role.rules,
            created_at: created,
            updated_at: now.max(created),
        })
    }

    pub async fn get_role(&self, name: &str) -> Result<Option<RoleRecord>, StoreError> {
        Ok(self.load_roles(Some(name)).await?.into_iter().next())
    }

    /// All roles, by name.
    pub async fn list_roles(&self) -> Result<Vec<RoleRecord>, StoreError> {
        self.load_roles(None).await
    }

    async fn load_roles(&self, only: Option<&str>) -> Result<Vec<RoleRecord>, StoreError> {
        let rows: Vec<Row> = with_writer!(self, |client| {
            async {
            let stmt = client
                .prepare_cached(
                    "SELECT r.name, r.description, r.is_admin, r.created_at, r.updated_at, \
                       COALESCE(array_agg(p.action ORDER BY p.position) FILTER (WHERE p.action IS NOT NULL), '{}'), \
                       COALESCE(array_agg(p.path ORDER BY p.position) FILTER (WHERE p.path IS NOT NULL), '{}') \
                     FROM vault.roles r LEFT JOIN vault.role_permissions p ON p.role_name = r.name \
                     WHERE $1::text IS NULL OR r.name = $1 GROUP BY r.name ORDER BY r.name",
                )
                .await
                .map_err(db("prepare the role read"))?;
            client.query(&stmt, &[&only]).await.map_err(db("read roles"))
        }
        .await
        })?;
        rows.iter().map(role_from_row).collect()
    }

    /// Deletes a role. `Conflict` while active tokens use it; `false` if it did not exist.
    pub async fn delete_role(&self, name: &str) -> Result<bool, StoreError> {
        with_writer!(self, |client| {
            async {
            let stmt = client
                .prepare_cached(
                    "DELETE FROM vault.roles WHERE name = $1 \
                     AND NOT EXISTS (SELECT 1 FROM vault.admin_tokens t WHERE t.role_name = $1 AND t.revoked_at IS NULL)",
                )
                .await
                .map_err(db("prepare the role delete"))?;
            match client.execute(&stmt, &[&name]).await {
                Ok(1) => Ok(true),
                Ok(_) => {
                    let exists = client
                        .query_opt("SELECT 1 FROM vault.roles WHERE name = $1", &[&name])
                        .await
                        .map_err(db("check the role"))?
                        .is_some();
                    if exists {
                        Err(StoreError::Conflict(format!("role {name:?} is used by active tokens; revoke them first")))
                    } else {
                        Ok(false)
                    }
                }
                // Revoked tokens still reference the role (their history is kept).
                Err(e) if is_code(&e, &SqlState::FOREIGN_KEY_VIOLATION) => {
                    Err(StoreError::Conflict(format!("role {name:?} is referenced by revoked tokens' history")))
                }
                Err(e) => Err(db("delete the role")(e)),
            }
        }
        .await
        })
    }

    /// Records a token by fingerprint. `AlreadyExists` if an unrevoked token has this name;
    /// `Invalid(role)` if the role does not exist.
    pub async fn create_token(
        &self,
        name: &str,
        role: &str,
        fingerprint: &Fingerprint,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<TokenMeta, StoreError> {
        let now = db_time(now);
        let expires_at = expires_at.map(db_time);
        check_name("name", name)?;
        if expires_at.is_some_and(|e| e <= now) {
            return Err(StoreError::invalid("expires_in_secs", "must be in the future"));
        }
        with_writer!(self, |client| async {
            let stmt = client
                .prepare_cached(
                    "INSERT INTO vault.admin_tokens (name, fingerprint, role_name, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .await
                .map_err(db("prepare the token insert"))?;
            client
                .execute(&stmt, &[&name, &fingerprint.as_bytes().as_slice(), &role, &now, &expires_at])
                .await
                .map_err(|e| {
                    if unique_violation(&e).is_some() {
                        StoreError::AlreadyExists { what: "token", name: name.to_owned() }
                    } else if is_code(&e, &SqlState::FOREIGN_KEY_VIOLATION) {
                        StoreError::invalid("role", format!("role {role:?} does not exist"))
                    } else {
                        db("insert the token")(e)
                    }
                })?;
            Ok(())
        }
        .await)?;
        Ok(TokenMeta {
            name: name.to_owned(),
            role: role.to_owned(),
            created_at: now,
            expires_at,
            revoked_at: None,
        })
    }

    /// The active (unrevoked, unexpired) token with this fingerprint, with its role.
    pub async fn lookup_token(
        &self,
        fingerprint: &Fingerprint,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let row: Option<Row> = with_writer!(self, |client| {
            async {
            let stmt = client
                .prepare_cached(
                    "SELECT t.name, t.role_name, t.created_at, t.expires_at, r.is_admin, \
                       COALESCE(array_agg(p.action ORDER BY p.position) FILTER (WHERE p.action IS NOT NULL), '{}'), \
                       COALESCE(array_agg(p.path ORDER BY p.position) FILTER (WHERE p.path IS NOT NULL), '{}') \
                     FROM vault.admin_tokens t JOIN vault.roles r ON r.name = t.role_name \
                     LEFT JOIN vault.role_permissions p ON p.role_name = r.name \
                     WHERE t.fingerprint = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $2) \
                     GROUP BY t.id, r.name",
                )
                .await
                .map_err(db("prepare the token lookup"))?;
            client
                .query_opt(&stmt, &[&fingerprint.as_bytes().as_slice(), &now])
                .await
                .map_err(db("look up the token"))
        }
        .await
        })?;
        let Some(r) = row else { return Ok(None) };
        let rules = rules_from(r.get(5), r.get(6))?;
        Ok(Some(TokenRecord {
            name: r.get(0),
            role_name: r.get(1),
            created_at: r.get(2),
            expires_at: r.get(3),
            role: Role { is_admin: r.get(4), rules },
        }))
    }

    /// Unrevoked tokens (expired ones included, so they can be cleaned up), by name.
    pub async fn list_tokens(&self) -> Result<Vec<TokenMeta>, StoreError> {
        let rows: Vec<Row> = with_writer!(self, |client| async {
            let stmt = client
                .prepare_cached(
                    "SELECT name, role_name, created_at, expires_at, revoked_at FROM vault.admin_tokens \
                     WHERE revoked_at IS NULL ORDER BY name",
                )
                .await
                .map_err(db("prepare the token list"))?;
            client.query(&stmt, &[]).await.map_err(db("list tokens"))
        }
        .await)?;
        Ok(rows
            .iter()
            .map(|r| TokenMeta {
                name: r.get(0),
                role: r.get(1),
                created_at: r.get(2),
                expires_at: r.get(3),
                revoked_at: r.get(4),
            })
            .collect())
    }

    /// Revokes the active token of this name; `false` if there was none. The name is free again.
    pub async fn revoke_token(&self, name: &str, now: Timestamp) -> Result<bool, StoreError> {
        with_writer!(self, |client| async {
            let stmt = client
                .prepare_cached(
                    "UPDATE vault.admin_tokens SET revoked_at = GREATEST($2, created_at) \
                     WHERE name = $1 AND revoked_at IS NULL",
                )
                .await
                .map_err(db("prepare the revoke"))?;
            Ok(client.execute(&stmt, &[&name, &now]).await.map_err(db("revoke the token"))? > 0)
        }
        .await)
    }

    /// Creates role `admin` and token `bootstrap-admin` with this fingerprint unless they exist.
    /// Idempotent and race-free across replicas. Returns whether this call created the token.
    pub async fn ensure_bootstrap_admin(
        &self,
        fingerprint: &Fingerprint,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        with_writer!(self, |client| {
            async {
            let tx = client.transaction().await.map_err(db("begin the bootstrap"))?;
            tx.execute(
                "INSERT INTO vault.roles (name, description, is_admin, created_at, updated_at) \
                 VALUES ($1, 'Full access (created by the bootstrap token)', true, $2, $2) ON CONFLICT (name) DO NOTHING",
                &[&BOOTSTRAP_ROLE, &now],
            )
            .await
            .map_err(db("create the admin role"))?;
            let created = tx
                .execute(
                    "INSERT INTO vault.admin_tokens (name, fingerprint, role_name, created_at) \
                     SELECT $1, $2, $3, $4 WHERE NOT EXISTS \
                       (SELECT 1 FROM vault.admin_tokens WHERE name = $1 OR fingerprint = $2) \
                     ON CONFLICT DO NOTHING",
                    &[&BOOTSTRAP_TOKEN_NAME, &fingerprint.as_bytes().as_slice(), &BOOTSTRAP_ROLE, &now],
                )
                .await
                .map_err(db("create the bootstrap token"))?;
            tx.commit().await.map_err(db("commit the bootstrap"))?;
            Ok(created > 0)
        }
        .await
        })
    }

    /// Counts a failed authentication of `client_key`; locks it out for `policy.lockout` once
    /// `policy.threshold` failures fall within `policy.window`. Atomic across replicas.
    pub async fn record_auth_failure(
        &self,
        client_key: &str,
        now: Timestamp,
        policy: &LockoutPolicy,
    ) -> Result<LockoutState, StoreError> {
        let window_start = now
            .checked_sub(jiff::SignedDuration::try_from(policy.window).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(Timestamp::MIN);
        let locked_until = now
            .checked_add(jiff::SignedDuration::try_from(policy.lockout).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(Timestamp::MAX);
        let threshold = i32::try_from(policy.threshold.max(1)).unwrap_or(i32::MAX);
        let key = bounded_key(client_key);
        let row: Row = with_writer!(self, |client| {
            async {
            let stmt = client
                .prepare_cached(
                    "INSERT INTO vault.auth_lockouts AS l (client_key, failures, window_started_at, locked_until) \
                     VALUES ($1, 1, $2, CASE WHEN 1 >= $4 THEN $5::timestamptz END) \
                     ON CONFLICT (client_key) DO UPDATE SET \
                       failures = CASE WHEN l.window_started_at <= $3 THEN 1 ELSE l.failures + 1 END, \
                       window_started_at = CASE WHEN l.window_started_at <= $3 THEN $2 ELSE l.window_started_at END, \
                       locked_until = CASE \
                         WHEN (CASE WHEN l.window_started_at <= $3 THEN 1 ELSE l.failures + 1 END) >= $4 THEN $5 \
                         ELSE l.locked_until END \
                     RETURNING failures, locked_until",
                )
                .await
                .map_err(db("prepare the failure count"))?;
            client
                .query_one(&stmt, &[&key, &now, &window_start, &threshold, &locked_until])
                .await
                .map_err(db("count an authentication failure"))
        }
        .await
        })?;
        let failures: i32 = row.get(0);
        let until: Option<Timestamp> = row.get(1);
        Ok(LockoutState {
            failures: u32::try_from(failures).unwrap_or(0),
            locked_until: until.filter(|u| *u > now),
        })
    }

    /// `Some(until)` while `client_key` is locked out.
    pub async fn is_locked_out(
        &self,
        client_key: &str,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let key = bounded_key(client_key);
        let row: Option<Row> = with_writer!(self, |client| {
            async {
            let stmt = client
                .prepare_cached(
                    "SELECT locked_until FROM vault.auth_lockouts WHERE client_key = $1 AND locked_until > $2",
                )
                .await
                .map_err(db("prepare the lockout check"))?;
            client.query_opt(&stmt, &[&key, &now]).await.map_err(db("check the lockout"))
        }
        .await
        })?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Forgets a client's failures (after a successful authentication).
    pub async fn clear_failures(&self, client_key: &str) -> Result<(), StoreError> {
        let key = bounded_key(client_key);
        with_writer!(self, |client| async {
            let stmt = client
                .prepare_cached("DELETE FROM vault.auth_lockouts WHERE client_key = $1")
                .await
                .map_err(db("prepare the failure reset"))?;
            client.execute(&stmt, &[&key]).await.map_err(db("clear failures"))?;
            Ok(())
        }
        .await)
    }
}

/// Client keys are IPs or similar; anything longer is cut on a character boundary.
fn bounded_key(key: &str) -> String {
    let key = if key.is_empty() { "-" } else { key };
    key.chars().take(256).collect()
}

fn rules_from(actions: Vec<String>, paths: Vec<String>) -> Result<Vec<Rule>, StoreError> {
    actions
        .iter()
        .zip(paths.iter())
        .map(|(a, p)| {
            Rule::parse(a, p).map_err(|e| StoreError::Corrupt { what: "role rule", detail: e.to_string() })
        })
        .collect()
}

fn role_from_row(r: &Row) -> Result<RoleRecord, StoreError> {
    Ok(RoleRecord {
        name: r.get(0),
        description: r.get(1),
        is_admin: r.get(2),
        created_at: r.get(3),
        updated_at: r.get(4),
        rules: rules_from(r.get(5), r.get(6))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        assert!(valid_object_name("ci-deployer.v2"));
        assert!(!valid_object_name(""));
        assert!(!valid_object_name("a/b"));
        assert!(!valid_object_name(&"x".repeat(65)));
    }

    #[test]
    fn keys_are_bounded() {
        assert_eq!(bounded_key(""), "-");
        assert_eq!(bounded_key(&"é".repeat(300)).chars().count(), 256);
    }
}
