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
//! signals, the command's own exit code. Only the standard library (and
//! `libc` for signals), so it is small (copied into every run pod that needs
//! it) and static in the image.
//!
//! With `--until=FILE` it supervises instead of exec-ing: on clusters without
//! native sidecars the webhook runs each pool sidecar's command as
//!
//! ```text
//! /opt/runyard/binaries/.runyard-exec --until=/opt/runyard/workspace/.runyard/workers-done -- COMMAND [ARGS...]
//! ```
//!
//! It starts the command as its child, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT
//! to it, and when FILE appears (the launcher writes it once the run's
//! workers have exited) stops it (SIGTERM, SIGKILL after a grace period) and
//! exits 0, so the sidecar's container ends and the pod (and its Job) can
//! complete. A command that ends by itself first ends the supervisor with its
//! own exit code.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// PATH when the process has none (what container runtimes default to).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PREFIX_ARG: &str = "--path-prefix=";
const UNTIL_ARG: &str = "--until=";
const USAGE: &str =
    "usage: runyard-exec [--path-prefix=DIR[:DIR...]] [--until=FILE] -- COMMAND [ARGS...]";
/// How long a supervised command gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the supervisor looks for the file.
const POLL: Duration = Duration::from_millis(500);

/// What to do: the PATH prefix (exec mode), the file that ends a supervised
/// command, and the command with its arguments.
#[derive(Debug, PartialEq)]
struct Opts<'a> {
    prefix: Option<OsString>,
    until: Option<PathBuf>,
    command: &'a [OsString],
}

fn parse(args: &[OsString]) -> Result<Opts<'_>, String> {
    let (mut prefix, mut until) = (None, None);
    let mut i = 0;
    loop {
        let Some(arg) = args.get(i) else {
            return Err(format!("missing -- before the command\n{USAGE}"));
        };
        let bytes = arg.as_bytes();
        if bytes == b"--" {
            break;
        } else if let Some(p) = bytes.strip_prefix(PREFIX_ARG.as_bytes()) {
            prefix = Some(OsStr::from_bytes(p).to_os_string());
        } else if let Some(f) = bytes
            .strip_prefix(UNTIL_ARG.as_bytes())
            .filter(|f| !f.is_empty())
        {
            until = Some(PathBuf::from(OsStr::from_bytes(f)));
        } else {
            return Err(format!("unknown argument {arg:?}\n{USAGE}"));
        }
        i += 1;
    }
    if prefix.is_none() && until.is_none() {
        return Err(format!(
            "missing {PREFIX_ARG}DIRS or {UNTIL_ARG}FILE\n{USAGE}"
        ));
    }
    let command = &args[i + 1..];
    if command.is_empty() {
        return Err(format!("no command to run\n{USAGE}"));
    }
    Ok(Opts {
        prefix,
        until,
        command,
    })
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

/// The shell's codes for a command that cannot start: 127 not found, 126
/// found but not executable.
fn cannot_run(command: &OsStr, err: &std::io::Error, path: &OsStr) -> ExitCode {
    eprintln!(
        "runyard-exec: cannot run {command:?}: {err} (PATH={})",
        path.to_string_lossy()
    );
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

/// The signals a supervisor forwards to its command.
#[cfg(target_os = "linux")]
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

#[cfg(target_os = "linux")]
fn forwarded_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks the forwarded signals in this process (they are collected with
/// `sigtimedwait` instead), and unblocks them in `cmd`'s child.
#[cfg(target_os = "linux")]
fn hold_signals(cmd: &mut Command) {
    let set = forwarded_set();
    // SAFETY: sigprocmask on this single-threaded process's own mask.
    unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// Waits up to `wait` for a forwarded signal; returns it.
#[cfg(target_os = "linux")]
fn next_signal(wait: Duration) -> Option<libc::c_int> {
    let set = forwarded_set();
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a valid set and timeout; no siginfo requested.
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

#[cfg(target_os = "linux")]
fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

#[cfg(not(target_os = "linux"))]
fn hold_signals(_: &mut Command) {}

#[cfg(not(target_os = "linux"))]
fn next_signal(wait: Duration) -> Option<i32> {
    std::thread::sleep(wait);
    None
}

#[cfg(not(target_os = "linux"))]
fn signal(_: u32, _: i32) {}

/// The exit code of a command that ended by itself.
fn code_of(status: std::process::ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c.clamp(0, 255) as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        _ => ExitCode::FAILURE,
    }
}

/// Runs `cmd` until it ends (its own exit code) or `until` appears (stopped,
/// exit 0).
fn supervise(mut cmd: Command, program: &OsStr, until: &Path, path: &OsStr) -> ExitCode {
    hold_signals(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return cannot_run(program, &e, path),
    };
    let pid = child.id();
    let mut stopping: Option<Instant> = None;
    loop {
        if let Some(sig) = next_signal(POLL) {
            signal(pid, sig);
        }
        match child.try_wait() {
            Ok(Some(_)) if stopping.is_some() => return ExitCode::SUCCESS,
            Ok(Some(status)) => return code_of(status),
            Ok(None) => {}
            Err(e) => {
                eprintln!("runyard-exec: waiting for {program:?}: {e}");
                return ExitCode::FAILURE;
            }
        }
        match stopping {
            None if until.exists() => {
                eprintln!(
                    "runyard-exec: {} exists: the run's workers are done; stopping {program:?}",
                    until.display()
                );
                #[cfg(target_os = "linux")]
                signal(pid, libc::SIGTERM);
                #[cfg(not(target_os = "linux"))]
                let _ = child.kill();
                stopping = Some(Instant::now());
            }
            Some(since) if since.elapsed() > STOP_GRACE => {
                let _ = child.kill();
            }
            _ => {}
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let opts = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("runyard-exec: {e}");
            return ExitCode::from(2);
        }
    };
    let program = &opts.command[0];
    let mut cmd = Command::new(program);
    cmd.args(&opts.command[1..]);
    let current = std::env::var_os("PATH");
    let path = match &opts.prefix {
        Some(prefix) => {
            let path = prepend(prefix, current.as_deref());
            cmd.env("PATH", &path);
            path
        }
        None => current.unwrap_or_default(),
    };
    if let Some(until) = &opts.until {
        return supervise(cmd, program, until, &path);
    }
    // `exec` only returns on failure; the command is looked up on the new PATH.
    let err = cmd.exec();
    cannot_run(program, &err, &path)
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
        let opts = parse(&args).expect("parse");
        assert_eq!(opts.prefix, Some(OsString::from("/a:/b")));
        assert_eq!(opts.until, None);
        assert_eq!(opts.command, os(&["go", "test"]).as_slice());
        let args = os(&["--until=/w/done", "--", "redis-server", "--save", ""]);
        let opts = parse(&args).expect("parse");
        assert_eq!(
            (opts.prefix, opts.until),
            (None, Some(PathBuf::from("/w/done")))
        );
        assert_eq!(opts.command, os(&["redis-server", "--save", ""]).as_slice());
        for bad in [
            os(&["go", "test"]),
            os(&["--path-prefix=/a", "go"]),
            os(&["--path-prefix=/a", "--"]),
            os(&["--until=", "--", "x"]),
            os(&["--", "x"]),
            os(&["--verbose", "--", "x"]),
            os(&[]),
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
    }
}
