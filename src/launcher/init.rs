//! `runyard launcher init`: lays out the workspace, writes the run metadata,
//! fetches the source (a mounted ConfigMap directory, or a checksummed https
//! tarball), and fills the shared binaries cache. Idempotent: a restarted pod
//! runs it again safely. Failures leave no partial tree behind.

use super::fetch::{self, FetchError};
use super::{parse_tools, read_podinfo, safe_fs, Layout, ToolSpec};
use crate::vocab::{env as var, ANNOTATION_SOURCE_SHA256, ANNOTATION_SOURCE_URL, ANNOTATION_TOOLS};
use serde::{Deserialize, Serialize};
use std::io::Read as _;
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
    #[error("the source tarball is too large: {what} (the pool's spec.limits.{field}; the launcher's --{flag})")]
    TooLarge {
        what: String,
        field: &'static str,
        flag: &'static str,
    },
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

/// Writes `content` to `path` atomically, never through a planted link.
fn write_atomic(path: &Path, content: &[u8]) -> Result<(), InitError> {
    safe_fs::write_atomic(path, content).map_err(io("writing", path))
}

/// Default for [`ExtractLimits::max_bytes`]: 2 GiB unpacked.
pub const DEFAULT_MAX_SOURCE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Default for [`ExtractLimits::max_entries`].
pub const DEFAULT_MAX_SOURCE_ENTRIES: u64 = 100_000;
/// Largest GNU long-name or PAX header accepted (the tar reader holds it in memory).
pub const MAX_EXTENSION_HEADER_BYTES: u64 = 64 * 1024;

/// Limits on unpacking the source tarball (a zip bomb fails the run before
/// anything is written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Total bytes of the files unpacked.
    pub max_bytes: u64,
    /// Entries (files and directories).
    pub max_entries: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_SOURCE_BYTES,
            max_entries: DEFAULT_MAX_SOURCE_ENTRIES,
        }
    }
}

/// Runs `init`.
pub async fn run(layout: &Layout) -> Result<InitReport, InitError> {
    let mut report = InitReport::default();
    let state = layout.state();
    // The mount points themselves are the kubelet's; below them, anything the
    // run left (a link in place of `.runyard` or `source`) is replaced by a
    // real directory before anything is written there.
    for dir in [&layout.workspace, &layout.cache] {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    for dir in [&state, &layout.workspace.join("source")] {
        safe_fs::ensure_dirs_below(&layout.workspace, dir).map_err(io("creating", dir))?;
    }
    match layout.binaries.starts_with(&layout.workspace) {
        true => safe_fs::ensure_dirs_below(&layout.workspace, &layout.binaries),
        false => std::fs::create_dir_all(&layout.binaries),
    }
    .map_err(io("creating", &layout.binaries))?;
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
        let _ = safe_fs::remove_any(&tarball);
        let _ = safe_fs::remove_any(&staging);
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
        safe_fs::remove_any(&staging).map_err(io("removing", &staging))?;
        std::fs::create_dir(&staging).map_err(io("creating", &staging))?;
        unpack_file(&tarball, &staging, &layout.extract)?;
        // Swap the tree in whole: a failure above leaves no partial source.
        safe_fs::remove_any(&source).map_err(io("removing", &source))?;
        std::fs::rename(&staging, &source).map_err(io("moving the source to", &source))?;
        write_atomic(&marker, sha.as_bytes())
    }
    .await;
    cleanup();
    result.map(|()| true)
}

/// Unpacks a `.tar.gz` file into the empty directory `into` (see [`unpack`]).
pub fn unpack_file(tarball: &Path, into: &Path, limits: &ExtractLimits) -> Result<(), InitError> {
    unpack(
        || {
            std::fs::File::open(tarball)
                .map(flate2::read::GzDecoder::new)
                .map_err(io("opening", tarball))
        },
        into,
        limits,
    )
}

fn tar_err(e: std::io::Error) -> InitError {
    InitError::Tarball(e.to_string())
}

/// Checks one entry's path: relative, without `..`.
fn check_path(path: &Path) -> Result<(), InitError> {
    let shown = || path.display().to_string();
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(InitError::UnsafeEntry {
                    entry: shown(),
                    why: "contains ..",
                })
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(InitError::UnsafeEntry {
                    entry: shown(),
                    why: "is an absolute path",
                })
            }
        }
    }
    Ok(())
}

/// Checks the whole archive before anything is written: every entry's path
/// and kind, the entry count, the unpacked size, and the size of long-name
/// and PAX headers (which the tar reader holds in memory).
fn check_archive<R: std::io::Read>(tar: R, limits: &ExtractLimits) -> Result<(), InitError> {
    let mut archive = tar::Archive::new(tar);
    let mut raw = archive.entries().map_err(tar_err)?.raw(true);
    let (mut entries, mut bytes) = (0u64, 0u64);
    for entry in raw.by_ref() {
        let entry = entry.map_err(tar_err)?;
        let kind = entry.header().entry_type();
        let size = entry.header().entry_size().map_err(tar_err)?;
        if kind.is_gnu_longname() || kind.is_gnu_longlink() || kind.is_pax_local_extensions() {
            if size > MAX_EXTENSION_HEADER_BYTES {
                return Err(InitError::UnsafeEntry {
                    entry: format!("<{size}-byte extension header>"),
                    why: "is a long-name or PAX header over 64 KiB",
                });
            }
            continue;
        }
        entries += 1;
        if entries > limits.max_entries {
            return Err(InitError::TooLarge {
                what: format!("more than {} entries", limits.max_entries),
                field: "sourceEntries",
                flag: "max-source-entries",
            });
        }
        bytes = bytes.saturating_add(size);
        if bytes > limits.max_bytes {
            return Err(InitError::TooLarge {
                what: format!("more than {} bytes unpacked", limits.max_bytes),
                field: "sourceBytes",
                flag: "max-source-bytes",
            });
        }
    }
    Ok(())
}

/// Unpacks the tar stream `open()` returns into the empty directory `into`.
/// The archive is read twice: first checked whole ([`check_archive`]: a
/// zip bomb or an oversize header fails before anything is written), then
/// unpacked, refusing absolute paths, `..`, links and devices. Nothing is
/// created outside `into`, and no file is opened through a link.
pub fn unpack<R: std::io::Read>(
    mut open: impl FnMut() -> Result<R, InitError>,
    into: &Path,
    limits: &ExtractLimits,
) -> Result<(), InitError> {
    check_archive(open()?, limits)?;
    let mut archive = tar::Archive::new(open()?);
    let entries = archive.entries().map_err(tar_err)?;
    let mut written = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(tar_err)?;
        let path = entry.path().map_err(tar_err)?.into_owned();
        check_path(&path)?;
        let shown = path.display().to_string();
        let kind = entry.header().entry_type();
        let dest = into.join(&path);
        if kind.is_dir() {
            std::fs::create_dir_all(&dest).map_err(io("creating", &dest))?;
        } else if kind.is_file() {
            // A file entry named `` or `.` would be `into` itself (found by
            // the archive fuzz target: replacing it removed the directory).
            if !path.components().any(|c| matches!(c, Component::Normal(_))) {
                return Err(InitError::UnsafeEntry {
                    entry: shown,
                    why: "is a file without a name",
                });
            }
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
            }
            let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
            // A later entry of the same name replaces the earlier file.
            let mut out = safe_fs::replace_file(&dest).map_err(io("writing", &dest))?;
            // The sizes were checked; the copy is bounded again in case the
            // stream differs from the first read.
            let budget = limits.max_bytes.saturating_sub(written);
            let n = std::io::copy(&mut (&mut entry).take(budget + 1), &mut out)
                .map_err(io("writing", &dest))?;
            written += n;
            if n > budget {
                return Err(InitError::TooLarge {
                    what: format!("more than {} bytes unpacked", limits.max_bytes),
                    field: "sourceBytes",
                    flag: "max-source-bytes",
                });
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                out.set_permissions(std::fs::Permissions::from_mode(mode | 0o600))
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
    let lock = open_lock(&lock_path).map_err(io("opening", &lock_path))?;
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

/// Opens (creating) a lock file, never through a link.
fn open_lock(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    options.open(path)
}

/// Points `link` at `target`, replacing an existing link atomically.
fn link(target: &Path, link: &Path) -> Result<(), InitError> {
    #[cfg(unix)]
    {
        let tmp = link.with_extension(format!("link-{}", std::process::id()));
        safe_fs::remove_any(&tmp).map_err(io("linking", &tmp))?;
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
