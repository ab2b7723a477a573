//! keel-core stays pure by construction: nothing in its dependency tree can make a
//! system call for it. This fails the moment rustix, nix or libc (or a crate that
//! pulls one in) becomes a normal dependency of the core, directly or not.

use std::process::Command;

/// Crates through which the core could reach the kernel, and the wire types the
/// core must not take for its own.
const FORBIDDEN: &[&str] = &["rustix", "nix", "libc", "linux-raw-sys", "keel-proto"];

#[test]
fn the_core_depends_on_nothing_that_makes_system_calls() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "keel-core",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--offline", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("cargo tree runs");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(crates.first(), Some(&"keel-core"), "{tree}");
    assert!(crates.contains(&"serde"), "an incomplete tree: {tree}");
    let found: Vec<&&str> = crates.iter().filter(|c| FORBIDDEN.contains(c)).collect();
    assert!(found.is_empty(), "keel-core depends on {found:?}:\n{tree}");
}
