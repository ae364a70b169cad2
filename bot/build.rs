//! Links the `runbot` binary with packed relative relocations (`-z pack-relative-relocs`,
//! DT_RELR) where the toolchain's glibc supports them (2.36+, e.g. Debian bookworm, the
//! Dockerfile's base): the relocation table the loader reads at start-up shrinks from ~1.4 MB
//! to a few kB, and with it the memory the process holds from its first second.
//!
//! Release builds for x86_64 Linux (rust-lld, the toolchain's default linker there) also lay out
//! the functions a `runbot serve` runs — start-up and the Slack request path — next to each
//! other, in the order of `symbol-order.txt` (made by `scripts/symbol-order.sh`). The kernel
//! maps a binary's pages 64 KiB at a time around each first touch; scattered over 16 MB of code,
//! 2.5 MB of functions run at start-up kept ~10 MB of it resident. A stale list only loses
//! effect (names it no longer finds are skipped). `RUNBOT_SYMBOL_ORDER=0` turns it off.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let native = var("HOST") == var("TARGET");
    if native && var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" && glibc_has_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=symbol-order.txt");
    println!("cargo:rerun-if-env-changed=RUNBOT_SYMBOL_ORDER");
    let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("symbol-order.txt");
    if var("PROFILE") == "release" && var("TARGET") == "x86_64-unknown-linux-gnu" && var("RUNBOT_SYMBOL_ORDER") != "0" && order.is_file() {
        // The linker reads a copy in OUT_DIR, not the checkout's file: cargo reuses this
        // script's output for another checkout of the same workspace sharing the target
        // directory (a worktree, a CI clone), and a path into a checkout that was removed
        // since failed the link.
        let copy = std::path::Path::new(&var("OUT_DIR")).join("symbol-order.txt");
        if std::fs::copy(&order, &copy).is_ok() {
            println!("cargo:rustc-link-arg-bin=runbot=-Wl,--symbol-ordering-file={}", copy.display());
            println!("cargo:rustc-link-arg-bin=runbot=-Wl,--no-warn-symbol-ordering");
        }
    }
}

/// `getconf GNU_LIBC_VERSION` prints e.g. `glibc 2.36`; DT_RELR arrived in 2.36.
fn glibc_has_relr() -> bool {
    let Ok(out) = std::process::Command::new("getconf").arg("GNU_LIBC_VERSION").output() else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else { return false };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}
