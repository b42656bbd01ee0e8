//! Read-current throughput of the store vs `pgbench` point-selects of the same row shape, in the
//! same run, at 1, 8 and 32 concurrent tasks.
//!
//! ```text
//! source ${HV_TESTENV_DIR:-/tmp/hyperion-vault-testenv}/env
//! cargo run --release -p hyperion-vault-store --example read_bench [-- SECONDS]
//! ```
//!
//! The store reads through its reader pool (size `POOL`), unwraps the DEK (cached after the first
//! read; local keyring) and opens the value. `BENCH_RUNTIME` picks how the reading tasks run:
//! `sharded` (default; as the API serves: one current-thread runtime per CPU, each thread pinned
//! to its share of the reader connections, `ReadShard`), `multi` (one multi-thread runtime, as the
//! controller runs) or `current` (everything on one thread). pgbench runs `SELECT … FROM vault.secret_versions
//! WHERE secret_id = $id AND version = 1` as a prepared statement with `min(tasks, POOL)` clients:
//! the same number of database connections the store can use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyperion_vault_core::keyring::LocalKeyring;
use hyperion_vault_core::name::SecretName;
use hyperion_vault_core::secret::SecretBytes;
use hyperion_vault_store::Store;
use hyperion_vault_store::config::StoreArgs;
use hyperion_vault_store::dek_cache::DekCache;
use hyperion_vault_store::model::{NewSecret, Owner, SecretKind};
use hyperion_vault_store::read_shard::ReadShard;

const POOL: usize = 8;
const LEVELS: [usize; 3] = [1, 8, 32];
/// Length of one alternating measurement slice.
const SLICE_SECS: u64 = 2;

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set: source the testenv env file first"))
}

fn main() -> anyhow::Result<()> {
    let flavor = std::env::var("BENCH_RUNTIME").unwrap_or_else(|_| "sharded".into());
    let rt = match flavor.as_str() {
        "current" | "sharded" => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        "multi" => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
        other => bail!("BENCH_RUNTIME={other:?}: expected sharded, multi or current"),
    };
    println!("runtime: {flavor}");
    rt.block_on(bench(flavor == "sharded"))
}

async fn bench(sharded: bool) -> anyhow::Result<()> {
    let secs: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let dsn = var("TESTENV_PG_DSN_RW")?;
    let mut args = StoreArgs::from_url(&dsn);
    args.pg_pool_size = POOL;
    args.pg_read_connections =
        std::env::var("VAULT_PG_READ_CONNECTIONS").ok().map(|v| v.parse()).transpose()?;
    let keys = Arc::new(LocalKeyring::parse("bench:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?);
    let store = Store::connect(&args, keys, DekCache::new(Duration::from_secs(300), 1000)).await?;
    store.migrate().await?;

    let name = SecretName::parse(&format!("bench/read-{}", std::process::id()))?;
    let now = jiff::Timestamp::now();
    let _ = store.delete(&name, &Owner::Api, now).await;
    let spec = NewSecret {
        name: name.clone(),
        kind: SecretKind::Manual,
        owner: Owner::Api,
        description: Some("read benchmark".into()),
        rotation_interval: None,
        grace_period: Duration::ZERO,
        generator: None,
    };
    store.create_secret(spec, Some(SecretBytes::copy_from(&[b'x'; 32])), now).await?;

    let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let id: i64 = client
        .query_one("SELECT id FROM vault.secrets WHERE name = $1 AND deleted_at IS NULL", &[&name.as_str()])
        .await?
        .get(0);
    // A realistic table size, so the planner uses the indexes as it would in production (with a
    // few dozen rows it prefers sequential scans and a hash join). Fillers are never read.
    let filler_prefix = format!("bench/filler-{}/", std::process::id());
    let fillers: i32 = std::env::var("BENCH_FILLERS").ok().map(|v| v.parse()).transpose()?.unwrap_or(10_000);
    client
        .execute(
            "WITH s AS (INSERT INTO vault.secrets (name, kind, owner_kind, current_version, created_at, updated_at) \
               SELECT $1 || g, 'manual', 'api', 1, now(), now() FROM generate_series(1, $2) g RETURNING id) \
             INSERT INTO vault.secret_versions (secret_id, version, kms_key_id, wrapped_dek, nonce, ciphertext, created_at) \
               SELECT id, 1, 'filler', '\\x00', decode(repeat('00', 24), 'hex'), decode(repeat('00', 48), 'hex'), now() FROM s",
            &[&filler_prefix, &fillers],
        )
        .await?;
    client.batch_execute("ANALYZE vault.secrets; ANALYZE vault.secret_versions").await?;
    let script = std::env::temp_dir().join(format!("hv-read-bench-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        format!(
            "SELECT kms_key_id, wrapped_dek, nonce, ciphertext, created_at, expires_at \
             FROM vault.secret_versions WHERE secret_id = {id} AND version = 1;\n"
        ),
    )?;

    let readers = Readers::new(&store, &name, if sharded { num_cpus() } else { 0 })?;
    // Warm-up: fill both pools (every shard's share) and the DEK cache.
    readers.run(POOL, Duration::from_secs(1)).await?;

    println!(
        "read-current throughput, {secs}s per level per side (alternating {SLICE_SECS}s slices), pool size {POOL}, {} CPU(s)",
        num_cpus()
    );
    println!("{:>6} {:>14} {:>14} {:>8}", "tasks", "store ops/s", "pgbench tps", "ratio");
    // The machine is shared: alternate short slices of both so load changes hit both sides alike.
    let rounds = (secs / SLICE_SECS).max(1);
    for tasks in LEVELS {
        let (mut store_sum, mut pg_sum) = (0.0, 0.0);
        for _ in 0..rounds {
            store_sum += readers.run(tasks, Duration::from_secs(SLICE_SECS)).await?;
            pg_sum += run_pgbench(&script, tasks.min(POOL), SLICE_SECS)?;
        }
        let (store_ops, pg_tps) = (store_sum / rounds as f64, pg_sum / rounds as f64);
        println!("{tasks:>6} {store_ops:>14.0} {pg_tps:>14.0} {:>7.2}x", store_ops / pg_tps);
    }
    std::fs::remove_file(&script).ok();
    client
        .batch_execute(&format!(
            "DELETE FROM vault.secret_versions WHERE secret_id IN \
               (SELECT id FROM vault.secrets WHERE starts_with(name, '{filler_prefix}')); \
             DELETE FROM vault.secrets WHERE starts_with(name, '{filler_prefix}');"
        ))
        .await?;
    store.delete(&name, &Owner::Api, jiff::Timestamp::now()).await?;
    Ok(())
}

/// Where the reading tasks run: on the caller's runtime, or spread over pinned shard threads.
struct Readers {
    store: Store,
    name: SecretName,
    shards: Vec<std::sync::mpsc::Sender<Slice>>,
}

/// One measurement slice for a shard thread: its tasks, the duration, where to send reads/s.
type Slice = (usize, Duration, std::sync::mpsc::Sender<anyhow::Result<f64>>);

impl Readers {
    fn new(store: &Store, name: &SecretName, shards: usize) -> anyhow::Result<Self> {
        let mut senders = Vec::with_capacity(shards);
        for index in 0..shards {
            let shard = ReadShard::new(index, shards).context("shard index")?;
            let (tx, rx) = std::sync::mpsc::channel::<Slice>();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (store, name) = (store.clone(), name.clone());
            std::thread::spawn(move || {
                shard.pin_current_thread();
                while let Ok((tasks, d, reply)) = rx.recv() {
                    let _ = reply.send(rt.block_on(run_store(&store, &name, tasks, d)));
                }
            });
            senders.push(tx);
        }
        Ok(Self { store: store.clone(), name: name.clone(), shards: senders })
    }

    /// Reads with `tasks` concurrent tasks for `d`; returns reads per second (all shards).
    async fn run(&self, tasks: usize, d: Duration) -> anyhow::Result<f64> {
        if self.shards.is_empty() {
            return run_store(&self.store, &self.name, tasks, d).await;
        }
        let n = self.shards.len();
        let mut replies = Vec::with_capacity(n);
        for (i, shard) in self.shards.iter().enumerate() {
            let share = tasks / n + usize::from(i < tasks % n);
            let (tx, rx) = std::sync::mpsc::channel();
            shard.send((share, d, tx)).context("a shard thread stopped")?;
            replies.push(rx);
        }
        let mut total = 0.0;
        for rx in replies {
            let rx = tokio::task::spawn_blocking(move || rx.recv()).await?;
            total += rx.context("a shard thread stopped")??;
        }
        Ok(total)
    }
}

async fn run_store(store: &Store, name: &SecretName, tasks: usize, d: Duration) -> anyhow::Result<f64> {
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + d;
    let mut handles = Vec::with_capacity(tasks);
    if tasks == 0 {
        return Ok(0.0);
    }
    for _ in 0..tasks {
        let (store, name, count) = (store.clone(), name.clone(), Arc::clone(&count));
        handles.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let v = store.read_current(&name).await?.context("the bench secret vanished")?;
                std::hint::black_box(v.value().expose());
                count.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

fn run_pgbench(script: &std::path::Path, clients: usize, secs: u64) -> anyhow::Result<f64> {
    let out = std::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-f"])
        .arg(script)
        .args(["-c", &clients.to_string(), "-j", &clients.to_string(), "-T", &secs.to_string()])
        .args(["-h", &var("PG_HOST")?, "-p", &var("PG_PRIMARY_PORT")?, "-U", &var("PG_SUPERUSER")?])
        .arg(var("PG_DATABASE")?)
        .env("PGPASSWORD", var("PG_SUPERPASSWORD")?)
        .output()
        .context("run pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("pgbench failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ").and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok())
        })
        .with_context(|| format!("no tps line in pgbench output:\n{text}"))
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
