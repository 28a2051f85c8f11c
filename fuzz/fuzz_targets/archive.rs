//! (d) The launcher's source extraction: a tar stream (gzip-compressed when
//! the first byte is odd) → `launcher::init::unpack` into an empty directory.
//!
//! Invariants: no panic; nothing is created outside the target directory; no
//! link exists inside it; on success at most `max_entries` files and
//! `max_bytes` bytes were written.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runyard::launcher::init::{unpack, ExtractLimits, InitError};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const LIMITS: ExtractLimits = ExtractLimits {
    max_bytes: 64 * 1024,
    max_entries: 32,
};

/// `<tmp>/outer/{into,sibling}`, on tmpfs where there is one.
fn base() -> &'static PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let root = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let base = root.join(format!("runyard-fuzz-archive-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("outer/sibling")).expect("base");
        base
    })
}

fn walk(dir: &Path, files: &mut u64, bytes: &mut u64) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let meta = std::fs::symlink_metadata(entry.path()).expect("meta");
        assert!(
            !meta.file_type().is_symlink(),
            "a link was created: {:?}",
            entry.path()
        );
        if meta.is_dir() {
            walk(&entry.path(), files, bytes);
        } else {
            assert!(meta.is_file(), "not a file: {:?}", entry.path());
            *files += 1;
            *bytes += meta.len();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let outer = base().join("outer");
    let into = outer.join("into");
    let _ = std::fs::remove_dir_all(&into);
    std::fs::create_dir(&into).expect("into");
    let result = if flags & 1 == 1 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(rest).expect("gzip");
        let compressed = gz.finish().expect("gzip");
        unpack(
            || {
                Ok::<_, InitError>(flate2::read::GzDecoder::new(Cursor::new(
                    compressed.as_slice(),
                )))
            },
            &into,
            &LIMITS,
        )
    } else {
        unpack(|| Ok::<_, InitError>(Cursor::new(rest)), &into, &LIMITS)
    };
    let mut names: Vec<_> = std::fs::read_dir(&outer)
        .expect("outer")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["into", "sibling"],
        "something was created beside the target"
    );
    assert_eq!(
        std::fs::read_dir(outer.join("sibling"))
            .expect("sibling")
            .count(),
        0,
        "something was created in a sibling"
    );
    let (mut files, mut bytes) = (0, 0);
    walk(&into, &mut files, &mut bytes);
    if result.is_ok() {
        assert!(files <= LIMITS.max_entries, "{files} files");
        assert!(bytes <= LIMITS.max_bytes, "{bytes} bytes");
    }
});
