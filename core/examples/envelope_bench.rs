//! Seal/open cost per operation for a 64-byte value, next to baselines measured in the same run.
//!
//! Run with `cargo run --release -p hyperion-vault-core --example envelope_bench [iterations]`.
//! Baselines: a bare XChaCha20-Poly1305 encrypt with a fixed nonce and a prepared cipher (the
//! floor for sealing), and one SHA-256 of 64 bytes (what a verify comparison costs per candidate).

use std::hint::black_box;
use std::time::Instant;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hyperion_vault_core::envelope::{open, seal};
use hyperion_vault_core::secret::Dek;
use sha2::{Digest, Sha256};

fn per_op_ns(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: u32 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(200_000);
    let value = [0x5au8; 64];
    let dek = Dek::generate()?;
    let sealed = seal(&dek, "bench/secret", 7, &value)?;

    let seal_ns = per_op_ns(iterations, || {
        black_box(seal(&dek, "bench/secret", 7, black_box(&value)).ok());
    });
    let open_ns = per_op_ns(iterations, || {
        black_box(open(&dek, "bench/secret", 7, &sealed.nonce, black_box(&sealed.ciphertext)).ok());
    });
    let cipher = XChaCha20Poly1305::new(&(*dek.expose()).into());
    let nonce = XNonce::from([1u8; 24]);
    let raw_ns = per_op_ns(iterations, || {
        black_box(cipher.encrypt(&nonce, Payload { msg: black_box(&value), aad: b"bench/secret:7" }).ok());
    });
    let sha_ns = per_op_ns(iterations, || {
        black_box(Sha256::digest(black_box(&value)));
    });

    println!("envelope benchmark: 64-byte value, {iterations} iterations each");
    println!("{:<44} {:>10}", "operation", "ns/op");
    println!("{:<44} {:>10.0}", "seal (fresh nonce from OS, key setup, AEAD)", seal_ns);
    println!("{:<44} {:>10.0}", "open (key setup, AAD rebuild, AEAD verify)", open_ns);
    println!("{:<44} {:>10.0}", "baseline: bare AEAD encrypt, prepared key", raw_ns);
    println!("{:<44} {:>10.0}", "baseline: SHA-256 of 64 bytes", sha_ns);
    println!(
        "ratio seal/bare-encrypt: {:.2}x, open/bare-encrypt: {:.2}x",
        seal_ns / raw_ns,
        open_ns / raw_ns
    );
    Ok(())
}
