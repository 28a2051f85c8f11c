//! `benches/run-loadgen.sh` runs anywhere: it builds into and runs from the
//! target directory cargo resolves (CARGO_TARGET_DIR honoured), and lets the
//! kernel pick the server's port instead of assuming one is free.

const SCRIPT: &str = include_str!("../benches/run-loadgen.sh");

#[test]
fn the_script_parses() {
    let out = std::process::Command::new("bash")
        .args([
            "-n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/benches/run-loadgen.sh"),
        ])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn binaries_come_from_cargos_target_directory_and_the_port_is_free() {
    assert!(
        !SCRIPT.contains("=target/"),
        "a hard-coded target/ ignores CARGO_TARGET_DIR"
    );
    assert!(SCRIPT.contains("cargo metadata --format-version 1 --no-deps"));
    assert!(SCRIPT.contains("bin=$target_dir/release/runyard"));
    assert!(SCRIPT.contains("gen=$target_dir/release/examples/loadgen"));
    assert!(SCRIPT.contains("--listen 127.0.0.1:0"));
    assert!(
        !SCRIPT.lines().any(|l| l.trim_start().starts_with("port=")),
        "no fixed port"
    );
    // The address the loadgen uses is the one the server reported.
    assert!(SCRIPT.contains(r#"--addr "$addr""#));
}
