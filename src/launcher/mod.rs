//! The runyard binary inside a run pod: `launcher init` (the `init` container)
//! prepares the workspace, source and tools; `launcher serve` (the `launcher`
//! sidecar) serves the worker a local API on a Unix socket and relays stop
//! requests. Neither needs Kubernetes credentials: they read the pod's
//! annotations from the downward-API volume the webhook mounts.

pub mod fetch;
pub mod init;
pub mod safe_fs;
pub mod serve;
pub mod shim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the launcher works (the command line's flags, which default to the
/// environment the webhook injects).
#[derive(Debug, Clone)]
pub struct Layout {
    pub workspace: PathBuf,
    pub cache: PathBuf,
    pub binaries: PathBuf,
    /// The downward-API volume (files `annotations`, `labels`).
    pub podinfo: PathBuf,
    /// Extra CA certificates (PEM) trusted for downloads.
    pub ca_file: Option<PathBuf>,
    /// Limits on unpacking the source tarball.
    pub extract: init::ExtractLimits,
}

impl Layout {
    /// `.runyard/` in the workspace.
    pub fn state(&self) -> PathBuf {
        self.workspace.join(".runyard")
    }

    pub fn run_file(&self) -> PathBuf {
        self.state().join("run.json")
    }

    pub fn socket(&self) -> PathBuf {
        self.state().join("launcher.sock")
    }

    pub fn stop_file(&self) -> PathBuf {
        self.state().join("stop")
    }

    /// Written once the workers have exited: pool sidecars supervised by the
    /// exec shim (`--until`, container sidecar mode) stop then
    /// ([`crate::vocab::WORKERS_DONE_FILE`] in a run pod).
    pub fn workers_done_file(&self) -> PathBuf {
        self.state().join("workers-done")
    }
}

/// Reads a downward-API file (`key="value"` per line, values Go-quoted).
pub fn read_podinfo(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .map(|t| parse_podinfo(&t))
        .unwrap_or_default()
}

/// Parses the downward API's `key="value"` lines.
pub fn parse_podinfo(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (k, v) = line.split_once('=')?;
            Some((k.to_string(), unquote(v)?))
        })
        .collect()
}

/// Undoes Go's `%q` quoting (the subset the kubelet produces).
fn unquote(v: &str) -> Option<String> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
            }
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// One tool of `runyard.dev/tools`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSpec {
    pub name: String,
    pub version: String,
    pub url: String,
    pub sha256: String,
}

/// Parses `name=version@url#sha256=HEX` entries.
pub fn parse_tools(text: &str) -> Result<Vec<ToolSpec>, String> {
    text.split(|c: char| c.is_whitespace() || c == ';')
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let bad =
                || format!("invalid tool {entry:?}: expected name=version@https://...#sha256=HEX");
            let (name, rest) = entry.split_once('=').ok_or_else(bad)?;
            let (version, rest) = rest.split_once('@').ok_or_else(bad)?;
            let (url, sha) = rest.rsplit_once("#sha256=").ok_or_else(bad)?;
            let name_ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !name.starts_with('.');
            let version_ok = !version.is_empty()
                && version
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
            let sha_ok = sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit());
            if !(name_ok && version_ok && sha_ok && url.starts_with("https://")) {
                return Err(bad());
            }
            Ok(ToolSpec {
                name: name.into(),
                version: version.into(),
                url: url.into(),
                sha256: sha.to_ascii_lowercase(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downward_api_files_parse() {
        let text = "runyard.dev/stop=\"cancelled by \\\"ci\\\"\"\nkubernetes.io/config.seen=\"2024-01-01T00:00:00Z\"\nmulti=\"a\\nb\\u00e9\"\nbroken=noquotes\n";
        let m = parse_podinfo(text);
        assert_eq!(
            m.get(crate::vocab::ANNOTATION_STOP).map(String::as_str),
            Some("cancelled by \"ci\"")
        );
        assert_eq!(m.get("multi").map(String::as_str), Some("a\nbé"));
        assert!(!m.contains_key("broken"));
    }

    #[test]
    fn tool_specs_parse_and_reject_unsafe_ones() {
        let sha = "a".repeat(64);
        let tools = parse_tools(&format!(
            "terraform=1.9.0@https://x/tf#sha256={sha}; jq=1.7@https://y/jq?a=b#sha256={sha}"
        ))
        .expect("parse");
        assert_eq!(tools.len(), 2);
        assert_eq!(tools[1].url, "https://y/jq?a=b");
        for bad in [
            format!("../evil=1@https://x#sha256={sha}"),
            format!("t=1@http://x#sha256={sha}"),
            "t=1@https://x#sha256=abc".to_string(),
            format!("t=1/2@https://x#sha256={sha}"),
            "nonsense".to_string(),
        ] {
            assert!(parse_tools(&bad).is_err(), "{bad}");
        }
    }
}
