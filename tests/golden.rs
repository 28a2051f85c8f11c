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

fn example_pools() -> StaticPools {
    runyard::injection::load_pool_file(&Path::new(ROOT).join("examples/pool.yaml"))
        .expect("pool.yaml")
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

#[test]
fn golden_output_is_a_fixed_point() {
    // Injecting the injected output again changes nothing.
    let once = inject("examples/job.yaml", SidecarMode::Native, &example_pools());
    let injector = Injector::with_run_ids(ClusterFacts::default(), || "other".to_string());
    let twice =
        runyard::injection::manifests::inject_yaml(&once, &injector, &example_pools(), "default")
            .expect("inject");
    assert_eq!(once, twice);
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
