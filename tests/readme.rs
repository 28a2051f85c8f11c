//! The README documents every flag of every command and every field of the
//! WorkerPool CRD that a user touches.

use clap::CommandFactory;
use serde_json::Value;

const README: &str = include_str!("../README.md");

#[test]
fn every_cli_flag_is_documented() {
    let cli = runyard::cmd::Cli::command();
    let mut missing = Vec::new();
    let mut check = |cmd: &clap::Command| {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                if matches!(long, "help" | "version") {
                    continue;
                }
                if !README.contains(&format!("--{long}")) {
                    missing.push(format!("{} --{long}", cmd.get_name()));
                }
            }
        }
    };
    check(&cli);
    for sub in cli.get_subcommands() {
        check(sub);
        assert!(
            README.contains(&format!("runyard {}", sub.get_name())),
            "command {}",
            sub.get_name()
        );
    }
    assert!(missing.is_empty(), "README lacks: {missing:?}");
}

fn field_paths(schema: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            let path = format!("{prefix}.{name}");
            out.push(path.clone());
            // runyard's own structs: spec, spec.pod, the container settings, status.
            let own = matches!(
                path.as_str(),
                ".spec"
                    | ".spec.limits"
                    | ".spec.pod"
                    | ".status"
                    | ".spec.pod.initContainer"
                    | ".spec.pod.launcherContainer"
                    | ".spec.pod.workerContainer"
            );
            if own {
                field_paths(child, &path, out);
            }
        }
    }
}

#[test]
fn every_worker_pool_field_is_documented() {
    let crd = serde_json::to_value(&runyard::crd::crds()[0]).expect("crd");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut paths = Vec::new();
    field_paths(schema, "", &mut paths);
    let mut missing = Vec::new();
    for path in paths {
        let path = path.trim_start_matches('.');
        if matches!(
            path,
            "apiVersion" | "kind" | "metadata" | "spec" | "status" | "spec.pod"
        ) {
            continue;
        }
        let settings = [
            "spec.pod.initContainer.",
            "spec.pod.launcherContainer.",
            "spec.pod.workerContainer.",
        ];
        let documented = match settings.iter().find(|p| path.starts_with(*p)) {
            Some(prefix) => README.contains(&format!("| `{}` |", &path[prefix.len()..])),
            None => README.contains(&format!("`{path}`")),
        };
        if !documented {
            missing.push(path.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "README lacks WorkerPool fields: {missing:?}"
    );
}
