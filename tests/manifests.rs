//! `webhook-config/` is a valid kustomization whose webhook settings are the
//! ones DESIGN.md requires; the CRDs are a kustomization of their own
//! (`webhook-config/crds/`), so uninstalling runyard keeps every pool.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::ClusterRole;
use serde_json::Value;
use std::path::Path;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/webhook-config");

fn docs(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(DIR).join(file)).expect(file);
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find_named(kind: &str, name: Option<&str>) -> Value {
    let kustomization = &docs("kustomization.yaml")[0];
    for file in kustomization["resources"].as_array().expect("resources") {
        for doc in docs(file.as_str().expect("file")) {
            if doc["kind"] == kind && name.is_none_or(|n| doc["metadata"]["name"] == n) {
                return doc;
            }
        }
    }
    panic!("no {kind} {name:?} in webhook-config/");
}

fn find(kind: &str) -> Value {
    find_named(kind, None)
}

fn rules_of(role: Value) -> Vec<(String, String, Vec<String>)> {
    let mut rules = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in rule["apiGroups"].as_array().expect("groups") {
            for resource in rule["resources"].as_array().expect("resources") {
                let verbs = rule["verbs"]
                    .as_array()
                    .expect("verbs")
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect();
                rules.push((
                    group.as_str().unwrap_or_default().to_string(),
                    resource.as_str().unwrap_or_default().to_string(),
                    verbs,
                ));
            }
        }
    }
    rules.sort();
    rules
}

fn table(t: &[(&str, &str, &[&str])]) -> Vec<(String, String, Vec<String>)> {
    let mut rules: Vec<_> = t
        .iter()
        .map(|(g, r, v)| {
            (
                g.to_string(),
                r.to_string(),
                v.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect();
    rules.sort();
    rules
}

#[test]
fn controller_rbac_is_exactly_what_the_code_uses() {
    assert_eq!(
        rules_of(find_named("ClusterRole", Some("runyard-controller"))),
        table(runyard::controller::RBAC)
    );
    assert_eq!(
        rules_of(find_named("Role", Some("runyard-controller-lease"))),
        table(runyard::controller::LEASE_RBAC)
    );
}

/// The CI submitter's Role (applied on its own, to the CI's namespace) is
/// exactly what runyard's client calls, bound to its ServiceAccount there.
#[test]
fn ci_submitter_rbac_is_exactly_what_the_client_uses() {
    let all = docs("ci-submitter-rbac.yaml");
    let of = |kind: &str| {
        all.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };
    let role = of("Role");
    assert_eq!(rules_of(role.clone()), table(runyard::client::RBAC));
    let sa = of("ServiceAccount");
    let binding = of("RoleBinding");
    let ns = role["metadata"]["namespace"].clone();
    assert!(ns.is_string());
    assert_eq!(sa["metadata"]["namespace"], ns);
    assert_eq!(binding["metadata"]["namespace"], ns);
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], ns);
}

#[test]
fn controller_deployment_arguments_parse() {
    let deployment: Deployment =
        serde_json::from_value(find_named("Deployment", Some("runyard-controller")))
            .expect("typed");
    let pod = deployment
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec");
    let args = pod.containers[0].args.clone().expect("args");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runyard"))
        .args(&args)
        .arg("--help")
        .output()
        .expect("run runyard");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pod.security_context.and_then(|s| s.run_as_user), Some(1983));
}

#[test]
fn every_resource_parses_and_names_its_kind() {
    let kustomization = &docs("kustomization.yaml")[0];
    for file in kustomization["resources"].as_array().expect("resources") {
        for doc in docs(file.as_str().expect("file")) {
            assert!(
                doc["apiVersion"].is_string() && doc["kind"].is_string(),
                "{file}"
            );
            assert!(doc["metadata"]["name"].is_string(), "{file}");
        }
    }
}

#[test]
fn mutating_webhooks_follow_the_design() {
    let config: MutatingWebhookConfiguration =
        serde_json::from_value(find("MutatingWebhookConfiguration")).expect("typed");
    let hooks = config.webhooks.expect("webhooks");
    let mut resources = Vec::new();
    for hook in &hooks {
        assert_eq!(hook.admission_review_versions, ["v1"]);
        assert_eq!(hook.side_effects, "None");
        assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
        assert!(hook.timeout_seconds.is_some_and(|t| t <= 10));
        let selector = hook.object_selector.as_ref().expect("objectSelector");
        let expr = &selector.match_expressions.as_ref().expect("expressions")[0];
        assert_eq!(
            (expr.key.as_str(), expr.operator.as_str()),
            ("runyard.dev/pool", "Exists")
        );
        let ns = hook.namespace_selector.as_ref().expect("namespaceSelector");
        let excluded = ns.match_expressions.as_ref().expect("expressions")[0]
            .values
            .clone()
            .unwrap_or_default();
        assert!(
            excluded.contains(&"kube-system".to_string())
                && excluded.contains(&"runyard".to_string())
        );
        let service = hook.client_config.service.as_ref().expect("service");
        assert_eq!(service.path.as_deref(), Some("/mutate"));
        for rule in hook.rules.iter().flatten() {
            let ops = rule.operations.clone().unwrap_or_default();
            for r in rule.resources.clone().unwrap_or_default() {
                resources.push(format!("{r} {}", ops.join(",")));
            }
        }
    }
    resources.sort();
    // CREATE queues and injects; UPDATE keeps runs from being started or
    // claimed by anyone but the controller; `kubectl debug` is reviewed too.
    assert_eq!(
        resources,
        [
            "jobs CREATE,UPDATE",
            "pods CREATE,UPDATE",
            "pods/ephemeralcontainers UPDATE"
        ]
    );
}

#[test]
fn webhook_rbac_is_read_only_on_pools() {
    let role: ClusterRole =
        serde_json::from_value(find_named("ClusterRole", Some("runyard-webhook"))).expect("typed");
    let rules = role.rules.expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["workerpools".to_string()][..])
    );
    assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
}

fn webhook_arg(args: &[String], flag: &str) -> String {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
        .to_string()
}

/// The webhook's certificate permissions: exactly the rotator's, on exactly
/// the Secret and the webhook configuration its arguments name, for its
/// ServiceAccount only.
#[test]
fn webhook_certificate_rbac_is_exactly_the_rotators() {
    let deployment: Deployment =
        serde_json::from_value(find_named("Deployment", Some("runyard-webhook"))).expect("typed");
    let pod = deployment
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec");
    let args = pod.containers[0].args.clone().expect("args");
    let secret = webhook_arg(&args, "--cert-secret");
    let config = webhook_arg(&args, "--webhook-config");
    assert_eq!(webhook_arg(&args, "--cert-namespace"), "runyard");
    let config_doc = find("MutatingWebhookConfiguration");
    assert_eq!(config_doc["metadata"]["name"], config.as_str());
    let sa = pod.service_account_name.expect("service account");

    let mut rules = Vec::new();
    for (kind, namespaced) in [("Role", true), ("ClusterRole", false)] {
        let role = find_named(kind, Some("runyard-webhook-certs"));
        assert_eq!(role["metadata"]["namespace"].is_string(), namespaced);
        for rule in role["rules"].as_array().expect("rules") {
            let names: Vec<&str> = rule["resourceNames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let resource = rule["resources"][0].as_str().unwrap_or_default();
            match (resource, names.as_slice()) {
                (_, []) => {}
                ("secrets", [n]) => assert_eq!(*n, secret),
                ("mutatingwebhookconfigurations", [n]) => assert_eq!(*n, config),
                other => panic!("unexpected resourceNames {other:?}"),
            }
            rules.push((
                rule["apiGroups"][0]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                resource.to_string(),
                rule["verbs"]
                    .as_array()
                    .expect("verbs")
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect::<Vec<_>>(),
                !names.is_empty(),
            ));
        }
        let binding = find_named(&format!("{kind}Binding"), Some("runyard-webhook-certs"));
        assert_eq!(binding["roleRef"]["name"], "runyard-webhook-certs");
        assert_eq!(binding["subjects"][0]["name"], sa.as_str());
    }
    rules.sort();
    let mut want: Vec<_> = runyard::webhook::rotator::RBAC
        .iter()
        .map(|p| {
            (
                p.group.to_string(),
                p.resource.to_string(),
                p.verbs.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
                p.named,
            )
        })
        .collect();
    want.sort();
    assert_eq!(rules, want);
}

#[test]
fn deployment_is_non_root_and_manages_its_certificate() {
    let deployment: Deployment = serde_json::from_value(find("Deployment")).expect("typed");
    let pod = deployment
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec");
    let sc = pod.security_context.expect("security context");
    assert_eq!(sc.run_as_user, Some(1983));
    assert_eq!(sc.run_as_non_root, Some(true));
    let c = &pod.containers[0];
    let csc = c
        .security_context
        .as_ref()
        .expect("container security context");
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    // No Secret volume: the webhook reads its certificate through the API,
    // so the pods start before any certificate exists.
    assert!(
        pod.volumes.iter().flatten().all(|v| v.secret.is_none()),
        "the webhook must not wait for a Secret volume"
    );
    assert!(c.volume_mounts.is_none());
    // Every flag in the manifest is one the binary accepts.
    let args = c.args.clone().expect("args");
    assert_eq!(webhook_arg(&args, "--cert-secret"), "runyard-webhook-tls");
    assert!(!args.iter().any(|a| a.starts_with("--tls-cert")));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runyard"))
        .args(&args)
        .arg("--help")
        .output()
        .expect("run runyard");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kubectl_kustomize_renders_when_kubectl_is_installed() {
    let Ok(out) = std::process::Command::new("kubectl")
        .args(["kustomize", DIR])
        .output()
    else {
        eprintln!(
            "SKIPPED: kubectl is not installed; the kustomization was checked structurally only"
        );
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8_lossy(&out.stdout);
    assert!(rendered.contains("kind: MutatingWebhookConfiguration"));
    assert!(
        !rendered.contains("kind: CustomResourceDefinition"),
        "`kubectl delete -k webhook-config/` must not delete the CRDs (and with them every pool)"
    );
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", &format!("{DIR}/crds")])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8_lossy(&out.stdout);
    assert!(rendered.contains("name: workerpools.workers.runyard.dev"));
    assert!(rendered.contains("name: workers.workers.runyard.dev"));
}

/// The resources a kustomization file lists, as documents.
fn kustomization_docs(dir: &str) -> Vec<Value> {
    let kustomization = &docs(&format!("{dir}kustomization.yaml"))[0];
    kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .flat_map(|file| docs(&format!("{dir}{}", file.as_str().expect("file"))))
        .collect()
}

#[test]
fn the_crds_are_a_kustomization_of_their_own_so_uninstalling_keeps_pools() {
    let main = kustomization_docs("");
    assert!(
        main.iter().all(|d| d["kind"] != "CustomResourceDefinition"),
        "webhook-config/ must not hold the CRDs: deleting it would delete every WorkerPool"
    );
    let crds = kustomization_docs("crds/");
    let mut names: Vec<&str> = crds
        .iter()
        .map(|d| {
            assert_eq!(d["kind"], "CustomResourceDefinition");
            d["metadata"]["name"].as_str().expect("name")
        })
        .collect();
    names.sort_unstable();
    let mut want: Vec<String> = runyard::crd::crds()
        .iter()
        .map(|c| c.metadata.name.clone().expect("name"))
        .collect();
    want.sort();
    assert_eq!(names, want);
    // Every manifest is installed by one of the two, except the CI
    // submitter's Role, which is applied to the CI's own namespace.
    let listed: Vec<String> = docs("kustomization.yaml")[0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|f| f.as_str().expect("file").to_string())
        .collect();
    for entry in std::fs::read_dir(DIR).expect("webhook-config") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                listed.contains(&name) || name == "ci-submitter-rbac.yaml",
                "{name} is in no kustomization"
            );
        }
    }
}

#[test]
fn the_webhook_trusts_exactly_the_controllers_service_account() {
    let pod_spec = |name: &str| {
        let d: Deployment =
            serde_json::from_value(find_named("Deployment", Some(name))).expect("typed");
        d.spec.expect("spec").template.spec.expect("pod spec")
    };
    let controller = pod_spec("runyard-controller");
    let sa = controller.service_account_name.expect("controller SA");
    let webhook = pod_spec("runyard-webhook");
    let args = webhook.containers[0].args.clone().expect("args");
    let trusted: Vec<_> = args
        .iter()
        .filter_map(|a| a.strip_prefix("--controller-user="))
        .collect();
    assert_eq!(trusted, [format!("system:serviceaccount:runyard:{sa}")]);
}

/// The README's "own registry" overlay replaces every runyard image, also the
/// one the webhook injects into run pods.
#[test]
fn the_own_registry_overlay_replaces_every_runyard_image() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/own-registry");
    let Ok(out) = std::process::Command::new("kubectl")
        .args(["kustomize", dir])
        .output()
    else {
        eprintln!("SKIPPED: kubectl is not installed");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8_lossy(&out.stdout);
    assert!(!rendered.contains("ghcr.io/runyard"), "{rendered}");
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&rendered)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect();
    let webhook: Deployment = serde_json::from_value(
        docs.iter()
            .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "runyard-webhook")
            .expect("webhook")
            .clone(),
    )
    .expect("typed");
    let c = &webhook
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers[0];
    let launcher = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "RUNYARD_LAUNCHER_IMAGE")
        .and_then(|e| e.value.clone());
    assert_eq!(launcher, c.image);
    // That variable is the one `runyard webhook --launcher-image` reads.
    use clap::CommandFactory;
    let cli = runyard::cmd::Cli::command();
    let webhook_cmd = cli.find_subcommand("webhook").expect("webhook");
    let arg = webhook_cmd
        .get_arguments()
        .find(|a| a.get_long() == Some("launcher-image"))
        .expect("--launcher-image");
    assert_eq!(
        arg.get_env().and_then(|e| e.to_str()),
        Some("RUNYARD_LAUNCHER_IMAGE")
    );
}

fn docs_at(rel: &str) -> Vec<Value> {
    docs(rel)
}

#[test]
fn controller_writes_are_namespaced_by_default_and_cluster_wide_only_in_the_overlay() {
    // The rules are the ClusterRole's (checked above against the code); the
    // base grants them in one namespace only, with a RoleBinding.
    let binding = find_named("RoleBinding", Some("runyard-controller"));
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], "runyard-controller");
    let run_ns = binding["metadata"]["namespace"]
        .as_str()
        .expect("namespace");
    assert_ne!(run_ns, "runyard", "the run namespace, not runyard's own");
    let kustomization = &docs("kustomization.yaml")[0];
    assert!(
        kustomization.get("namespace").is_none(),
        "a kustomize namespace would move the RoleBinding into runyard's namespace"
    );
    for file in kustomization["resources"].as_array().expect("resources") {
        for doc in docs(file.as_str().expect("file")) {
            assert!(
                !(doc["kind"] == "ClusterRoleBinding"
                    && doc["metadata"]["name"] == "runyard-controller"),
                "{file}: the controller is bound cluster-wide"
            );
        }
    }
    let deployment: Deployment =
        serde_json::from_value(find_named("Deployment", Some("runyard-controller")))
            .expect("typed");
    let args = deployment
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers[0]
        .args
        .clone()
        .expect("args");
    assert_eq!(args[1], format!("--namespace={run_ns}"));
    assert!(!args.contains(&"--all-namespaces".to_string()));

    // The overlay: a ClusterRoleBinding, the RoleBinding deleted, args[1]
    // replaced by --all-namespaces.
    let overlay = &docs_at("cluster-wide/kustomization.yaml")[0];
    assert_eq!(overlay["resources"][0], "..");
    let crb = &docs_at("cluster-wide/clusterrolebinding.yaml")[0];
    assert_eq!(crb["kind"], "ClusterRoleBinding");
    assert_eq!(crb["roleRef"]["name"], "runyard-controller");
    assert_eq!(crb["subjects"], binding["subjects"]);
    let patches = overlay["patches"].as_array().expect("patches");
    let text: String = patches
        .iter()
        .map(|p| p["patch"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(text.contains("$patch: delete") && text.contains(&format!("namespace: {run_ns}")));
    assert!(
        text.contains("/spec/template/spec/containers/0/args/1")
            && text.contains("--all-namespaces")
    );
}

#[test]
fn the_network_policy_admits_only_the_api_server_to_the_webhook_port() {
    let component = &docs_at("network-policy/kustomization.yaml")[0];
    assert_eq!(component["kind"], "Component");
    let policy = &docs_at("network-policy/networkpolicy.yaml")[0];
    assert_eq!(policy["kind"], "NetworkPolicy");
    let webhook: Deployment =
        serde_json::from_value(find_named("Deployment", Some("runyard-webhook"))).expect("typed");
    let template = webhook.spec.expect("spec").template;
    let labels = template.metadata.expect("meta").labels.expect("labels");
    for (k, v) in policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .expect("selector")
    {
        assert_eq!(labels.get(k).map(String::as_str), v.as_str(), "{k}");
    }
    let https = template.spec.expect("pod").containers[0]
        .ports
        .clone()
        .expect("ports")
        .into_iter()
        .find(|p| p.name.as_deref() == Some("https"))
        .expect("https port")
        .container_port;
    let rules = policy["spec"]["ingress"].as_array().expect("ingress");
    let webhook_rule = rules
        .iter()
        .find(|r| r["ports"][0]["port"] == https)
        .expect("a rule for the webhook port");
    let from = webhook_rule["from"]
        .as_array()
        .expect("from: only listed sources");
    assert!(!from.is_empty());
    assert!(from
        .iter()
        .all(|f| f["ipBlock"]["cidr"].is_string() && f.as_object().is_some_and(|o| o.len() == 1)));
    // No other rule opens the webhook port.
    assert!(rules
        .iter()
        .filter(|r| !std::ptr::eq(*r, webhook_rule))
        .all(|r| r["ports"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["port"] != https))));
}
