//! The Helm chart: CRD templates equal `runyard crd`, values.yaml validates
//! against values.schema.json (and typos do not), every template is
//! well-formed YAML once rendered (first branch of each condition, expressions
//! replaced by placeholders: no helm binary is available here), the chart's
//! RBAC is the code's, and every value is documented.

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
        "Job",
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
        Some(obj) if !obj.is_empty() && prefix != "controllerManager.resources" => {
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
