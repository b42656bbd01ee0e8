//! The OpenAPI 3 document, generated from the handler annotations and wire types. Committed as
//! `api/openapi.json`; a test fails when the committed copy drifts from this.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::handlers::{admin, ops, secrets};

#[derive(OpenApi)]
#[openapi(
    info(title = "hyperion-vault API", description = "Allowlisted reads, constant-time verify, token-guarded management. Every error is `{\"error\": \"...\"}`; every response carries `Cache-Control: no-store`."),
    paths(
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        secrets::read, secrets::verify, secrets::batch,
        secrets::create, secrets::list, secrets::versions, secrets::update, secrets::rotate, secrets::remove,
        admin::create_token, admin::list_tokens, admin::revoke_token,
        admin::create_role, admin::list_roles, admin::get_role, admin::replace_role, admin::delete_role,
        admin::read_audit,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "reads", description = "Guarded by the client IP allowlist"),
        (name = "management", description = "Guarded by a bearer token and RBAC"),
        (name = "admin", description = "Bearer token of an admin role"),
        (name = "ops", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The document as pretty JSON with a trailing newline (the committed file's exact form).
pub fn document_json() -> String {
    let doc = ApiDoc::openapi();
    // Serializing a `serde_json`-compatible tree of owned strings and numbers cannot fail.
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}
