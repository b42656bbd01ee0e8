//! The pure security core of hyperion-vault.
//!
//! Everything here is deterministic logic or local cryptography: no Kubernetes, no HTTP, no SQL,
//! no network or disk I/O. The controller and the API wrap these types with their I/O.

pub mod allowlist;
pub mod duration;
pub mod envelope;
pub mod generator;
pub mod keyring;
pub mod keywrap;
pub mod name;
pub mod rbac;
pub mod schedule;
pub mod secret;
pub mod token;
pub mod verify;
