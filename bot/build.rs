//! Links the `runbot` binary with packed relative relocations (`-z pack-relative-relocs`,
//! DT_RELR) where the toolchain's glibc supports them (2.36+, e.g. Debian bookworm, the
//! Dockerfile's base): the relocation table the loader reads at start-up shrinks from ~1.4 MB
//! to a few kB, and with it the memory the process holds from its first second.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let native = var("HOST") == var("TARGET");
    if native && var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" && glibc_has_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
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
