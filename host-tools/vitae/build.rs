//! Tells the integration tests whether the shared reference fixtures are there.
//!
//! They live beside the checkout (`../shared/fixtures`); a user's clone does not have them, so
//! the tests that read them are ignored there (reported as `ignored`, with the reason) instead of
//! failing. `VITAE_REQUIRE_FIXTURES=1` (CI) turns their absence into a build error.

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(vitae_fixtures)");
    println!("cargo::rerun-if-env-changed=VITAE_REQUIRE_FIXTURES");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dir = manifest.join("../../../shared/fixtures");
    let present = dir.join("mcu_a/model.pth").is_file() && dir.join("vitae_t/model.pth").is_file();
    if present {
        println!("cargo::rerun-if-changed={}", dir.display());
        println!("cargo::rustc-cfg=vitae_fixtures");
    } else if std::env::var("VITAE_REQUIRE_FIXTURES").is_ok_and(|v| v == "1") {
        panic!(
            "VITAE_REQUIRE_FIXTURES=1 but the reference fixtures are not at {}",
            dir.display()
        );
    } else {
        // Watch only files that exist: cargo treats a missing watched path as changed, so watching
        // the absent folder would rebuild this crate on every cargo call in a user's clone.
        // Fixtures added later are seen after `touch host-tools/vitae/build.rs` (or when
        // VITAE_REQUIRE_FIXTURES changes).
        println!("cargo::rerun-if-changed=build.rs");
    }
}
