//! The committed `crds/vaultsecret.yaml` must equal what the code generates.

use std::path::Path;

use hyperion_vault_crds::{CRD_PATH, crd_yaml};

#[test]
fn committed_crd_matches_the_generated_one() {
    let generated = crd_yaml().expect("the CRD type always serialises");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("vaultsecret.yaml");
    if std::env::var_os("HV_UPDATE_CRD").is_some() {
        std::fs::write(&path, &generated).expect("crds/ is writable");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{CRD_PATH} is stale or missing. Regenerate it with\n  \
         cargo run -p hyperion-vault-controller -- crd > {CRD_PATH}\nor\n  \
         HV_UPDATE_CRD=1 cargo test -p hyperion-vault-crds --test crd_yaml"
    );
}

#[test]
fn crd_carries_the_contract() {
    let yaml = crd_yaml().expect("the CRD type always serialises");
    for needle in [
        "name: vaultsecrets.vault.hyperiondb.io",
        "- vsec",
        "- hyperion",
        "x-kubernetes-list-type: map",
        "rotationInterval is required when kind is Automatic",
        "valueFrom is only allowed when kind is Manual",
        "status: {}",
        "jsonPath: .status.nextRotationTime",
    ] {
        assert!(yaml.contains(needle), "missing {needle:?} in\n{yaml}");
    }
}
