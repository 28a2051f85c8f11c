//! The Dockerfile builds a static musl binary for the platform it is asked
//! for (`--platform linux/amd64|linux/arm64`, BuildKit's TARGETARCH): its
//! architecture mapping is run here with `sh` (no Docker daemon needed);
//! hadolint checks the rest in CI.

const DOCKERFILE: &str = include_str!("../Dockerfile");

/// The `case ... esac` of the build stage, as one shell command.
fn target_mapping() -> String {
    let start = DOCKERFILE
        .find("case \"$arch\"")
        .expect("a case on the architecture");
    let end = start + DOCKERFILE[start..].find("esac").expect("esac") + "esac".len();
    DOCKERFILE[start..end]
        .lines()
        .map(|l| l.trim().trim_end_matches('\\').trim())
        .collect::<Vec<_>>()
        .join("\n")
}

fn target_for(arch: &str) -> Result<String, String> {
    let script = format!("arch={arch}\n{}\necho \"$target\"", target_mapping());
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn each_platform_gets_its_musl_target() {
    assert_eq!(
        target_for("amd64").as_deref(),
        Ok("x86_64-unknown-linux-musl")
    );
    assert_eq!(
        target_for("arm64").as_deref(),
        Ok("aarch64-unknown-linux-musl")
    );
    // The legacy builder leaves TARGETARCH empty: `uname -m` names it.
    assert_eq!(
        target_for("x86_64").as_deref(),
        Ok("x86_64-unknown-linux-musl")
    );
    assert_eq!(
        target_for("aarch64").as_deref(),
        Ok("aarch64-unknown-linux-musl")
    );
    let err = target_for("s390x").expect_err("unsupported");
    assert!(err.contains("linux/amd64 or linux/arm64"), "{err}");
}

#[test]
fn the_build_uses_the_target_and_the_lock_file() {
    assert!(DOCKERFILE.contains("ARG TARGETARCH"));
    assert!(DOCKERFILE.contains("${TARGETARCH:-$(uname -m)}"));
    assert!(DOCKERFILE.contains(
        "cargo build --release --locked --bin runyard --bin runyard-exec --target \"$target\""
    ));
    assert!(DOCKERFILE.contains("USER 1983:1983"));
    assert!(DOCKERFILE.contains("FROM scratch"));
}

/// Every binary of the package is in the image, side by side in
/// /usr/local/bin: `launcher init` finds the exec shim next to itself.
#[test]
fn the_image_ships_every_binary_next_to_runyard() {
    let manifest = include_str!("../Cargo.toml");
    let bins: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|section| {
            let line = section
                .lines()
                .find(|l| l.trim_start().starts_with("name"))?;
            line.split('"').nth(1)
        })
        .collect();
    assert_eq!(bins, ["runyard", runyard::vocab::EXEC_SHIM_BINARY]);
    for bin in bins {
        assert!(
            DOCKERFILE.contains(&format!("--bin {bin} ")),
            "{bin} is built"
        );
        assert!(
            DOCKERFILE.contains(&format!(
                "install -D -m 0755 \"target/$target/release/{bin}\" /out/usr/local/bin/{bin}"
            )),
            "{bin} is installed in /usr/local/bin"
        );
    }
}
