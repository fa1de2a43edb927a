//! Shared by the test binaries that run the examples as subprocesses (`tests/example`,
//! `tests/process`, `tests/fireflies`, `tests/monday`, `tests/gdrive`), included with
//! `#[path]`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The examples (`sync`, and `tasks` with the `monday` feature), built once for this test
/// binary with every feature it was built with, in the same target directory and profile
/// (cargo reports where the binaries are). One feature set for every test binary: a build with
/// other features would compile the crate and its dependencies again.
pub(crate) fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let features: Vec<&str> = [
                ("sqlite", cfg!(feature = "sqlite")),
                ("postgres", cfg!(feature = "postgres")),
                ("hubspot", cfg!(feature = "hubspot")),
                ("gong", cfg!(feature = "gong")),
                ("fireflies", cfg!(feature = "fireflies")),
                ("salesforce", cfg!(feature = "salesforce")),
                ("monday", cfg!(feature = "monday")),
                ("google-drive", cfg!(feature = "google-drive")),
                ("simulator", cfg!(feature = "simulator")),
            ]
            .into_iter()
            .filter_map(|(name, on)| on.then_some(name))
            .collect();
            let exe = std::env::current_exe().unwrap();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
                "build",
                "--example",
                "sync",
                "--message-format=json",
            ]);
            if cfg!(feature = "monday") {
                cmd.args(["--example", "tasks"]);
            }
            cmd.args(["--no-default-features", "--features", &features.join(",")]);
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
            assert!(out.status.success(), "building the examples failed");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|m| m["reason"] == "compiler-artifact")
                .filter_map(|m| {
                    let name = m["target"]["name"].as_str()?.to_owned();
                    let exe = m["executable"].as_str()?;
                    Some((name, PathBuf::from(exe)))
                })
                .collect()
        })
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("cargo reports no executable for the {name} example"))
}

/// The `sync` example (see [`example`]).
pub(crate) fn sync_example() -> &'static Path {
    static SYNC: OnceLock<PathBuf> = OnceLock::new();
    SYNC.get_or_init(|| example("sync"))
}
