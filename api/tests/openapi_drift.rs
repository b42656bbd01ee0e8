//! The committed `api/openapi.json` must equal the document generated from the code.
//! Regenerate with `cargo run -p hyperion-vault-api -- openapi > api/openapi.json`.
#![allow(clippy::unwrap_used, clippy::panic)] // test crate: unwrap is how tests assert

#[test]
fn committed_openapi_matches_generated() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = hyperion_vault_api::openapi::document_json();
    assert!(
        committed == generated,
        "api/openapi.json is stale; run `cargo run -p hyperion-vault-api -- openapi > api/openapi.json`"
    );
}
