//! `runyard launcher init`: lays out the workspace, writes the run metadata,
//! fetches the source (a mounted ConfigMap directory, or a checksummed https
//! tarball), and fills the shared binaries cache. Idempotent: a restarted pod
//! runs it again safely. Failures leave no partial tree behind.

use super::fetch::{self, FetchError};
use super::{parse_tools, read_podinfo, Layout, ToolSpec};
use crate::vocab::{env as var, ANNOTATION_SOURCE_SHA256, ANNOTATION_SOURCE_URL, ANNOTATION_TOOLS};
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("checksum mismatch for {what}: expected sha256 {expected}, got {actual}")]
    Checksum {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("the source tarball is unsafe: entry {entry:?} {why}")]
    UnsafeEntry { entry: String, why: &'static str },
    #[error("the source tarball cannot be read: {0}")]
    Tarball(String),
    #[error("{ANNOTATION_SOURCE_URL} is set but {ANNOTATION_SOURCE_SHA256} is missing or not 64 hex digits")]
    MissingChecksum,
    #[error("{ANNOTATION_TOOLS}: {0}")]
    Tools(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InitError {
    let path = path.to_path_buf();
    move |source| InitError::Io { what, path, source }
}

/// `.runyard/run.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    pub run_id: String,
    pub pool: String,
    pub worker: String,
    pub namespace: String,
    pub pod: String,
    pub job: Option<String>,
    /// How many times `init` ran for this workspace (1 on the first start).
    pub attempt: u32,
    /// RFC 3339, from the first start.
    pub started_at: String,
}

/// What `init` did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct InitReport {
    pub source_fetched: bool,
    pub tools_downloaded: Vec<String>,
    pub tools_cached: Vec<String>,
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_default()
}

/// Writes `content` to `path` atomically (temp file + rename).
fn write_atomic(path: &Path, content: &[u8]) -> Result<(), InitError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, content).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("renaming", path))
}

/// Runs `init`.
pub async fn run(layout: &Layout) -> Result<InitReport, InitError> {
    let mut report = InitReport::default();
    let state = layout.state();
    for dir in [
        &layout.workspace,
        &state,
        &layout.workspace.join("source"),
        &layout.binaries,
        &layout.cache,
    ] {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    let annotations = read_podinfo(&layout.podinfo.join("annotations"));
    let labels = read_podinfo(&layout.podinfo.join("labels"));
    write_run_info(layout, &labels)?;

    let tls = fetch::client_config(layout.ca_file.as_deref())?;
    if let Some(dir) = std::env::var_os(var::SOURCE_DIR).filter(|d| !d.is_empty()) {
        copy_configmap(Path::new(&dir), &layout.workspace.join("source"))?;
        report.source_fetched = true;
    } else if let Some(url) = annotations
        .get(ANNOTATION_SOURCE_URL)
        .filter(|u| !u.is_empty())
    {
        let sha = annotations
            .get(ANNOTATION_SOURCE_SHA256)
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()))
            .ok_or(InitError::MissingChecksum)?;
        report.source_fetched = fetch_source(layout, url, &sha, tls.clone()).await?;
    }
    if let Some(tools) = annotations.get(ANNOTATION_TOOLS) {
        let tools = parse_tools(tools).map_err(InitError::Tools)?;
        for tool in tools {
            let downloaded = install_tool(layout, &tool, tls.clone()).await?;
            let list = if downloaded {
                &mut report.tools_downloaded
            } else {
                &mut report.tools_cached
            };
            list.push(tool.name);
        }
    }
    Ok(report)
}

fn write_run_info(
    layout: &Layout,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<(), InitError> {
    let path = layout.run_file();
    let previous: Option<RunInfo> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let info = RunInfo {
        run_id: env(var::RUN_ID),
        pool: env(var::POOL),
        worker: env(var::WORKER),
        namespace: env(var::NAMESPACE),
        pod: env(var::POD_NAME),
        job: labels
            .get("batch.kubernetes.io/job-name")
            .or_else(|| labels.get("job-name"))
            .cloned(),
        attempt: previous.as_ref().map_or(1, |p| p.attempt + 1),
        started_at: previous
            .map(|p| p.started_at)
            .unwrap_or_else(|| k8s_openapi::jiff::Timestamp::now().to_string()),
    };
    let json = serde_json::to_vec_pretty(&info).map_err(|e| InitError::Tarball(e.to_string()))?;
    write_atomic(&path, &json)
}

/// Copies a mounted ConfigMap directory (its files are symlinks into `..data`).
fn copy_configmap(from: &Path, to: &Path) -> Result<(), InitError> {
    for entry in std::fs::read_dir(from).map_err(io("reading", from))? {
        let entry = entry.map_err(io("reading", from))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("..") {
            continue;
        }
        let src = entry.path();
        if std::fs::metadata(&src)
            .map(|m| m.is_file())
            .unwrap_or(false)
        {
            let dest = to.join(&name);
            let content = std::fs::read(&src).map_err(io("reading", &src))?;
            write_atomic(&dest, &content)?;
        }
    }
    Ok(())
}

/// Downloads, verifies and unpacks the source; `false` if it was already there.
async fn fetch_source(
    layout: &Layout,
    url: &str,
    sha: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> Result<bool, InitError> {
    let state = layout.state();
    let marker = state.join("source.sha256");
    let source = layout.workspace.join("source");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == sha) {
        return Ok(false);
    }
    let tarball = state.join("source.tar.gz.part");
    let staging = state.join("source.staging");
    let cleanup = || {
        let _ = std::fs::remove_file(&tarball);
        let _ = std::fs::remove_dir_all(&staging);
    };
    let result = async {
        let actual = fetch::fetch_to_file(url, &tarball, tls, Duration::from_secs(600)).await?;
        if actual != sha {
            return Err(InitError::Checksum {
                what: url.to_string(),
                expected: sha.to_string(),
                actual,
            });
        }
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(io("creating", &staging))?;
        unpack(&tarball, &staging)?;
        // Swap the tree in whole: a failure above leaves no partial source.
        let _ = std::fs::remove_dir_all(&source);
        std::fs::rename(&staging, &source).map_err(io("moving the source to", &source))?;
        write_atomic(&marker, sha.as_bytes())
    }
    .await;
    cleanup();
    result.map(|()| true)
}

/// Unpacks a `.tar.gz`, refusing absolute paths, `..`, links and devices.
fn unpack(tarball: &Path, into: &Path) -> Result<(), InitError> {
    let file = std::fs::File::open(tarball).map_err(io("opening", tarball))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = archive
        .entries()
        .map_err(|e| InitError::Tarball(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| InitError::Tarball(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| InitError::Tarball(e.to_string()))?
            .into_owned();
        let shown = path.display().to_string();
        for c in path.components() {
            match c {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir => {
                    return Err(InitError::UnsafeEntry {
                        entry: shown,
                        why: "contains ..",
                    })
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(InitError::UnsafeEntry {
                        entry: shown,
                        why: "is an absolute path",
                    })
                }
            }
        }
        let kind = entry.header().entry_type();
        let dest = into.join(&path);
        if kind.is_dir() {
            std::fs::create_dir_all(&dest).map_err(io("creating", &dest))?;
        } else if kind.is_file() {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
            }
            let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
            let mut out = std::fs::File::create(&dest).map_err(io("writing", &dest))?;
            std::io::copy(&mut entry, &mut out).map_err(io("writing", &dest))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode | 0o600))
                    .map_err(io("chmod", &dest))?;
            }
            #[cfg(not(unix))]
            let _ = mode;
        } else if kind.is_symlink() || kind.is_hard_link() {
            return Err(InitError::UnsafeEntry {
                entry: shown,
                why: "is a link",
            });
        } else {
            return Err(InitError::UnsafeEntry {
                entry: shown,
                why: "is not a file or directory",
            });
        }
    }
    Ok(())
}

/// Puts one tool into the shared cache (downloading it at most once across
/// every pod sharing the cache) and links it into the binaries directory.
/// Returns whether this call downloaded it.
async fn install_tool(
    layout: &Layout,
    tool: &ToolSpec,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> Result<bool, InitError> {
    let dir =
        layout
            .cache
            .join(&tool.name)
            .join(format!("{}-{}", tool.version, &tool.sha256[..16]));
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let target = dir.join(&tool.name);
    let lock_path = dir.join(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("opening", &lock_path))?;
    // Blocking lock on a blocking thread: other pods may hold it while downloading.
    let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
        .await
        .map_err(|e| InitError::Tarball(e.to_string()))?
        .map_err(io("locking", &lock_path))?;
    let result = async {
        if target.exists() && fetch::sha256_file(&target).is_ok_and(|s| s == tool.sha256) {
            return Ok(false);
        }
        let part = dir.join(format!(".{}.part-{}", tool.name, std::process::id()));
        let outcome = async {
            let actual =
                fetch::fetch_to_file(&tool.url, &part, tls, Duration::from_secs(600)).await?;
            if actual != tool.sha256 {
                return Err(InitError::Checksum {
                    what: format!("tool {} {}", tool.name, tool.version),
                    expected: tool.sha256.clone(),
                    actual,
                });
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o755))
                    .map_err(io("chmod", &part))?;
            }
            std::fs::rename(&part, &target).map_err(io("renaming", &target))
        }
        .await;
        if outcome.is_err() {
            let _ = std::fs::remove_file(&part);
        }
        outcome.map(|()| true)
    }
    .await;
    drop(lock);
    let downloaded = result?;
    link(&target, &layout.binaries.join(&tool.name))?;
    Ok(downloaded)
}

/// Points `link` at `target`, replacing an existing link atomically.
fn link(target: &Path, link: &Path) -> Result<(), InitError> {
    #[cfg(unix)]
    {
        let tmp = link.with_extension(format!("link-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp).map_err(io("linking", &tmp))?;
        std::fs::rename(&tmp, link).map_err(io("linking", link))
    }
    #[cfg(not(unix))]
    {
        std::fs::copy(target, link)
            .map(|_| ())
            .map_err(io("copying", link))
    }
}
