//! `runyard-exec`: the exec shim that puts runyard's tool directories first
//! on a worker's PATH without losing the image's own PATH.
//!
//! A pod spec cannot name the image's PATH (`$(PATH)` expands only variables
//! declared in the spec), so when a run has tools the webhook rewrites a
//! worker's `command` to
//!
//! ```text
//! /opt/runyard/binaries/.runyard-exec --path-prefix=DIR[:DIR...] -- COMMAND [ARGS...]
//! ```
//!
//! and `launcher init` copies this binary there. It prepends the directories
//! to the PATH the process really got (the image's `ENV PATH`, `envFrom`, the
//! spec's `env`) and execs the command in its own place: same PID, same
//! signals, the command's own exit code. Only the standard library, so it is
//! small (copied into every run pod that needs it) and static in the image.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

/// PATH when the process has none (what container runtimes default to).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PREFIX_ARG: &str = "--path-prefix=";
const USAGE: &str = "usage: runyard-exec --path-prefix=DIR[:DIR...] -- COMMAND [ARGS...]";

/// The arguments: the prefix and the command with its arguments.
fn parse(args: &[OsString]) -> Result<(OsString, &[OsString]), String> {
    let prefix = args
        .first()
        .and_then(|a| a.as_bytes().strip_prefix(PREFIX_ARG.as_bytes()))
        .ok_or_else(|| format!("missing {PREFIX_ARG}DIRS\n{USAGE}"))?;
    if args.get(1).map(OsString::as_os_str) != Some(OsStr::new("--")) {
        return Err(format!("missing -- before the command\n{USAGE}"));
    }
    let command = &args[2..];
    if command.is_empty() {
        return Err(format!("no command to run\n{USAGE}"));
    }
    Ok((OsStr::from_bytes(prefix).to_os_string(), command))
}

/// `prefix` before `current` (or the default PATH when there is none);
/// unchanged when `current` already starts with `prefix` (a shim that runs
/// a shim adds nothing twice).
fn prepend(prefix: &OsStr, current: Option<&OsStr>) -> OsString {
    let current = current
        .filter(|c| !c.is_empty())
        .unwrap_or(OsStr::new(DEFAULT_PATH));
    if prefix.is_empty() {
        return current.to_os_string();
    }
    let (p, c) = (prefix.as_bytes(), current.as_bytes());
    if c == p || (c.starts_with(p) && c.get(p.len()) == Some(&b':')) {
        return current.to_os_string();
    }
    let mut out = prefix.to_os_string();
    out.push(":");
    out.push(current);
    out
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let (prefix, command) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("runyard-exec: {e}");
            return ExitCode::from(2);
        }
    };
    let path = prepend(&prefix, std::env::var_os("PATH").as_deref());
    // `exec` only returns on failure; the command is looked up on the new PATH.
    let err = std::process::Command::new(&command[0])
        .args(&command[1..])
        .env("PATH", &path)
        .exec();
    eprintln!(
        "runyard-exec: cannot run {:?}: {err} (PATH={})",
        command[0],
        path.to_string_lossy()
    );
    // The shell's codes: 127 not found, 126 found but not executable.
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_prefix_goes_before_the_images_path_once() {
        let go = "/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        let p = OsStr::new("/opt/runyard/binaries");
        assert_eq!(
            prepend(p, Some(OsStr::new(go))),
            OsString::from(format!("/opt/runyard/binaries:{go}"))
        );
        let once = prepend(p, Some(OsStr::new(go)));
        assert_eq!(prepend(p, Some(&once)), once);
        assert_eq!(
            prepend(p, None),
            OsString::from(format!("/opt/runyard/binaries:{DEFAULT_PATH}"))
        );
        // A directory that merely starts like the prefix is not the prefix.
        assert_eq!(
            prepend(p, Some(OsStr::new("/opt/runyard/binaries2:/bin"))),
            OsString::from("/opt/runyard/binaries:/opt/runyard/binaries2:/bin")
        );
    }

    #[test]
    fn arguments_are_strict() {
        let args = os(&["--path-prefix=/a:/b", "--", "go", "test"]);
        let (prefix, command) = parse(&args).expect("parse");
        assert_eq!(prefix, OsString::from("/a:/b"));
        assert_eq!(command, os(&["go", "test"]).as_slice());
        for bad in [
            os(&["go", "test"]),
            os(&["--path-prefix=/a", "go"]),
            os(&["--path-prefix=/a", "--"]),
            os(&[]),
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
    }
}
