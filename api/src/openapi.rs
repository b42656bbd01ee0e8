//! The OpenAPI 3 document, generated from the handler annotations and wire types. Committed as
//! `api/openapi.json`; a test fails when the committed copy drifts from this.
//!
//! Responses carry OpenAPI `links` ([`LINKS`]): how a value in one response (a created secret's
//! name and value, a role's name, a page's `next_cursor`) feeds the next call. Clients can read
//! them as documentation; schemathesis's stateful phase follows them to chain real calls
//! (`e2e/reliability/schemathesis.sh`).

use utoipa::openapi::link::Link;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Response};
use utoipa::{Modify, OpenApi};

use crate::handlers::{admin, ops, secrets};

#[derive(OpenApi)]
#[openapi(
    info(title = "hyperion-vault API", description = "Allowlisted reads, constant-time verify, token-guarded management. Every error is `{\"error\": \"...\"}`, including requests refused before routing (not valid HTTP/1.1: 400; request target over 65,534 bytes: 414; over 100 header fields or about 400 KiB of head: 431), which carry no `X-Request-Id`. Every response carries `Cache-Control: no-store`. A request line and headers must arrive within 10 s of the connection opening or of the previous response, or the connection is closed without an answer."),
    paths(
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        secrets::read, secrets::verify, secrets::batch,
        secrets::create, secrets::list, secrets::versions, secrets::update, secrets::rotate, secrets::remove,
        admin::create_token, admin::list_tokens, admin::revoke_token,
        admin::create_role, admin::list_roles, admin::get_role, admin::replace_role, admin::delete_role,
        admin::read_audit,
    ),
    modifiers(&BearerAuth, &Links),
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

/// One OpenAPI link: from a response of operation `from` to operation `to`.
pub struct LinkSpec {
    pub from: &'static str,
    pub status: &'static str,
    pub name: &'static str,
    pub to: &'static str,
    /// Target parameter name → runtime expression.
    pub parameters: &'static [(&'static str, &'static str)],
    /// Request body fields → runtime expressions (merged into the target's body).
    pub body: &'static [(&'static str, &'static str)],
}

const fn link(
    from: &'static str,
    status: &'static str,
    name: &'static str,
    to: &'static str,
    parameters: &'static [(&'static str, &'static str)],
) -> LinkSpec {
    LinkSpec { from, status, name, to, parameters, body: &[] }
}

const NAME: &[(&str, &str)] = &[("name", "$response.body#/name")];
const NAME_VERSION: &[(&str, &str)] =
    &[("name", "$response.body#/name"), ("version", "$response.body#/version")];
const VALUE: &[(&str, &str)] = &[("value", "$response.body#/value")];

/// Every link in the document. Operation ids are the handler function names. No link leads from a
/// listing to a destructive call (a listing shows other clients' secrets and tokens, and the
/// caller's own token), and none revokes a token other than the one just created.
pub const LINKS: &[LinkSpec] = &[
    // A secret just created (201) or read, rotated (200): its name, version and value.
    link("create", "201", "ReadSecret", "read", NAME),
    link("create", "201", "ReadThisVersion", "read", NAME_VERSION),
    LinkSpec { body: VALUE, ..link("create", "201", "VerifyValue", "verify", NAME) },
    link("create", "201", "UpdateSecret", "update", NAME),
    link("create", "201", "RotateSecret", "rotate", NAME),
    link("create", "201", "ListVersions", "versions", NAME),
    link("create", "201", "DeleteSecret", "remove", NAME),
    link("read", "200", "ReadThisVersion", "read", NAME_VERSION),
    LinkSpec { body: VALUE, ..link("read", "200", "VerifyValue", "verify", NAME) },
    link("read", "200", "UpdateSecret", "update", NAME),
    link("read", "200", "RotateSecret", "rotate", NAME),
    link("read", "200", "ListVersions", "versions", NAME),
    link("read", "200", "DeleteSecret", "remove", NAME),
    link("rotate", "200", "ReadSecret", "read", NAME),
    link("rotate", "200", "ReadThisVersion", "read", NAME_VERSION),
    LinkSpec { body: VALUE, ..link("rotate", "200", "VerifyValue", "verify", NAME) },
    link("rotate", "200", "UpdateSecret", "update", NAME),
    link("rotate", "200", "ListVersions", "versions", NAME),
    link("rotate", "200", "DeleteSecret", "remove", NAME),
    // Metadata after an update: the new version.
    link("update", "200", "ReadSecret", "read", NAME),
    link("update", "200", "ReadThisVersion", "read", NAME_VERSION),
    link("update", "200", "RotateSecret", "rotate", NAME),
    link("update", "200", "ListVersions", "versions", NAME),
    link("update", "200", "DeleteSecret", "remove", NAME),
    link("versions", "200", "ReadSecret", "read", NAME),
    link(
        "versions",
        "200",
        "ReadNewestVersion",
        "read",
        &[("name", "$response.body#/name"), ("version", "$response.body#/versions/0/version")],
    ),
    // Listings: read-only follow-ups and the next page.
    link("list", "200", "ReadFirstSecret", "read", &[("name", "$response.body#/items/0/name")]),
    link("list", "200", "FirstSecretVersions", "versions", &[("name", "$response.body#/items/0/name")]),
    link("list", "200", "NextPage", "list", &[("cursor", "$response.body#/next_cursor")]),
    link("read_audit", "200", "NextPage", "read_audit", &[("cursor", "$response.body#/next_cursor")]),
    link("list_roles", "200", "GetFirstRole", "get_role", &[("name", "$response.body#/items/0/name")]),
    // Tokens and roles.
    link("create_token", "201", "RevokeToken", "revoke_token", NAME),
    link("create_role", "201", "GetRole", "get_role", NAME),
    link("create_role", "201", "ReplaceRole", "replace_role", NAME),
    link("create_role", "201", "DeleteRole", "delete_role", NAME),
    LinkSpec {
        body: &[("role", "$response.body#/name")],
        ..link("create_role", "201", "CreateTokenForRole", "create_token", &[])
    },
    link("get_role", "200", "ReplaceRole", "replace_role", NAME),
    link("get_role", "200", "DeleteRole", "delete_role", NAME),
    LinkSpec {
        body: &[("role", "$response.body#/name")],
        ..link("get_role", "200", "CreateTokenForRole", "create_token", &[])
    },
    link("replace_role", "200", "GetRole", "get_role", NAME),
    link("replace_role", "200", "DeleteRole", "delete_role", NAME),
];

struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for spec in LINKS {
            let Some(response) = response_mut(openapi, spec.from, spec.status) else {
                // Caught by `every_link_lands` below; never silently wrong in a release.
                continue;
            };
            let mut link = Link::builder().operation_id(spec.to);
            for (param, expr) in spec.parameters {
                link = link.parameter(*param, *expr);
            }
            if !spec.body.is_empty() {
                let body: serde_json::Map<String, serde_json::Value> =
                    spec.body.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect();
                link = link.request_body(Some(body));
            }
            response.links.insert(spec.name.to_owned(), RefOr::T(link.build()));
        }
    }
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete].into_iter().flatten()
}

fn response_mut<'a>(
    openapi: &'a mut utoipa::openapi::OpenApi,
    operation_id: &str,
    status: &str,
) -> Option<&'a mut Response> {
    let op = openapi
        .paths
        .paths
        .values_mut()
        .flat_map(operations_mut)
        .find(|op| op.operation_id.as_deref() == Some(operation_id))?;
    match op.responses.responses.get_mut(status)? {
        RefOr::T(response) => Some(response),
        RefOr::Ref(_) => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn operation<'a>(doc: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
        doc["paths"]
            .as_object()?
            .values()
            .flat_map(|item| item.as_object().into_iter().flat_map(|m| m.values()))
            .find(|op| op["operationId"] == id)
    }

    fn resolve<'a>(doc: &'a serde_json::Value, schema: &'a serde_json::Value) -> &'a serde_json::Value {
        match schema["$ref"].as_str() {
            Some(r) => &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
            None => schema,
        }
    }

    /// Every link is in the document, points at an operation that exists, names only parameters
    /// that operation has and body fields its request body has.
    #[test]
    fn every_link_lands() {
        let doc: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        for spec in LINKS {
            let from = operation(&doc, spec.from).unwrap_or_else(|| panic!("no operation {}", spec.from));
            let link = &from["responses"][spec.status]["links"][spec.name];
            assert_eq!(link["operationId"], spec.to, "{} {} {}", spec.from, spec.status, spec.name);
            let to = operation(&doc, spec.to).unwrap_or_else(|| panic!("no operation {}", spec.to));
            let params: Vec<&str> = to["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            for (p, expr) in spec.parameters {
                assert!(params.contains(p), "{} -> {}: no parameter {p}", spec.from, spec.to);
                assert!(expr.starts_with("$response.body#/"), "{expr}");
            }
            let body = resolve(&doc, &to["requestBody"]["content"]["application/json"]["schema"]);
            for (field, _) in spec.body {
                assert!(
                    body["properties"].get(field).is_some(),
                    "{} -> {}: no body field {field}",
                    spec.from,
                    spec.to
                );
            }
        }
        let total: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .flat_map(|op| op["responses"].as_object().unwrap().values())
            .map(|r| r["links"].as_object().map_or(0, |l| l.len()))
            .sum();
        assert_eq!(total, LINKS.len(), "link names must be unique per response");
    }

    /// The response fields the links read exist in the response schemas.
    #[test]
    fn link_expressions_name_response_fields() {
        let doc: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        for spec in LINKS {
            let from = operation(&doc, spec.from).unwrap();
            let schema =
                resolve(&doc, &from["responses"][spec.status]["content"]["application/json"]["schema"]);
            for (_, expr) in spec.parameters.iter().chain(spec.body) {
                let field = expr.trim_start_matches("$response.body#/").split('/').next().unwrap();
                assert!(
                    schema["properties"].get(field).is_some(),
                    "{} {}: {expr} names no field of the response",
                    spec.from,
                    spec.status
                );
            }
        }
    }
}
