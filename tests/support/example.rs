//! Shared by the test binaries that run the `sync` example as a subprocess
//! (`tests/example`, `tests/process`), included with `#[path]`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The `sync` example, built once for this test binary with the features it was built
/// with, in the same target directory and profile (cargo reports where the binary is).
pub(crate) fn sync_example() -> &'static Path {
    static EXAMPLE: OnceLock<PathBuf> = OnceLock::new();
    EXAMPLE.get_or_init(|| {
        let features: Vec<&str> = [
            ("sqlite", cfg!(feature = "sqlite")),
            ("postgres", cfg!(feature = "postgres")),
            ("hubspot", cfg!(feature = "hubspot")),
            ("gong", cfg!(feature = "gong")),
            ("google-drive", cfg!(feature = "google-drive")),
            ("simulator", cfg!(feature = "simulator")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        let exe = std::env::current_exe().unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--example", "sync", "--message-format=json"])
            .args(["--no-default-features", "--features", &features.join(",")]);
        // The target directory is the ancestor of this binary that cargo tagged as one.
        if let Some(target) = exe
            .ancestors()
            .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        {
            cmd.arg("--target-dir").arg(target);
        }
        // What cargo set for this test process describes this package, not the build: a
        // dependency's build script that watches one of them would be rebuilt for nothing.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&key.as_ref())
            {
                cmd.env_remove(key.as_ref());
            }
        }
        if exe.components().any(|c| c.as_os_str() == "release") {
            cmd.arg("--release");
        }
        let out = cmd.stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "building the sync example failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "sync")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reports the sync example's executable")
    })
}
