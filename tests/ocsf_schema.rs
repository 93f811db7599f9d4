//! The OCSF validator (`tools/ocsf/validate.py`, built on the vendored OCSF 1.1.0 definitions)
//! accepts valid events and names what is wrong with invalid ones, so OCSF output can be checked
//! against the schema itself rather than against our own idea of it.

use std::process::Command;

fn validate(file: &str) -> (bool, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/tools/ocsf/validate.py"))
        .arg(format!("{root}/tools/ocsf/examples/{file}"))
        .output()
        .expect("python3 runs the OCSF validator");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn valid_events_pass() {
    let (ok, out) = validate("valid.jsonl");
    assert!(ok, "{out}");
}

#[test]
fn each_kind_of_mistake_is_named() {
    let (ok, out) = validate("invalid.jsonl");
    assert!(!ok);
    for expected in [
        "category_uid 2 is not 3 (iam)",
        "type_uid 300202 is not class_uid * 100 + activity_id (300201)",
        "authentication.user: required attribute missing",
        "authentication.time: 'now' is not timestamp_t",
        "authentication.severity_id: 9 is not one of",
        "authentication.metadata.version: required attribute missing",
        "authentication.metadata.product.vendor_name: required attribute missing",
        "authentication.bogus: not an attribute of authentication",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}
