//! VaultSecret lifecycle against the real testenv: examples become Ready, invalid specs are
//! rejected, automatic secrets rotate on schedule with grace, value sources, rotate-now, delete.
//!
//! Run: `e2e/testenv/testenv up && cargo test -p hyperion-vault-controller --test lifecycle -- --ignored`

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use hyperion_vault_store::model::{Owner, RotateOutcome};
use jiff::Timestamp;

const NEEDS: &str = "needs the testenv: run through the README test command";

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn examples_become_ready_and_show_columns() {
    let _ = NEEDS;
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "examples").await;
    let _controller = Controller::spawn(&env, &ns, "c1");
    let examples = repo_root().join("examples");
    let out = kubectl(&env, &["-n", &ns, "apply", "-f", examples.to_str().unwrap()], None).await;
    assert!(out.ok, "{}", out.stderr);

    let auto = wait_ready(&client, &ns, "payments-api-key", "True", "Sealed").await;
    assert_eq!(ready(&auto).2, Some(1));
    let status = auto.status.as_ref().unwrap();
    assert!(status.next_rotation_time.is_some() && status.last_rotation_time.is_some());
    assert_eq!(status.observed_generation, auto.metadata.generation);
    let manual = wait_ready(&client, &ns, "db-password", "True", "Sealed").await;
    assert_eq!(ready(&manual).2, Some(1));
    let awaiting = wait_ready(&client, &ns, "partner-webhook-secret", "False", "AwaitingValue").await;
    assert_eq!(ready(&awaiting).2, None);

    // The values are in the vault: generated per the generator, and the source Secret's value.
    let store = store(&env).await;
    let v = store.read_current(&vault_name(&ns, "payments-api-key")).await.unwrap().unwrap();
    assert_eq!(v.version, 1);
    assert_eq!(v.value().len(), 48);
    assert!(v.value().expose().iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'));
    let m = store.read_current(&vault_name(&ns, "db-password")).await.unwrap().unwrap();
    assert_eq!(m.value().expose(), b"change-me-please");

    // A value set through the API (the store call the API makes) makes the awaiting one Ready.
    let name = vault_name(&ns, "partner-webhook-secret");
    store
        .put_value(
            &name,
            hyperion_vault_core::secret::SecretBytes::copy_from(b"set-by-admin-123"),
            Timestamp::now(),
        )
        .await
        .unwrap();
    let awaited = wait_ready(&client, &ns, "partner-webhook-secret", "True", "Sealed").await;
    assert_eq!(ready(&awaited).2, Some(1));

    let out = kubectl(&env, &["-n", &ns, "get", "vsec"], None).await;
    assert!(out.ok, "{}", out.stderr);
    let header = out.stdout.lines().next().unwrap();
    for col in ["NAME", "KIND", "VERSION", "READY", "LAST ROTATED", "NEXT ROTATION", "AGE"] {
        assert!(header.contains(col), "missing column {col}: {header}");
    }
    let row = out.stdout.lines().find(|l| l.starts_with("payments-api-key")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..4], ["Automatic", "1", "True"], "{row}");
    println!("{}", out.stdout);

    // Category short name works too.
    let out = kubectl(&env, &["-n", &ns, "get", "hyperion", "-o", "name"], None).await;
    assert!(out.stdout.contains("vaultsecret.vault.hyperiondb.io/payments-api-key"), "{}", out.stdout);
    teardown(&env, &client, &ns).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn invalid_manifests_are_rejected_naming_the_field() {
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "invalid").await;
    let cases = [
        ("spec: {kind: Automatic}", "spec.rotationInterval"),
        (
            "spec: {kind: Automatic, rotationInterval: 1h, generator: {charset: emoji}}",
            "spec.generator.charset",
        ),
        ("spec: {kind: Automatic, rotationInterval: 1h, generator: {length: 8}}", "spec.generator.length"),
        ("spec: {kind: Automatic, rotationInterval: 1h, generator: {length: 5000}}", "spec.generator.length"),
        ("spec: {kind: Automatic, rotationInterval: 1d}", "spec.rotationInterval"),
        ("spec: {kind: Manual, rotationInterval: 1h}", "spec.rotationInterval"),
        ("spec: {kind: Manual, generator: {length: 32}}", "spec.generator"),
        (
            "spec: {kind: Automatic, rotationInterval: 1h, valueFrom: {secretKeyRef: {name: a, key: b}}}",
            "spec.valueFrom",
        ),
        ("spec: {kind: Sometimes}", "spec.kind"),
        ("spec: {kind: Manual, gracePeriod: forever}", "spec.gracePeriod"),
        ("spec: {kind: Manual, deletionPolicy: Shred}", "spec.deletionPolicy"),
    ];
    for (i, (spec, field)) in cases.iter().enumerate() {
        let manifest = format!(
            "apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {{name: bad-{i}}}\n{spec}\n"
        );
        let out = kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(&manifest)).await;
        assert!(!out.ok, "accepted: {spec}");
        assert!(out.stderr.contains(field), "{spec}: message does not name {field}: {}", out.stderr);
    }

    // What the schema cannot know becomes Ready=False, InvalidSpec naming the field.
    let _controller = Controller::spawn(&env, &ns, "c1");
    let manifest = "apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: fractional}\n\
                    spec: {kind: Automatic, rotationInterval: 1500ms}\n";
    let out = kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(manifest)).await;
    assert!(out.ok, "{}", out.stderr);
    let vs = wait_ready(&client, &ns, "fractional", "False", "InvalidSpec").await;
    let message = &vs.status.unwrap().conditions[0].message;
    assert!(message.starts_with("spec.rotationInterval:"), "{message}");
    // Fixing the spec recovers.
    let fixed = manifest.replace("1500ms", "1h");
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(&fixed)).await.ok);
    wait_ready(&client, &ns, "fractional", "True", "Sealed").await;
    teardown(&env, &client, &ns).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn automatic_rotates_on_schedule_and_grace_versions_expire() {
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "rotate").await;
    let controller = Controller::spawn(&env, &ns, "c1");
    let manifest = "apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: fast}\n\
                    spec: {kind: Automatic, rotationInterval: 2s, gracePeriod: 3s}\n";
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(manifest)).await.ok);
    wait_ready(&client, &ns, "fast", "True", "Sealed").await;
    let store = store(&env).await;
    let name = vault_name(&ns, "fast");
    let v1 = store.read_current(&name).await.unwrap().unwrap();
    assert_eq!(v1.version, 1);
    let v1_value = hyperion_vault_core::secret::SecretBytes::copy_from(v1.value().expose());

    // Version 2 arrives on schedule (first slot: 2s plus a spread under 0.2s).
    let vs = wait_version(&client, &ns, "fast", 2, Duration::from_secs(10)).await;
    let status = vs.status.unwrap();
    assert!(status.grace_versions.iter().any(|g| g.version == 1), "{:?}", status.grace_versions);
    // The old version still verifies during its grace period...
    let h = store.history(&name).await.unwrap().unwrap();
    let v1_meta = h.iter().find(|v| v.version == 1).unwrap();
    let expires = v1_meta.expires_at.unwrap();
    if Timestamp::now() < expires {
        let got = store.verify(&name, v1_value.expose(), Timestamp::now()).await.unwrap();
        assert_eq!(got, Some(1));
    }

    // ...and not after; meanwhile the database never holds more live versions than current + grace.
    let max_live = 1 + 2; // grace 3s / interval 2s, rounded up
    let deadline = std::time::Instant::now() + Duration::from_secs(9);
    while std::time::Instant::now() < deadline {
        let now = Timestamp::now();
        let h = store.history(&name).await.unwrap().unwrap();
        let live = h.iter().filter(|v| v.is_live(now)).count();
        assert!(live <= max_live, "{live} live versions: {h:?}");
        // Expired versions lose their crypto material promptly (within 2s of expiry).
        for v in &h {
            if let Some(e) = v.expires_at
                && v.shredded_at.is_none()
            {
                assert!(
                    now.duration_since(e).as_secs_f64() < 2.0,
                    "version {} not shredded: {v:?}",
                    v.version
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(store.verify(&name, v1_value.expose(), Timestamp::now()).await.unwrap(), None);
    let h = store.history(&name).await.unwrap().unwrap();
    assert!(h.iter().find(|v| v.version == 1).unwrap().shredded_at.is_some());
    // About one rotation per 2s: ~11s elapsed since v1 → 5 or 6 versions; never a double.
    let current = h[0].version;
    assert!((4..=7).contains(&current), "current version {current}");
    assert_one_rotation_per_slot(&store, &name, Duration::from_secs(2)).await;
    // Status and events follow.
    let vs = wait_version(&client, &ns, "fast", i64::from(current), Duration::from_secs(5)).await;
    assert!(vs.status.unwrap().grace_versions.len() <= 2);
    let events = kubectl(&env, &["-n", &ns, "get", "events", "-o", "yaml"], None).await;
    assert!(events.stdout.contains("reason: Rotated"), "{}", events.stdout);
    assert!(events.stdout.contains("reason: Sealed"));
    assert!(controller.logs().contains("Rotated secret"));
    teardown(&env, &client, &ns).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn rotate_now_rotates_once_per_nonce() {
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "nonce").await;
    let _controller = Controller::spawn(&env, &ns, "c1");
    let manifest = "apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: onreq}\n\
                    spec: {kind: Automatic, rotationInterval: 1h}\n";
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(manifest)).await.ok);
    wait_ready(&client, &ns, "onreq", "True", "Sealed").await;
    let annotate = |nonce: &'static str| {
        let ns = ns.clone();
        let env = &env;
        async move {
            let arg = format!("vault.hyperiondb.io/rotate-now={nonce}");
            let out =
                kubectl(env, &["-n", &ns, "annotate", "--overwrite", "vsec", "onreq", &arg], None).await;
            assert!(out.ok, "{}", out.stderr);
        }
    };
    annotate("first").await;
    let vs = wait_version(&client, &ns, "onreq", 2, Duration::from_secs(20)).await;
    assert_eq!(vs.status.as_ref().unwrap().last_rotate_request.as_deref(), Some("first"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let store = store(&env).await;
    let name = vault_name(&ns, "onreq");
    assert_eq!(store.metadata(&name).await.unwrap().unwrap().current_version, 2, "one rotation per nonce");
    // Re-applying the same nonce (and an unrelated change) does nothing.
    annotate("first").await;
    let out =
        kubectl(&env, &["-n", &ns, "label", "--overwrite", "vsec", "onreq", "team=payments"], None).await;
    assert!(out.ok);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(store.metadata(&name).await.unwrap().unwrap().current_version, 2);
    annotate("second").await;
    let vs = wait_version(&client, &ns, "onreq", 3, Duration::from_secs(20)).await;
    assert_eq!(vs.status.as_ref().unwrap().last_rotate_request.as_deref(), Some("second"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(store.metadata(&name).await.unwrap().unwrap().current_version, 3);
    // A version made elsewhere (an API rotate: status still says 3) before a nonce is set does not
    // answer that nonce: it gets a rotation of its own, newer than the request.
    let rotated = store.rotate(&name, 3, None, Timestamp::now()).await.unwrap();
    assert!(matches!(rotated, RotateOutcome::Rotated { .. }), "{rotated:?}");
    annotate("third").await;
    let vs = wait_version(&client, &ns, "onreq", 5, Duration::from_secs(20)).await;
    assert_eq!(vs.status.as_ref().unwrap().last_rotate_request.as_deref(), Some("third"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(store.metadata(&name).await.unwrap().unwrap().current_version, 5);
    teardown(&env, &client, &ns).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn changing_the_source_secret_creates_exactly_one_version() {
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "source").await;
    let _controller = Controller::spawn(&env, &ns, "c1");
    // The VaultSecret first, its Secret later: SourceSecretMissing, then Ready once it appears.
    let vs = "apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: fromsecret}\n\
              spec: {kind: Manual, gracePeriod: 1m, valueFrom: {secretKeyRef: {name: creds, key: password}}}\n";
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(vs)).await.ok);
    wait_ready(&client, &ns, "fromsecret", "False", "SourceSecretMissing").await;
    let secret = |v: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{password: {v}}}\n")
    };
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(&secret("first-value-1"))).await.ok);
    let ready_vs = wait_ready(&client, &ns, "fromsecret", "True", "Sealed").await;
    assert_eq!(ready(&ready_vs).2, Some(1));

    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(&secret("second-value-2"))).await.ok);
    wait_version(&client, &ns, "fromsecret", 2, Duration::from_secs(20)).await;
    // Unrelated changes of the Secret and of the VaultSecret create nothing.
    let out =
        kubectl(&env, &["-n", &ns, "label", "--overwrite", "secret", "creds", "touched=yes"], None).await;
    assert!(out.ok);
    let out =
        kubectl(&env, &["-n", &ns, "annotate", "--overwrite", "vsec", "fromsecret", "note=x"], None).await;
    assert!(out.ok);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let store = store(&env).await;
    let name = vault_name(&ns, "fromsecret");
    let current = store.read_current(&name).await.unwrap().unwrap();
    assert_eq!(current.version, 2, "exactly one new version per value change");
    assert_eq!(current.value().expose(), b"second-value-2");
    // The previous value verifies during the 1m grace period.
    assert_eq!(store.verify(&name, b"first-value-1", Timestamp::now()).await.unwrap(), Some(1));
    teardown(&env, &client, &ns).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn delete_honours_the_deletion_policy_and_releases_the_finalizer() {
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "delete").await;
    let _controller = Controller::spawn(&env, &ns, "c1");
    for (name, policy) in [("shred", "Delete"), ("keep", "Retain")] {
        let m = format!(
            "apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {{name: {name}}}\n\
             spec: {{kind: Automatic, rotationInterval: 1h, deletionPolicy: {policy}}}\n"
        );
        assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(&m)).await.ok);
        let vs = wait_ready(&client, &ns, name, "True", "Sealed").await;
        assert!(
            vs.metadata.finalizers.unwrap_or_default().contains(&"vault.hyperiondb.io/cleanup".to_owned())
        );
    }
    let store = store(&env).await;
    let retained_uid = get_vs(&client, &ns, "keep").await.unwrap().metadata.uid.unwrap();
    assert!(store.find_by_owner_uid(&retained_uid).await.unwrap().is_some());
    for name in ["shred", "keep"] {
        let out = kubectl(&env, &["-n", &ns, "delete", "vsec", name, "--timeout=30s"], None).await;
        assert!(out.ok, "{}", out.stderr);
        assert!(get_vs(&client, &ns, name).await.is_none(), "finalizer released");
    }
    // Delete: crypto material destroyed, name freed; metadata history stays (as shredded rows).
    assert!(store.metadata(&vault_name(&ns, "shred")).await.unwrap().is_none());
    assert!(store.read_current(&vault_name(&ns, "shred")).await.unwrap().is_none());
    // Retain: still readable, and handed over to the API (no orphan owned by a deleted uid).
    let keep = vault_name(&ns, "keep");
    let kept = store.read_current(&keep).await.unwrap().unwrap();
    assert_eq!(kept.version, 1);
    assert_eq!(store.metadata(&keep).await.unwrap().unwrap().owner, Owner::Api);
    assert!(store.find_by_owner_uid(&retained_uid).await.unwrap().is_none());
    // A VaultSecret of the same name does not adopt it...
    let m = "apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: keep}\n\
             spec: {kind: Automatic, rotationInterval: 1h}\n";
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(m)).await.ok);
    let vs = wait_ready(&client, &ns, "keep", "False", "NameConflict").await;
    let message = vs.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap().message;
    assert!(message.contains("API-owned"), "{message}");
    // ...until an admin deletes the retained secret through the API (an API-owned delete).
    assert!(store.delete(&keep, &Owner::Api, Timestamp::now()).await.unwrap());
    let poke = ["-n", &ns, "annotate", "vsec", "keep", "test.hyperiondb.io/poke=1"];
    assert!(kubectl(&env, &poke, None).await.ok);
    wait_ready(&client, &ns, "keep", "True", "Sealed").await;
    let fresh = store.metadata(&keep).await.unwrap().unwrap();
    assert_eq!(fresh.current_version, 1, "a new secret of that name starts again at version 1");
    assert!(matches!(fresh.owner, Owner::Resource { .. }));
    teardown(&env, &client, &ns).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn a_marker_value_never_appears_in_status_events_or_logs() {
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "marker").await;
    let controller = Controller::spawn(&env, &ns, "c1");
    let marker = format!("MARKER-{}-{}", std::process::id(), Timestamp::now().as_millisecond());
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: src}}\nstringData: {{key: {marker}}}\n---\n\
         apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {{name: marked}}\n\
         spec: {{kind: Manual, valueFrom: {{secretKeyRef: {{name: src, key: key}}}}}}\n---\n\
         apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {{name: generated}}\n\
         spec: {{kind: Automatic, rotationInterval: 2s}}\n"
    );
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(&manifest)).await.ok);
    wait_ready(&client, &ns, "marked", "True", "Sealed").await;
    // A changed value goes through the change-detection path too.
    let changed = manifest.replace(&marker, &format!("{marker}-2"));
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(&changed)).await.ok);
    wait_version(&client, &ns, "marked", 2, Duration::from_secs(20)).await;
    wait_version(&client, &ns, "generated", 3, Duration::from_secs(20)).await;
    let store = store(&env).await;
    let generated = store.read_current(&vault_name(&ns, "generated")).await.unwrap().unwrap();
    let generated = String::from_utf8(generated.value().expose().to_vec()).unwrap();

    let status = kubectl(&env, &["-n", &ns, "get", "vsec", "-o", "yaml"], None).await.stdout;
    let events = kubectl(&env, &["-n", &ns, "get", "events", "-o", "yaml"], None).await.stdout;
    let logs = controller.logs();
    assert!(status.contains("currentVersion") && events.contains("Sealed") && logs.contains("Sealed"));
    for (what, text) in [("status", &status), ("events", &events), ("controller logs", &logs)] {
        assert!(!text.contains(&marker), "{what} contain the marker value");
        assert!(!text.contains(&generated), "{what} contain a generated value");
    }
    teardown(&env, &client, &ns).await;
}
