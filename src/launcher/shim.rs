//! Installs the exec shim (`runyard-exec`, shipped next to `runyard` in the
//! launcher image) into the run's binaries directory, where worker commands
//! the webhook wrapped expect it ([`crate::vocab::EXEC_SHIM_PATH`]).

use crate::vocab::{EXEC_SHIM_BINARY, EXEC_SHIM_FILE};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("the exec shim {} is not in the launcher image: worker commands runyard wrapped to put tools first on PATH cannot start; use a launcher image built from runyard's Dockerfile (it ships {EXEC_SHIM_BINARY} next to runyard)", .0.display())]
    Missing(PathBuf),
    #[error("installing the exec shim at {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the shim comes from: `runyard-exec` next to the running binary.
pub fn source() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(EXEC_SHIM_BINARY)))
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin").join(EXEC_SHIM_BINARY))
}

/// Copies `source` to `binaries/.runyard-exec` (mode 0755), atomically (a
/// restarted pod's workers never see half a file). Returns the installed path.
pub fn install(source: &Path, binaries: &Path) -> Result<PathBuf, ShimError> {
    if !source.is_file() {
        return Err(ShimError::Missing(source.to_path_buf()));
    }
    let target = binaries.join(EXEC_SHIM_FILE);
    let tmp = binaries.join(format!("{EXEC_SHIM_FILE}.tmp-{}", std::process::id()));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ShimError::Io { path, source }
    };
    std::fs::create_dir_all(binaries).map_err(io(binaries))?;
    std::fs::copy(source, &tmp).map_err(io(&tmp))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ShimError::Io {
            path: target.clone(),
            source: e,
        }
    })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_executable_and_refuses_a_missing_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("runyard-exec");
        std::fs::write(&src, b"#!/bin/sh\n").expect("write");
        let bin = dir.path().join("binaries");
        let installed = install(&src, &bin).expect("install");
        assert_eq!(installed, bin.join(EXEC_SHIM_FILE));
        // Again (a restarted pod): fine.
        install(&src, &bin).expect("reinstall");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&installed)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755);
        }
        let err = install(&dir.path().join("nope"), &bin).expect_err("missing");
        assert!(err.to_string().contains("Dockerfile"), "{err}");
    }
}
