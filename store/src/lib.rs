//! PostgreSQL storage for hyperion-vault: the migration runner, the writer/reader pools, every
//! secret, auth and audit query, the AWS KMS key wrapper and the DEK cache (DESIGN.md §4–§6).
//!
//! Wiring (both binaries): `#[command(flatten)]` [`config::StoreArgs`] and [`config::KmsArgs`];
//! `let keys = kms_args.build().await?;` then
//! `Store::connect(&store_args, keys, kms_args.dek_cache()).await?` and, in the controller,
//! [`Store::migrate`]. Every operation returns [`StoreError`], whose typed variants map to HTTP
//! statuses and whose `category()` is a bounded metric label.
//!
//! Routing: writes and management reads (metadata, history, list, due rotations, tokens, roles,
//! lockouts, audit) use the writer pool (`target_session_attrs=read-write`, follows failover);
//! value reads (`read_current`, `read_version`, `read_current_many`, `verify`) use the reader pool
//! (`any`, may lag by the replication delay), falling back to the primary when it fails;
//! `verify_on_primary` is the read-your-writes verify for answers that decide a write. Concurrent
//! reads share the reader connections, so tokio-postgres pipelines them; a thread that drives its
//! own runtime can pin itself to a share of them ([`read_shard::ReadShard`]).
//!
//! Tests: `store/tests/*.rs` run against the real testenv (`e2e/testenv/testenv up`, then
//! `source $HV_TESTENV_DIR/env; cargo test -p hyperion-vault-store -- --include-ignored`);
//! `destructive_*` stop/promote PostgreSQL or close KMS and restore the environment afterwards.
//! Benchmark: `cargo run --release -p hyperion-vault-store --example read_bench`.

pub mod audit;
pub mod auth;
pub mod config;
pub mod dek_cache;
pub mod error;
pub mod kms;
pub mod migrate;
pub mod model;
pub mod read_shard;
pub mod sealed;
pub mod secrets;
mod store;

pub use error::StoreError;
pub use store::Store;
