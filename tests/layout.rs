//! The house rules of `src/`, read off the code: which modules may import
//! what (see "Code map" in the README). Pure modules (the vocabulary, the CRD
//! types, durations, the injection engine, the controller's model) import no
//! runtime, no API client, no server and no I/O module; the CLI clients never
//! reach into the controller's writes or runtime; the shared HTTP pieces know
//! nothing of the webhook or the controller.

use std::path::{Path, PathBuf};

/// A module prefix and the paths its code must not reference.
struct Rule {
    modules: &'static [&'static str],
    forbidden: &'static [&'static str],
}

const PURE_FORBIDDEN: &[&str] = &[
    "tokio",
    "axum",
    "hyper",
    "hyper_util",
    "tokio_rustls",
    "kube::Client",
    "kube::Api",
    "kube::api",
    "kube::client",
    "kube::runtime",
    "kube::Config",
    "crate::cluster",
    "crate::webhook",
    "crate::http",
    "crate::cmd",
    "crate::client",
    "crate::shutdown",
    "crate::controller::act",
    "crate::controller::runtime",
    "crate::controller::lease",
    "crate::controller::metrics",
];

const RULES: &[Rule] = &[
    Rule {
        modules: &[
            "vocab",
            "crd",
            "duration",
            "injection",
            "controller::model",
            "certs::managed",
        ],
        forbidden: PURE_FORBIDDEN,
    },
    Rule {
        modules: &["client"],
        forbidden: &[
            "crate::controller::act",
            "crate::controller::runtime",
            "crate::controller::lease",
            "crate::webhook",
            "crate::cmd",
        ],
    },
    Rule {
        modules: &["http"],
        forbidden: &["crate::webhook", "crate::controller", "crate::cmd"],
    },
    Rule {
        modules: &["cluster"],
        forbidden: &[
            "crate::webhook",
            "crate::cmd",
            "crate::client",
            "crate::controller::act",
            "crate::controller::runtime",
        ],
    },
];

/// The module path of a source file (`src/controller/model/decide.rs` →
/// `controller::model::decide`; `mod.rs` names its directory).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// Expands a `use` tree (`crate::a::{b, c::{d, e}}`) into full paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        return vec![path.trim_end_matches("::").to_string()];
    };
    let prefix = tree[..open].trim_end_matches("::");
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.trim().is_empty())
        .flat_map(expand)
        .map(|p| {
            if p == "self" {
                prefix.to_string()
            } else if prefix.is_empty() {
                p
            } else {
                format!("{prefix}::{p}")
            }
        })
        .collect()
}

/// Resolves `self::`/`super::` against the module, giving `crate::...` paths;
/// other paths (external crates) are returned as written.
fn resolve(path: &str, module: &[String]) -> String {
    let mut segs: Vec<&str> = path.split("::").collect();
    let mut base: Vec<String> = module.to_vec();
    let mut relative = false;
    while let Some(first) = segs.first() {
        match *first {
            "self" => {
                relative = true;
                segs.remove(0);
            }
            "super" => {
                relative = true;
                base.pop();
                segs.remove(0);
            }
            _ => break,
        }
    }
    if relative {
        let mut all = vec!["crate".to_string()];
        all.extend(base);
        all.extend(segs.iter().map(|s| s.to_string()));
        all.join("::")
    } else {
        segs.join("::")
    }
}

/// Every path the code of a file references: its `use` trees, and inline
/// `crate::`/`super::`/external paths. Comments and `#[cfg(test)]` modules at
/// the end of a file are skipped.
fn references(text: &str, module: &[String]) -> Vec<(usize, String)> {
    let mut code = String::new();
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        lines.push((n + 1, line));
        code.push_str(line);
        code.push('\n');
    }
    let mut out = Vec::new();
    // `use` statements, possibly over several lines.
    let mut i = 0;
    while i < lines.len() {
        let (n, line) = lines[i];
        let t = line.trim_start();
        let body = t
            .strip_prefix("pub use ")
            .or_else(|| t.strip_prefix("pub(crate) use "))
            .or_else(|| t.strip_prefix("use "));
        if let Some(body) = body {
            let mut stmt = body.to_string();
            while !stmt.contains(';') && i + 1 < lines.len() {
                i += 1;
                stmt.push_str(lines[i].1);
            }
            let stmt = stmt.split(';').next().unwrap_or_default();
            for p in expand(stmt) {
                out.push((n, resolve(&p, module)));
            }
        } else {
            for word in line.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
                if word.contains("::") && !word.starts_with("::") {
                    out.push((n, resolve(word.trim_end_matches(':'), module)));
                }
            }
        }
        i += 1;
    }
    out
}

fn matches(path: &str, forbidden: &str) -> bool {
    path == forbidden || path.starts_with(&format!("{forbidden}::"))
}

fn in_module(module: &[String], prefix: &str) -> bool {
    let prefix: Vec<&str> = prefix.split("::").collect();
    module.len() >= prefix.len() && module.iter().zip(&prefix).all(|(a, b)| a == b)
}

/// The violations of `text` as the code of `module`.
fn violations(text: &str, module: &[String], file: &str) -> Vec<String> {
    let mut found = Vec::new();
    for rule in RULES {
        if !rule.modules.iter().any(|m| in_module(module, m)) {
            continue;
        }
        for (line, path) in references(text, module) {
            if let Some(f) = rule.forbidden.iter().find(|f| matches(&path, f)) {
                found.push(format!(
                    "{file}:{line}: module {} references {path} (forbidden: {f})",
                    module.join("::")
                ));
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_import_only_downhill() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "read the tree");
    let mut all = Vec::new();
    for file in files {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read");
        let module = module_of(&src, &file);
        all.extend(violations(
            &text,
            &module,
            &file.strip_prefix(&src).expect("rel").display().to_string(),
        ));
    }
    assert!(all.is_empty(), "layout rules broken:\n{}", all.join("\n"));
}

#[test]
fn the_rules_catch_forbidden_imports() {
    let m = |s: &str| s.split("::").map(str::to_string).collect::<Vec<_>>();
    // Direct, grouped, relative, inline and external forms are all seen.
    let cases = [
        ("injection::pod", "use crate::webhook::AppState;\n"),
        (
            "injection::pod",
            "use crate::{crd::WorkerPool, cluster::ClusterError};\n",
        ),
        (
            "controller::model::decide",
            "use super::super::act::Report;\n",
        ),
        ("controller::model", "use super::runtime::run;\n"),
        (
            "injection",
            "fn f() { let _ = crate::http::Limits::default(); }\n",
        ),
        ("vocab", "use tokio::sync::watch;\n"),
        ("crd", "use kube::{Client, CustomResource};\n"),
        (
            "client::submit",
            "use crate::controller::act::reconcile_pool;\n",
        ),
        ("http", "use crate::webhook::metrics::Metrics;\n"),
        ("certs::managed", "use kube::api::Api;\n"),
        ("certs::managed", "use crate::webhook::tls::CertStore;\n"),
    ];
    for (module, text) in cases {
        assert!(
            !violations(text, &m(module), "x.rs").is_empty(),
            "{module}: {text} should be refused"
        );
    }
    // What the pure modules may use.
    for (module, text) in [
        ("injection::pod", "use crate::vocab::LABEL_POOL;\nuse super::policy;\n"),
        ("crd", "use kube::{CustomResource, CustomResourceExt};\n"),
        ("controller::model::observe", "use kube::ResourceExt;\nuse super::Run;\n"),
        ("client::status", "use crate::controller::model::queue;\n"),
        (
            "injection",
            "// crate::webhook is only named in a comment\n#[cfg(test)]\nmod tests { use tokio; }\n",
        ),
    ] {
        assert_eq!(
            violations(text, &m(module), "x.rs"),
            Vec::<String>::new(),
            "{module}: {text}"
        );
    }
}

#[test]
fn the_testing_crate_is_a_dev_dependency_only() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("Cargo.toml");
    let dev = manifest
        .split("[dev-dependencies]")
        .nth(1)
        .expect("dev-dependencies")
        .split("\n[")
        .next()
        .unwrap_or_default();
    let normal = manifest
        .split("\n[dependencies]")
        .nth(1)
        .expect("dependencies")
        .split("\n[")
        .next()
        .unwrap_or_default();
    assert!(dev.contains("runyard-testing"), "{dev}");
    assert!(!normal.contains("runyard-testing"), "{normal}");
}
