//! The exec shim end to end: `runyard launcher init` installs it where the
//! webhook's wrapped commands expect it, and it runs a worker's command with
//! runyard's directories first and the image's own PATH after them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const RUNYARD: &str = env!("CARGO_BIN_EXE_runyard");
const SHIM: &str = env!("CARGO_BIN_EXE_runyard-exec");

fn script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A golang-style image: `go` in `/usr/local/go/bin`, on the image's PATH
/// (`ENV PATH=/go/bin:/usr/local/go/bin:...`), not on the Linux default.
fn golang_image(root: &Path) -> String {
    script(&root.join("usr/local/go/bin/go"), "echo go-from-the-image");
    script(&root.join("usr/local/go/bin/jq"), "echo jq-from-the-image");
    format!(
        "{r}/go/bin:{r}/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        r = root.display()
    )
}

#[test]
fn init_installs_the_shim_and_workers_keep_the_images_path() {
    let pod = tempfile::tempdir().expect("tempdir");
    let p = |rel: &str| pod.path().join(rel);
    std::fs::create_dir_all(p("podinfo")).expect("podinfo");
    let out = Command::new(RUNYARD)
        .args(["launcher", "init"])
        .env("RUNYARD_WORKSPACE", p("workspace"))
        .env("RUNYARD_BINARIES_CACHE", p("cache"))
        .env("RUNYARD_BINARIES", p("binaries"))
        .env("RUNYARD_PODINFO", p("podinfo"))
        .env("RUNYARD_TERMINATION_LOG", p("termination-log"))
        .env("RUNYARD_EXEC_SHIM", "true")
        .env_remove("RUNYARD_SOURCE_DIR")
        .output()
        .expect("run init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = p("binaries/.runyard-exec");
    assert!(installed.is_file(), "the shim is installed");

    // A tool runyard put into the binaries directory shadows the image's.
    script(&p("binaries/jq"), "echo jq-from-runyard");
    let image_path = golang_image(&p("image"));
    let prefix = p("binaries").display().to_string();
    let out = Command::new(&installed)
        .arg(format!("--path-prefix={prefix}"))
        .args(["--", "sh", "-c", "echo \"$PATH\"; go; jq"])
        .env("PATH", &image_path)
        .output()
        .expect("run the shim");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("{prefix}:{image_path}"));
    assert_eq!(lines[1], "go-from-the-image", "the image's PATH is kept");
    assert_eq!(lines[2], "jq-from-runyard", "runyard's tools come first");
}

#[test]
fn the_shim_is_transparent_about_exit_codes_and_clear_about_failures() {
    let out = Command::new(SHIM)
        .args(["--path-prefix=/nowhere", "--", "sh", "-c", "exit 7"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(7));

    let out = Command::new(SHIM)
        .args(["--path-prefix=/nowhere", "--", "no-such-tool-anywhere"])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot run \"no-such-tool-anywhere\"")
            && stderr.contains("PATH=/nowhere:/usr/bin:/bin"),
        "{stderr}"
    );

    let out = Command::new(SHIM)
        .args(["go", "test"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: runyard-exec"));
}

/// `--until`: a pool sidecar's long-running command (docker-in-docker, a
/// cache) stops when the launcher writes the workers-done file, and the
/// supervisor exits 0 so the sidecar's container does not fail the pod.
#[test]
fn until_stops_a_long_running_sidecar_when_the_workers_are_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let done = dir.path().join("workers-done");
    let marker = dir.path().join("got-term");
    let mut child = Command::new(SHIM)
        .arg(format!("--until={}", done.display()))
        .args([
            "--",
            "sh",
            "-c",
            &format!(
                "trap 'touch {}; exit 143' TERM; while :; do sleep 0.1; done",
                marker.display()
            ),
        ])
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(child.try_wait().expect("wait").is_none(), "still serving");
    std::fs::write(&done, "").expect("done");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(8),
            "not stopped"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "a stopped sidecar ends cleanly");
    assert!(marker.exists(), "the command got SIGTERM, not SIGKILL");
}

#[test]
fn until_passes_through_a_command_that_ends_by_itself_and_forwards_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let done = dir.path().join("never");
    let until = format!("--until={}", done.display());
    let out = Command::new(SHIM)
        .args([until.as_str(), "--", "sh", "-c", "exit 7"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(7), "a crashed sidecar shows");
    let out = Command::new(SHIM)
        .args([until.as_str(), "--", "no-such-command-xyz"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(127));
    // The kubelet's SIGTERM (pod deletion) reaches the command.
    let mut child = Command::new(SHIM)
        .args([
            until.as_str(),
            "--",
            "sh",
            "-c",
            "trap 'exit 42' TERM; while :; do sleep 0.1; done",
        ])
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(42), "forwarded, and its code passed on");
}
