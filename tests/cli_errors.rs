//! What a person sees when something is wrong: the binary's error is one
//! line, says each cause once and what to do next; logs carry no colour
//! codes when they go to a file or a pipe.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_runyard");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn runyard(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(ROOT)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("RUNYARD_LOG")
        .env_remove("NO_COLOR");
    c
}

/// The error line of a failed run (asserting there is exactly one line on
/// stderr and no escape codes).
fn error_of(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0]
        .strip_prefix("error: ")
        .unwrap_or_else(|| panic!("{stderr}"))
        .to_string()
}

fn kubeconfig(dir: &Path, server: &str) -> String {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\"}}\ncontexts:\n- name: kind-ci\n  context: {{cluster: c, user: u, namespace: ci}}\ncurrent-context: kind-ci\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .expect("kubeconfig");
    path.display().to_string()
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn an_unreachable_cluster_names_the_address_and_the_kubeconfig() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = closed_port();
    let config = kubeconfig(dir.path(), &format!("https://127.0.0.1:{port}"));
    for args in [&["status"][..], &["cancel", "build-42"]] {
        let out = runyard(args)
            .env("KUBECONFIG", &config)
            .output()
            .expect("run");
        let e = error_of(&out);
        let want = format!(
            "cannot reach the Kubernetes API server at https://127.0.0.1:{port} (kubeconfig {config}, context kind-ci): "
        );
        assert!(e.contains(&want), "{e}");
        assert_eq!(e.matches("Connection refused").count(), 1, "{e}");
        assert!(
            e.ends_with("check that the cluster is running and that `kubectl cluster-info` works with the same kubeconfig"),
            "{e}"
        );
        assert!(!e.contains("ServiceError"), "{e}");
    }
}

#[test]
fn no_kubeconfig_says_what_is_missing_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope").display().to_string();
    let out = runyard(&["status"])
        .env("KUBECONFIG", &missing)
        .output()
        .expect("run");
    assert_eq!(
        error_of(&out),
        format!("no Kubernetes cluster to talk to: KUBECONFIG names {missing}, which does not exist, and runyard is not running inside a cluster; set KUBECONFIG to a kubeconfig file (kind, minikube and cloud CLIs write one) and check it with `kubectl cluster-info`")
    );
    let out = runyard(&["status"])
        .env_remove("KUBECONFIG")
        .env("HOME", dir.path())
        .output()
        .expect("run");
    let e = error_of(&out);
    assert!(
        e.starts_with(&format!(
            "no Kubernetes cluster to talk to: there is no kubeconfig at {}/.kube/config,",
            dir.path().display()
        )),
        "{e}"
    );

    // A kubeconfig that is there but broken: why, in one line.
    let broken = dir.path().join("broken");
    std::fs::write(&broken, "clusters: [\n").expect("write");
    let out = runyard(&["status"])
        .env("KUBECONFIG", &broken)
        .output()
        .expect("run");
    let e = error_of(&out);
    assert!(
        e.starts_with(&format!("cannot use the kubeconfig {}: ", broken.display())),
        "{e}"
    );
}

#[test]
fn file_errors_say_their_cause_once() {
    let out = runyard(&[
        "inject",
        "-f",
        "examples/job.yaml",
        "--pool",
        "no-such-pools.yaml",
    ])
    .output()
    .expect("run");
    assert_eq!(
        error_of(&out),
        "reading no-such-pools.yaml: No such file or directory (os error 2)"
    );
    let out = runyard(&["inject", "-f", "no-such-job.yaml"])
        .output()
        .expect("run");
    assert_eq!(
        error_of(&out),
        "reading no-such-job.yaml: No such file or directory (os error 2)"
    );
}

#[test]
fn offline_inputs_are_strict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("pool.yaml");
    std::fs::write(
        &typo,
        "apiVersion: workers.runyard.dev/v1alpha1\nkind: WorkerPool\nmetadata: {name: builders, namespace: ci}\nspec:\n  allowedRunnerImageHost: [ghcr.io]\n",
    )
    .expect("write");
    let out = runyard(&["inject", "-f", "examples/job.yaml", "--pool"])
        .arg(&typo)
        .output()
        .expect("run");
    assert_eq!(
        error_of(&out),
        format!("{}: document 0 (WorkerPool ci/builders): unknown field \"spec.allowedRunnerImageHost\" (did you mean \"allowedRunnerImageHosts\"?); fix it or remove it (kubectl apply refuses it too)", typo.display())
    );

    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "# nothing\n---\n").expect("write");
    let out = runyard(&["inject", "-f"])
        .arg(&empty)
        .output()
        .expect("run");
    assert_eq!(
        error_of(&out),
        format!(
            "{}: no objects in it (it is empty or only comments)",
            empty.display()
        )
    );

    let out = runyard(&[
        "inject",
        "-f",
        "examples/job.yaml",
        "--kube-version",
        "1.27",
        "--sidecar-mode",
        "native",
    ])
    .output()
    .expect("run");
    assert!(
        error_of(&out).starts_with("--sidecar-mode native cannot work on Kubernetes 1.27"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = runyard(&[
        "inject",
        "-f",
        "examples/job.yaml",
        "--kube-version",
        "banana",
    ])
    .output()
    .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("\"banana\" is not a Kubernetes version: expected MAJOR.MINOR"),
        "{stderr}"
    );
    assert!(!stderr.contains("banana."), "{stderr}");
}

fn certs(dir: &Path) {
    let out = runyard(&["certs", "--out-dir"])
        .arg(dir)
        .output()
        .expect("certs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_busy_port_is_not_blamed_on_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs(dir.path());
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let webhook = |cert: &Path, listen: &str| {
        runyard(&[
            "webhook",
            "--pools",
            "examples/pool.yaml",
            "--listen",
            listen,
        ])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .output()
        .expect("run")
    };
    let out = webhook(&dir.path().join("tls.crt"), &addr);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    let e = stderr
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(
        e,
        format!("starting the webhook: listening on {addr}: Address already in use (os error 98); another process is listening there: stop it, or choose another --listen (or --metrics-listen)")
    );

    let out = webhook(&dir.path().join("missing.crt"), "127.0.0.1:0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let e = stderr
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(e.matches("os error 2").count(), 1, "{e}");
    assert!(e.contains("generate them with `runyard certs`"), "{e}");
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |rel: &str| dir.path().join(rel);
    std::fs::create_dir_all(p("podinfo")).expect("podinfo");
    let out = runyard(&["launcher", "init"])
        .env("RUNYARD_WORKSPACE", p("workspace"))
        .env("RUNYARD_BINARIES_CACHE", p("cache"))
        .env("RUNYARD_BINARIES", p("binaries"))
        .env("RUNYARD_PODINFO", p("podinfo"))
        .env("RUNYARD_TERMINATION_LOG", p("termination-log"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("workspace ready"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
}
