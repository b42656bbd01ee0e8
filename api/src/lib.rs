//! hyperion-vault's REST API (DESIGN.md §7): IP-allowlisted reads and constant-time verify for pods,
//! token + RBAC guarded management for operators, audit of every call.
//!
//! [`router::app`] builds the whole HTTP surface over an [`state::AppState`]; [`server::run`]
//! serves it (optionally over TLS) with graceful shutdown.

pub mod audit;
pub mod backend;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod cursor;
pub mod error;
pub mod guard;
pub mod handlers;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod protocol;
pub mod router;
pub mod row_cache;
pub mod server;
pub mod shards;
pub mod state;
pub mod store_backend;

pub use router::app;
