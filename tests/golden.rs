//! Golden files: `runyard inject` output for the examples. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test --test golden` and review the diff.

use runyard::injection::{ClusterFacts, Injector, SidecarMode, StaticPools};
use std::path::Path;

const RUN_ID: &str = "01jgzd0000000000000000000g";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn check(name: &str, actual: &str) {
    let path = Path::new(ROOT).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert!(
        expected == actual,
        "{name} differs from the golden file; rerun with UPDATE_GOLDEN=1 and review.\n--- actual ---\n{actual}"
    );
}

fn inject(input: &str, mode: SidecarMode, pools: &StaticPools) -> String {
    let injector =
        Injector::with_run_ids(ClusterFacts { sidecar_mode: mode }, || RUN_ID.to_string());
    let text = std::fs::read_to_string(Path::new(ROOT).join(input)).expect("input");
    runyard::injection::manifests::inject_yaml(&text, &injector, pools, "default").expect("inject")
}

fn pools_from(file: &str) -> StaticPools {
    runyard::injection::load_pool_file(&Path::new(ROOT).join(file)).expect(file)
}

fn example_pools() -> StaticPools {
    pools_from("examples/pool.yaml")
}

#[test]
fn job_with_the_default_pool() {
    check(
        "job.yaml",
        &inject(
            "examples/job.yaml",
            SidecarMode::Native,
            &StaticPools::default_pool(),
        ),
    );
}

#[test]
fn job_with_the_example_pool() {
    check(
        "job.pool.yaml",
        &inject("examples/job.yaml", SidecarMode::Native, &example_pools()),
    );
}

#[test]
fn job_with_the_advanced_pool() {
    check(
        "job.pool-advanced.yaml",
        &inject(
            "examples/job.yaml",
            SidecarMode::Native,
            &pools_from("examples/pool-advanced.yaml"),
        ),
    );
}

/// CPU in millicores and memory in bytes of a Kubernetes quantity (the
/// suffixes the examples use).
fn quantity(q: &str) -> u64 {
    let units = [("m", 1), ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().expect("number") * factor;
        }
    }
    q.parse::<u64>().expect("number") * 1000
}

/// examples/pool.yaml runs as is on a stock cluster (kind): its run pods need
/// no node labels, taints, claims or host paths, may use Docker Hub images,
/// and ask for little.
#[test]
fn the_example_pool_needs_nothing_a_stock_cluster_lacks() {
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: hello, namespace: ci, labels: {runyard.dev/pool: builders}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: hello, image: busybox:1.36, command: [echo, hi]}]\n";
    let injector = Injector::with_run_ids(ClusterFacts::default(), || RUN_ID.to_string());
    let out = runyard::injection::manifests::inject_yaml(job, &injector, &example_pools(), "ci")
        .expect("a Docker Hub image is allowed");
    let job: k8s_openapi::api::batch::v1::Job = serde_norway::from_str(&out).expect("Job");
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
    assert!(pod.node_selector.unwrap_or_default().is_empty());
    assert!(pod.affinity.is_none() && pod.tolerations.unwrap_or_default().is_empty());
    for v in pod.volumes.iter().flatten() {
        assert!(
            v.empty_dir.is_some() || v.downward_api.is_some(),
            "volume {} needs more than a stock cluster has",
            v.name
        );
    }
    let (mut cpu, mut memory) = (0, 0);
    for c in pod.init_containers.iter().flatten().chain(&pod.containers) {
        let requests = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .unwrap_or_default();
        cpu += requests.get("cpu").map_or(0, |q| quantity(&q.0));
        memory += requests.get("memory").map_or(0, |q| quantity(&q.0));
    }
    assert!(cpu <= 400, "{cpu}m CPU per run pod");
    assert!(memory <= 512 << 20, "{memory} bytes per run pod");
}

#[test]
fn job_for_a_cluster_without_native_sidecars() {
    check(
        "job.container-sidecar.yaml",
        &inject(
            "examples/job.yaml",
            SidecarMode::Container,
            &StaticPools::default_pool(),
        ),
    );
}

/// A pool sidecar: a native sidecar after the launcher (1.29+), or a regular
/// container under the exec shim's supervisor (older clusters).
#[test]
fn job_with_a_pool_sidecar() {
    let pools = pools_from("examples/pool-sidecar.yaml");
    let job = "examples/job.yaml";
    let text = std::fs::read_to_string(Path::new(ROOT).join(job))
        .expect("job")
        .replace("runyard.dev/pool: builders", "runyard.dev/pool: with-cache");
    let tmp = std::env::temp_dir().join(format!("runyard-golden-{}.yaml", std::process::id()));
    std::fs::write(&tmp, text).expect("write");
    let path = tmp.to_str().expect("path");
    check(
        "job.pool-sidecar.yaml",
        &inject(path, SidecarMode::Native, &pools),
    );
    check(
        "job.pool-sidecar.container-sidecar.yaml",
        &inject(path, SidecarMode::Container, &pools),
    );
    let _ = std::fs::remove_file(&tmp);
}

#[test]
fn bare_pod() {
    check(
        "pod.yaml",
        &inject(
            "examples/pod.yaml",
            SidecarMode::Native,
            &StaticPools::default_pool(),
        ),
    );
}

#[test]
fn lists_and_non_runs() {
    let out = inject(
        "tests/golden/mixed.input.yaml",
        SidecarMode::Native,
        &StaticPools::default_pool(),
    );
    assert!(
        out.contains("someFutureField: kept-by-the-patch"),
        "unknown fields survive"
    );
    check("mixed.yaml", &out);
}

/// A golang image's PATH survives, with runyard's binaries first: the worker
/// gets no PATH in its spec (which would hide the image's), and its command,
/// run through the exec shim as injected, sees `/opt/runyard/binaries` and
/// then exactly the image's PATH, and finds `go` there.
#[test]
fn a_golang_image_keeps_its_path_with_runyards_tools_first() {
    let out = inject(
        "tests/golden/go.input.yaml",
        SidecarMode::Native,
        &StaticPools::default_pool(),
    );
    check("go.yaml", &out);

    let job: k8s_openapi::api::batch::v1::Job = serde_norway::from_str(&out).expect("a Job");
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod spec");
    let test = &pod.containers[0];
    assert!(
        test.env.iter().flatten().all(|e| e.name != "PATH"),
        "a PATH in the spec would replace the image's"
    );
    let command = test.command.clone().expect("command");
    assert_eq!(command[0], runyard::vocab::EXEC_SHIM_PATH);
    let lint = &pod.containers[1];
    assert!(lint.command.is_none(), "the entrypoint is left alone");

    // Run the injected command as the container would, with the golang
    // image's PATH (rooted in a temporary directory).
    let root = tempfile::tempdir().expect("tempdir");
    let go = root.path().join("usr/local/go/bin/go");
    std::fs::create_dir_all(go.parent().expect("dir")).expect("mkdir");
    std::fs::write(&go, "#!/bin/sh\necho \"go $* PATH=$PATH\"\n").expect("go");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&go, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let image_path = format!(
        "{r}/go/bin:{r}/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        r = root.path().display()
    );
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_runyard-exec"))
        .args(&command[1..])
        .env("PATH", &image_path)
        .output()
        .expect("run the injected command");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        format!("go test ./... PATH=/opt/runyard/binaries:{image_path}")
    );
}

#[test]
fn golden_output_is_a_fixed_point() {
    // Injecting the injected output again changes nothing.
    for file in ["examples/pool.yaml", "examples/pool-advanced.yaml"] {
        let once = inject("examples/job.yaml", SidecarMode::Native, &pools_from(file));
        let injector = Injector::with_run_ids(ClusterFacts::default(), || "other".to_string());
        let twice = runyard::injection::manifests::inject_yaml(
            &once,
            &injector,
            &pools_from(file),
            "default",
        )
        .expect("inject");
        assert_eq!(once, twice, "{file}");
    }
}

#[test]
fn the_binary_injects_the_readme_example() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runyard"))
        .current_dir(ROOT)
        .args(["inject", "-f", "examples/job.yaml", "--run-id", RUN_ID])
        .output()
        .expect("run runyard");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check("job.yaml", &String::from_utf8(out.stdout).expect("utf-8"));
}

#[test]
fn the_binary_reports_denials_with_a_non_zero_exit() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runyard"))
        .current_dir(ROOT)
        .args([
            "inject",
            "-f",
            "examples/pod.yaml",
            "--pool",
            "examples/pool.yaml",
        ])
        .output()
        .expect("run runyard");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pool \"terraform\" does not exist in namespace \"infra\""),
        "{stderr}"
    );
}
