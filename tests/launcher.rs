//! `runyard launcher init` and `launcher serve` as real processes against a
//! temporary workspace, with a local HTTPS server (rustls, a CA from
//! `runyard certs`) serving tarballs and tools.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_runyard");
const TOOL: &[u8] = b"#!/bin/sh\necho tool-ok\n";

fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        // Write the name raw: tar's own setters refuse `..`, and this test
        // needs exactly such an archive.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        builder.append(&h, *data).expect("append");
    }
    builder.into_inner().expect("tar").finish().expect("gzip")
}

#[derive(Clone)]
struct Files {
    good: Arc<Vec<u8>>,
    evil: Arc<Vec<u8>>,
    /// 8 MiB of zeros in one entry: a few KiB compressed.
    bomb: Arc<Vec<u8>>,
    /// 50 small files.
    many: Arc<Vec<u8>>,
    tool_hits: Arc<AtomicUsize>,
}

struct Server {
    port: u16,
    ca: PathBuf,
    files: Files,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn server() -> Server {
    runyard::webhook::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = runyard::certs::generate(&["localhost".to_string()], 1).expect("certs");
    runyard::certs::write_dir(&bundle, dir.path()).expect("write");
    let store = Arc::new(
        runyard::webhook::tls::CertStore::load(
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
        )
        .expect("load"),
    );
    let config = Arc::new(runyard::webhook::tls::server_config(store).expect("config"));
    let files = Files {
        good: Arc::new(tarball(&[
            ("README.md", b"hello"),
            ("app/main.sh", b"echo main"),
        ])),
        evil: Arc::new(tarball(&[
            ("ok.txt", b"fine"),
            ("../escape.txt", b"gotcha"),
        ])),
        bomb: Arc::new(tarball(&[("zeros.bin", &vec![0u8; 8 << 20])])),
        many: Arc::new({
            let names: Vec<String> = (0..50).map(|i| format!("f{i}.txt")).collect();
            let entries: Vec<(&str, &[u8])> =
                names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
            tarball(&entries)
        }),
        tool_hits: Arc::new(AtomicUsize::new(0)),
    };
    let app = Router::new()
        .route(
            "/source.tar.gz",
            get(|State(f): State<Files>| async move { f.good.to_vec() }),
        )
        .route(
            "/evil.tar.gz",
            get(|State(f): State<Files>| async move { f.evil.to_vec() }),
        )
        .route(
            "/bomb.tar.gz",
            get(|State(f): State<Files>| async move { f.bomb.to_vec() }),
        )
        .route(
            "/many.tar.gz",
            get(|State(f): State<Files>| async move { f.many.to_vec() }),
        )
        .route(
            "/tool",
            get(|State(f): State<Files>| async move {
                f.tool_hits.fetch_add(1, Ordering::SeqCst);
                // Slow enough that concurrent inits overlap.
                tokio::time::sleep(Duration::from_millis(300)).await;
                TOOL.to_vec()
            }),
        )
        .route(
            "/moved",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/tool")]).into_response() }),
        )
        .with_state(files.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(runyard::http::serve(
        listener,
        Some(tokio_rustls::TlsAcceptor::from(config)),
        app,
        runyard::http::Limits::default(),
        None,
        rx,
    ));
    Server {
        port,
        ca: dir.path().join("ca.crt"),
        files,
        _dir: dir,
        _stop: stop,
    }
}

struct Pod {
    dir: tempfile::TempDir,
}

impl Pod {
    fn new(annotations: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("podinfo")).expect("podinfo");
        let mut pod = Pod { dir };
        pod.set_annotations(annotations);
        std::fs::write(
            pod.path("podinfo/labels"),
            "batch.kubernetes.io/job-name=\"build-42\"\n",
        )
        .expect("labels");
        pod
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// Rewrites the annotations file the way the kubelet does (new file, rename).
    fn set_annotations(&mut self, annotations: &[(&str, String)]) {
        let text: String = annotations
            .iter()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect();
        let tmp = self.path("podinfo/..annotations.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.path("podinfo/annotations")).expect("rename");
    }
    fn command(&self, cache: &Path, args: &[&str], ca: &Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(BIN);
        c.args(args)
            .env("RUNYARD_WORKSPACE", self.path("workspace"))
            .env("RUNYARD_BINARIES_CACHE", cache)
            .env("RUNYARD_BINARIES", self.path("binaries"))
            .env("RUNYARD_PODINFO", self.path("podinfo"))
            .env("RUNYARD_CA_FILE", ca)
            .env("RUNYARD_RUN_ID", "01jlaunch")
            .env("RUNYARD_POOL", "builders")
            .env("RUNYARD_WORKER", "builders-w1")
            .env("RUNYARD_NAMESPACE", "ci")
            .env("RUNYARD_POD_NAME", "build-42-abcde")
            .env("RUNYARD_TERMINATION_LOG", self.path("termination-log"))
            .env_remove("RUNYARD_SOURCE_DIR")
            .kill_on_drop(true);
        c
    }
    async fn init(&self, s: &Server, cache: &Path) -> std::process::Output {
        self.command(cache, &["launcher", "init"], &s.ca)
            .output()
            .await
            .expect("run init")
    }
}

fn url(s: &Server, path: &str) -> String {
    format!("https://localhost:{}{path}", s.port)
}

#[tokio::test]
async fn init_lays_out_the_workspace_fetches_source_and_tools() {
    let s = server().await;
    let cache = tempfile::tempdir().expect("cache");
    let tools = format!("tool=1.0@{}#sha256={}", url(&s, "/moved"), sha256(TOOL));
    let pod = Pod::new(&[
        ("runyard.dev/source-url", url(&s, "/source.tar.gz")),
        ("runyard.dev/source-sha256", sha256(&s.files.good)),
        ("runyard.dev/tools", tools),
    ]);
    let out = pod.init(&s, cache.path()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(pod.path("workspace/source/README.md")).expect("source"),
        "hello"
    );
    assert_eq!(
        std::fs::read_to_string(pod.path("workspace/source/app/main.sh")).expect("source"),
        "echo main"
    );
    let run: serde_json::Value = serde_json::from_slice(
        &std::fs::read(pod.path("workspace/.runyard/run.json")).expect("run.json"),
    )
    .expect("json");
    assert_eq!(run["runId"], "01jlaunch");
    assert_eq!(run["worker"], "builders-w1");
    assert_eq!(run["job"], "build-42");
    assert_eq!(run["attempt"], 1);
    let tool = pod.path("binaries/tool");
    assert_eq!(std::fs::read(&tool).expect("tool"), TOOL);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&tool).expect("meta").permissions().mode() & 0o111,
            0o111,
            "executable"
        );
    }
    // Restarted pod: init again is safe, downloads nothing, counts the attempt.
    let out = pod.init(&s, cache.path()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.files.tool_hits.load(Ordering::SeqCst), 1);
    let run: serde_json::Value = serde_json::from_slice(
        &std::fs::read(pod.path("workspace/.runyard/run.json")).expect("run.json"),
    )
    .expect("json");
    assert_eq!(run["attempt"], 2);
}

#[tokio::test]
async fn a_checksum_mismatch_fails_with_a_clear_message_and_no_tree() {
    let s = server().await;
    let cache = tempfile::tempdir().expect("cache");
    let pod = Pod::new(&[
        ("runyard.dev/source-url", url(&s, "/source.tar.gz")),
        ("runyard.dev/source-sha256", "0".repeat(64)),
    ]);
    let out = pod.init(&s, cache.path()).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(std::fs::read_to_string(pod.path("termination-log"))
        .expect("termination log")
        .contains("checksum mismatch"));
    let entries: Vec<_> = std::fs::read_dir(pod.path("workspace/source"))
        .expect("dir")
        .collect();
    assert!(entries.is_empty(), "no partial source");
    assert!(!pod.path("workspace/.runyard/source.tar.gz.part").exists());
}

#[tokio::test]
async fn path_traversal_and_unreachable_hosts_are_refused() {
    let s = server().await;
    let cache = tempfile::tempdir().expect("cache");
    let pod = Pod::new(&[
        ("runyard.dev/source-url", url(&s, "/evil.tar.gz")),
        ("runyard.dev/source-sha256", sha256(&s.files.evil)),
    ]);
    let out = pod.init(&s, cache.path()).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unsafe") && stderr.contains(".."),
        "{stderr}"
    );
    assert!(!pod.path("workspace/escape.txt").exists() && !pod.path("escape.txt").exists());
    assert!(
        !pod.path("workspace/source/ok.txt").exists(),
        "nothing of the bad archive lands"
    );

    let pod = Pod::new(&[
        (
            "runyard.dev/source-url",
            "https://localhost:1/nothing.tar.gz".to_string(),
        ),
        ("runyard.dev/source-sha256", "0".repeat(64)),
    ]);
    let out = pod.init(&s, cache.path()).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach localhost"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn zip_bombs_and_entry_floods_fail_before_anything_is_written() {
    let s = server().await;
    let cache = tempfile::tempdir().expect("cache");
    assert!(
        s.files.bomb.len() < 64 * 1024,
        "the bomb is small compressed"
    );
    for (path, files, env, value, needle) in [
        (
            "/bomb.tar.gz",
            &s.files.bomb,
            "RUNYARD_SOURCE_MAX_BYTES",
            "1000000",
            "more than 1000000 bytes unpacked",
        ),
        (
            "/many.tar.gz",
            &s.files.many,
            "RUNYARD_SOURCE_MAX_ENTRIES",
            "10",
            "more than 10 entries",
        ),
    ] {
        let pod = Pod::new(&[
            ("runyard.dev/source-url", url(&s, path)),
            ("runyard.dev/source-sha256", sha256(files)),
        ]);
        // The same archive unpacks under the defaults...
        let out = pod.init(&s, cache.path()).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // ...and is refused under the pool's limit, leaving nothing behind.
        let pod = Pod::new(&[
            ("runyard.dev/source-url", url(&s, path)),
            ("runyard.dev/source-sha256", sha256(files)),
        ]);
        let out = pod
            .command(cache.path(), &["launcher", "init"], &s.ca)
            .env(env, value)
            .output()
            .await
            .expect("run init");
        assert!(!out.status.success(), "{path}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(needle) && stderr.contains("spec.limits.source"),
            "{stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(pod.path("workspace/source"))
            .expect("dir")
            .collect();
        assert!(left.is_empty(), "nothing unpacked");
        assert!(!pod.path("workspace/.runyard/source.staging").exists());
    }
}

/// `launcher init` succeeded, and the planted link made it write nothing
/// into the cache: the cached tool is intact, nothing was unpacked beside it.
fn init_succeeded_and_left_the_cache_alone(
    out: &std::process::Output,
    cached: &std::path::Path,
    cached_dir: &std::path::Path,
) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(cached).expect("cached"),
        TOOL,
        "cache untouched"
    );
    assert_eq!(
        std::fs::read_dir(cached_dir).expect("dir").count(),
        1,
        "nothing unpacked into the cache"
    );
}

/// A restarted pod runs `init` over what the run's containers left in the
/// workspace: links planted there must not lead `init` (which may write the
/// binaries cache; workers may not) to overwrite a cached tool.
#[cfg(unix)]
#[tokio::test]
async fn links_planted_in_the_workspace_are_never_followed() {
    use std::os::unix::fs::symlink;
    let s = server().await;
    let cache = tempfile::tempdir().expect("cache");
    let cached_dir = cache.path().join("tool/1.0-0123456789abcdef");
    std::fs::create_dir_all(&cached_dir).expect("cache dir");
    let cached = cached_dir.join("tool");
    std::fs::write(&cached, TOOL).expect("cached tool");
    let annotations = [
        ("runyard.dev/source-url", url(&s, "/source.tar.gz")),
        ("runyard.dev/source-sha256", sha256(&s.files.good)),
    ];

    // The download's temporary file is a link to the cached tool.
    let pod = Pod::new(&annotations);
    std::fs::create_dir_all(pod.path("workspace/.runyard")).expect("state");
    symlink(&cached, pod.path("workspace/.runyard/source.tar.gz.part")).expect("plant");
    // The source directory is a link into the cache.
    symlink(&cached_dir, pod.path("workspace/source")).expect("plant");
    let out = pod.init(&s, cache.path()).await;
    init_succeeded_and_left_the_cache_alone(&out, &cached, &cached_dir);
    let source = std::fs::symlink_metadata(pod.path("workspace/source")).expect("source");
    assert!(source.is_dir(), "a real directory now");
    assert_eq!(
        std::fs::read_to_string(pod.path("workspace/source/README.md")).expect("source"),
        "hello"
    );

    // The state directory itself is a link into the cache.
    let pod = Pod::new(&annotations);
    std::fs::create_dir_all(pod.path("workspace")).expect("workspace");
    symlink(&cached_dir, pod.path("workspace/.runyard")).expect("plant");
    let out = pod.init(&s, cache.path()).await;
    init_succeeded_and_left_the_cache_alone(&out, &cached, &cached_dir);
    assert!(
        std::fs::symlink_metadata(pod.path("workspace/.runyard/run.json"))
            .expect("run.json")
            .is_file()
    );
}

#[tokio::test]
async fn concurrent_inits_share_one_download() {
    let s = server().await;
    let cache = tempfile::tempdir().expect("cache");
    let tools = format!("tool=2.0@{}#sha256={}", url(&s, "/tool"), sha256(TOOL));
    let pods: Vec<Pod> = (0..4)
        .map(|_| Pod::new(&[("runyard.dev/tools", tools.clone())]))
        .collect();
    let runs = pods.iter().map(|p| p.init(&s, cache.path()));
    for out in futures::future::join_all(runs).await {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        s.files.tool_hits.load(Ordering::SeqCst),
        1,
        "downloaded once"
    );
    for p in &pods {
        assert_eq!(
            std::fs::read(p.path("binaries/tool")).expect("tool"),
            TOOL,
            "never a partial binary"
        );
    }
}

async fn http_over_unix(socket: &Path, path: &str) -> String {
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: launcher\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).await.expect("read");
    out
}

async fn wait_for(path: &Path) {
    for _ in 0..100 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test]
async fn serve_answers_the_worker_and_relays_a_stop_request() {
    let s = server().await;
    let cache = tempfile::tempdir().expect("cache");
    let mut pod = Pod::new(&[]);
    assert!(pod.init(&s, cache.path()).await.status.success());
    let mut serve = pod
        .command(
            cache.path(),
            &["launcher", "serve", "--poll", "100ms"],
            &s.ca,
        )
        .spawn()
        .expect("serve");
    let socket = pod.path("workspace/.runyard/launcher.sock");
    wait_for(&socket).await;
    let run = http_over_unix(&socket, "/v1/run").await;
    assert!(
        run.starts_with("HTTP/1.1 200") && run.contains("\"runId\": \"01jlaunch\""),
        "{run}"
    );
    let quick = http_over_unix(&socket, "/v1/stop?wait=100ms").await;
    assert!(quick.contains("{\"stop\":false}"), "{quick}");
    // The readiness probe (the run's heartbeat) passes while it serves.
    let probe = |pod: &Pod| {
        let mut cmd = pod.command(cache.path(), &["launcher", "probe"], &s.ca);
        cmd.output()
    };
    let out = probe(&pod).await.expect("probe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A worker long-polls; `runyard cancel` annotates the pod.
    let poll = tokio::spawn({
        let socket = socket.clone();
        async move { http_over_unix(&socket, "/v1/stop?wait=20s").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pod.set_annotations(&[("runyard.dev/stop", "cancelled by ci".to_string())]);
    let answer = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("answered")
        .expect("join");
    assert!(
        answer.contains("\"stop\":true") && answer.contains("cancelled by ci"),
        "{answer}"
    );
    assert_eq!(
        std::fs::read_to_string(pod.path("workspace/.runyard/stop")).expect("stop file"),
        "cancelled by ci"
    );
    serve.kill().await.expect("kill");
    let _ = serve.wait().await;
    // A launcher that is gone fails it, saying where it looked.
    let out = probe(&pod).await.expect("probe");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not answer on") && err.contains("launcher.sock"),
        "{err}"
    );
}

#[tokio::test]
async fn serve_exits_when_the_worker_exits() {
    let s = server().await;
    let cache = tempfile::tempdir().expect("cache");
    let pod = Pod::new(&[]);
    let mut worker = tokio::process::Command::new("sleep")
        .arg("1")
        .kill_on_drop(true)
        .spawn()
        .expect("worker");
    let pid = worker.id().expect("pid").to_string();
    let mut serve = pod
        .command(
            cache.path(),
            &["launcher", "serve", "--poll", "100ms", "--watch-pid", &pid],
            &s.ca,
        )
        .spawn()
        .expect("serve");
    wait_for(&pod.path("workspace/.runyard/launcher.sock")).await;
    // A pool sidecar as the webhook runs it without native sidecars: its
    // long-running command under the exec shim, until the workers are done.
    let mut sidecar = tokio::process::Command::new(env!("CARGO_BIN_EXE_runyard-exec"))
        .arg(format!(
            "--until={}",
            pod.path("workspace/.runyard/workers-done").display()
        ))
        .args(["--", "sleep", "300"])
        .kill_on_drop(true)
        .spawn()
        .expect("sidecar");
    assert!(worker.wait().await.expect("worker").success());
    let status = tokio::time::timeout(Duration::from_secs(10), serve.wait())
        .await
        .expect("serve exits")
        .expect("status");
    assert!(status.success());
    assert!(
        !pod.path("workspace/.runyard/launcher.sock").exists(),
        "socket removed"
    );
    let sidecar = tokio::time::timeout(Duration::from_secs(10), sidecar.wait())
        .await
        .expect("the pool sidecar stops after the workers")
        .expect("status");
    assert_eq!(sidecar.code(), Some(0), "and does not fail the pod");
}

/// Container sidecar mode: which processes of a shared process namespace are
/// the run's workers (read from a fake `/proc`): not the launcher's own
/// container, not the pause process, not the containers of pool sidecars
/// (their supervisor is the exec shim with `--until`), even their other
/// processes (a daemon's children).
#[test]
fn workers_are_other_containers_processes_but_not_pool_sidecars() {
    use runyard::launcher::serve::worker_processes;
    let proc = tempfile::tempdir().expect("proc");
    let put = |pid: &str, cgroup: &str, cmdline: &[&str]| {
        let dir = proc.path().join(pid);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("cgroup"), format!("0::{cgroup}\n")).expect("cgroup");
        let mut bytes = cmdline.join("\0").into_bytes();
        bytes.push(0);
        std::fs::write(dir.join("cmdline"), bytes).expect("cmdline");
    };
    put("self", "/launcher", &["runyard", "launcher", "serve"]);
    put("1", "/pause", &["/pause"]);
    put("7", "/launcher", &["runyard", "launcher", "serve"]);
    let until = format!("--until={}", runyard::vocab::WORKERS_DONE_FILE);
    put(
        "20",
        "/redis",
        &[runyard::vocab::EXEC_SHIM_PATH, &until, "--", "redis-server"],
    );
    put("21", "/redis", &["redis-server", "*:6379"]);
    put(
        "30",
        "/dind",
        &[runyard::vocab::EXEC_SHIM_PATH, &until, "--", "dockerd"],
    );
    put("31", "/dind", &["containerd"]);
    assert_eq!(worker_processes(proc.path()), 0, "only sidecars left");
    put("40", "/build", &["make", "test"]);
    put("41", "/build", &["cc", "-c", "x.c"]);
    // The exec shim without --until (tools on PATH) is a worker.
    put(
        "50",
        "/other",
        &[
            runyard::vocab::EXEC_SHIM_PATH,
            "--path-prefix=/x",
            "--",
            "go",
        ],
    );
    assert_eq!(worker_processes(proc.path()), 3);
}

#[cfg(unix)]
#[tokio::test]
async fn on_sigterm_serve_waits_for_the_worker() {
    let s = server().await;
    let cache = tempfile::tempdir().expect("cache");
    let pod = Pod::new(&[]);
    let mut worker = tokio::process::Command::new("sleep")
        .arg("2")
        .kill_on_drop(true)
        .spawn()
        .expect("worker");
    let pid = worker.id().expect("pid").to_string();
    let mut serve = pod
        .command(
            cache.path(),
            &[
                "launcher",
                "serve",
                "--poll",
                "100ms",
                "--watch-pid",
                &pid,
                "--grace",
                "20s",
            ],
            &s.ca,
        )
        .spawn()
        .expect("serve");
    let socket = pod.path("workspace/.runyard/launcher.sock");
    wait_for(&socket).await;
    let started = std::time::Instant::now();
    let serve_pid = serve.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &serve_pid])
        .status()
        .expect("kill")
        .success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Still serving while the worker cleans up, and the worker is told to stop.
    let stop = http_over_unix(&socket, "/v1/stop?wait=1s").await;
    assert!(stop.contains("\"stop\":true"), "{stop}");
    let _ = worker.wait().await;
    let status = tokio::time::timeout(Duration::from_secs(10), serve.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success());
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "waited for the worker"
    );
}
