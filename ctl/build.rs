//! initctl is linked static and non-PIE, as keel-init is: a status query is mostly
//! process start, and the dynamic loader (mapping libc and libgcc_s, binding their
//! symbols) cost as much again as the rest of the command; a static PIE still
//! relocates itself (a third of what remained). A short-lived client that is not
//! setuid loses little without ASLR.
//!
//! rustc links static only under `-C target-feature=+crt-static`, which cargo sets
//! for whole builds (proc macros, the supervisor), never for one binary. So this
//! asks the linker for a static binary itself and answers the libraries std names
//! (`-lgcc_s`, `-lm`, `-lc`, which rustc passes as shared) with linker scripts that
//! stand in for them and name glibc's and gcc's static archives, as crt-static
//! would. The other libraries std names (util, rt, pthread, dl) are static
//! archives only since glibc 2.34. Where an archive is missing (no libc6-dev's
//! libc.a), initctl is linked dynamically, with a warning.
//!
//! keel-shutdown (`shutdown/`) uses this same script for the same static link;
//! it applies to every binary of the package that names it.
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shared library std asks for, and the static archives that replace it.
const STAND_INS: &[(&str, &[&str])] = &[
    ("libgcc_s.so", &["libgcc_eh.a", "libgcc.a"]),
    ("libm.so", &["libm.a"]),
    ("libc.so", &["libc.a", "libgcc.a", "libgcc_eh.a"]),
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("gnu") {
        return;
    }
    let dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("static-libs");
    match write_stand_ins(&dir) {
        Ok(()) => {
            println!("cargo:rustc-link-arg-bins=-static");
            println!("cargo:rustc-link-arg-bins=-no-pie");
            println!("cargo:rustc-link-arg-bins=-L{}", dir.display());
        }
        Err(why) => println!(
            "cargo:warning={} is linked dynamically: {why}",
            std::env::var("CARGO_PKG_NAME").unwrap_or_default()
        ),
    }
}

fn write_stand_ins(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (shared, archives) in STAND_INS {
        let paths = archives
            .iter()
            .map(|a| archive(a))
            .collect::<Result<Vec<_>, _>>()?;
        let script = format!("GROUP({})\n", paths.join(" "));
        let path = dir.join(shared);
        std::fs::write(&path, script).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Where the C compiler finds the static archive `name`.
fn archive(name: &str) -> Result<String, String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .arg(format!("-print-file-name={name}"))
        .output()
        .map_err(|e| format!("{cc}: {e}"))?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // Not found, the compiler echoes the bare name.
    if !out.status.success() || !Path::new(&path).is_absolute() {
        return Err(format!("{cc} finds no {name}"));
    }
    Ok(path)
}
