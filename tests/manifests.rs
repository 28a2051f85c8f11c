//! `webhook-config/` is a valid kustomization whose webhook settings are the
//! ones DESIGN.md requires.

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
    let role: ClusterRole = serde_json::from_value(find("ClusterRole")).expect("typed");
    let rules = role.rules.expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["workerpools".to_string()][..])
    );
    assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
}

#[test]
fn deployment_is_non_root_and_uses_the_certs_secret() {
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
    let secret = pod.volumes.expect("volumes")[0]
        .secret
        .clone()
        .expect("secret volume");
    // The default name `runyard certs --secret` writes.
    assert_eq!(secret.secret_name.as_deref(), Some("runyard-webhook-tls"));
    // Every flag in the manifest is one the binary accepts.
    let args = c.args.clone().expect("args");
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
    assert!(rendered.contains("name: workerpools.workers.runyard.dev"));
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
