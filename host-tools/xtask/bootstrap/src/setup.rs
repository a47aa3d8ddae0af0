//! `cargo xtask setup`: make this machine able to build and run the firmware, and prove it.
//!
//! It checks capabilities, not package names: each tool the build needs is run (`rustc -V`,
//! `qemu-system-arm -machine help`, the linker looked up the way rustc looks it up, …). What is
//! missing is installed with apt when possible (root or passwordless sudo), then checked again.
//! Then the proof: a minimal program (`firmware/toolcheck`) is compiled and linked for each
//! Cortex-M target family and booted on every QEMU board, with the instruction-count plugin
//! loaded. When that passes, a stamp keyed on the tools' versions (`target/xtask-setup.stamp`)
//! remembers it, so the next run only re-reads the versions (well under a second) and stops.
//!
//! When something is still missing it names the tool, the package and the command that fixes it,
//! and fails before any long build starts (`cargo xtask` runs this before building the host
//! tools).

use crate::boards::{self, Board, Runner};
use crate::toolchain::{self, ArmToolchain};
use crate::{host_target_dir, project_root, shown};
use anyhow::{Context, Result, bail};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the instruction-count plugin is built.
pub fn icount_plugin_path() -> PathBuf {
    host_target_dir().join("qemu-icount").join("libicount.so")
}

/// Shared target dir for every ARM build, so `core` is built once per target+CPU (the tool check
/// builds into it too, so the `core` it compiles is the one the firmware then reuses).
pub fn arm_target_dir() -> PathBuf {
    host_target_dir().join("arm")
}

fn stamp_path() -> PathBuf {
    host_target_dir().join("xtask-setup.stamp")
}

/// How to get a missing capability.
#[derive(Debug, Clone)]
enum Fix {
    /// Debian packages that provide it.
    Packages(&'static [&'static str]),
    /// Something only the user can do.
    Hint(String),
}

/// A capability the build lacks: what, why it is missing, how to get it.
#[derive(Debug, Clone)]
struct Missing {
    what: String,
    why: String,
    fix: Fix,
}

impl Missing {
    /// One line: the tool, what is wrong, the package and the command that fixes it.
    fn line(&self) -> String {
        match &self.fix {
            Fix::Packages(p) => format!(
                "{} {}: install the Debian package{} {} (`sudo apt-get install --no-install-recommends {}`)",
                self.what,
                self.why,
                if p.len() > 1 { "s" } else { "" },
                p.join(", "),
                p.join(" ")
            ),
            Fix::Hint(h) => format!("{} {}: {h}", self.what, self.why),
        }
    }
}

/// The first line a command prints for `args`, or why it could not run.
fn first_line(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot be run ({e})"))?;
    if !out.status.success() {
        return Err(format!("fails ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// What is there, by running it: the versions found (for the stamp) and what is missing.
fn probe(tc: ArmToolchain) -> (Vec<String>, Vec<Missing>) {
    let mut found = vec![format!("arm toolchain: {tc:?}")];
    let mut missing = Vec::new();
    let mut check = |what: &str, result: Result<String, String>, fix: Fix| match result {
        Ok(version) => found.push(format!("{what}: {version}")),
        Err(why) => missing.push(Missing {
            what: what.to_string(),
            why,
            fix,
        }),
    };

    match tc {
        ArmToolchain::Debian => {
            let rust = first_line(toolchain::DEBIAN_RUSTC, &["-V"]).and_then(|r| {
                first_line(toolchain::DEBIAN_CARGO, &["-V"]).map(|c| format!("{r}; {c}"))
            });
            check(
                "Debian's rustc and cargo (they build `core` for Cortex-M)",
                rust,
                Fix::Packages(&["rustc-web", "cargo-web"]),
            );
            let src = if Path::new(toolchain::DEBIAN_LIBRARY_SRC).is_file() {
                Ok(toolchain::DEBIAN_LIBRARY_SRC.to_string())
            } else {
                Err(format!("is not there ({})", toolchain::DEBIAN_LIBRARY_SRC))
            };
            check(
                "the Rust library sources for -Zbuild-std",
                src,
                Fix::Packages(&["rust-web-src"]),
            );
            check(
                "Debian's clippy (lints the ARM builds of the library)",
                first_line(toolchain::DEBIAN_CLIPPY, &["--version"]),
                Fix::Packages(&["rust-web-clippy"]),
            );
        }
        ArmToolchain::Rustup => {
            let targets = if toolchain::rustup_has_thumb_targets() {
                Ok(toolchain::THUMB_TARGETS.join(" "))
            } else {
                Err("are not installed".to_string())
            };
            check(
                "rustup's thumb targets",
                targets,
                Fix::Hint(format!(
                    "run `rustup target add {}`",
                    toolchain::THUMB_TARGETS.join(" ")
                )),
            );
        }
    }

    // The linker, looked up the way rustc will: a path as given, else PATH and rustc's sysroot.
    let search_path = tc.search_path();
    let sysroot_tools = tc.sysroot_tool_dir();
    let mut seen = Vec::new();
    for target in toolchain::THUMB_TARGETS {
        let linker = tc.linker(target);
        if seen.contains(&linker.program) {
            continue;
        }
        seen.push(linker.program.clone());
        let what = format!(
            "the Cortex-M linker `{}` ({})",
            linker.program.display(),
            linker.origin
        );
        let result = match linker.resolve(&search_path, sysroot_tools.as_deref()) {
            Some(path) => Ok(file_identity(&path)),
            None if linker.program.components().count() > 1 => {
                Err("is not an executable file".to_string())
            }
            None => Err(format!(
                "is not on PATH{}",
                sysroot_tools
                    .as_deref()
                    .map(|d| format!(" nor in {}", d.display()))
                    .unwrap_or_default()
            )),
        };
        let fix = if linker.origin.starts_with("set by ") {
            let var = linker.origin.trim_start_matches("set by ");
            Fix::Hint(format!("unset {var} or point it at an existing linker"))
        } else if tc == ArmToolchain::Debian {
            // /usr/bin/rust-lld is a link to lld-22 shipped by rust-web-llvm, a Recommends of
            // rustc-web that `--no-install-recommends` skips.
            Fix::Packages(&["rust-web-llvm", "lld-22"])
        } else {
            Fix::Hint("it ships with rustup's rustc: `rustup component add rustc`".into())
        };
        check(&what, result, fix);
    }

    // The disassembler and symbolizer of the test's Helium floating-point review (vector_fp.rs)
    // and instruction-class check (insn_classes.rs); the symbol lister of `xtask qemu --profile`.
    for tool in ["llvm-objdump", "llvm-symbolizer", "llvm-nm"] {
        let found = tc
            .llvm_tool(tool)
            .map(|path| first_line(&path.to_string_lossy(), &["--version"]).unwrap_or_default())
            .map(|v| if v.is_empty() { tool.to_string() } else { v });
        let fix = match tc {
            ArmToolchain::Debian => Fix::Packages(&["llvm-22"]),
            ArmToolchain::Rustup => Fix::Hint("run `rustup component add llvm-tools`".into()),
        };
        check(
            &format!(
                "`{tool}` (reviews the Helium binaries' floating point in `cargo xtask test`)"
            ),
            found,
            fix,
        );
    }

    let qemu = first_line("qemu-system-arm", &["--version"]).and_then(|version| {
        let out = Command::new("qemu-system-arm")
            .args(["-machine", "help"])
            .output()
            .map_err(|e| format!("cannot be run ({e})"))?;
        let machines = String::from_utf8_lossy(&out.stdout).into_owned();
        let lacking: Vec<&str> = boards::qemu_boards()
            .filter_map(|b| match b.runner {
                Runner::Qemu { machine, .. } => Some(machine),
                Runner::Probe { .. } => None,
            })
            .filter(|m| {
                !machines
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(m))
            })
            .collect();
        if lacking.is_empty() {
            Ok(version)
        } else {
            Err(format!("lacks the machine(s) {}", lacking.join(", ")))
        }
    });
    check(
        "qemu-system-arm (runs the firmware on the mps2/mps3 boards)",
        qemu,
        Fix::Packages(&["qemu-system-arm"]),
    );

    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    check(
        &format!("the C compiler `{cc}` (builds the instruction-count plugin)"),
        first_line(&cc, &["--version"]),
        Fix::Packages(&["gcc"]),
    );
    (found, missing)
}

/// Path, size and modification time: changes when the file is replaced.
fn file_identity(path: &Path) -> String {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let meta = std::fs::metadata(&canonical).ok();
    let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{} -> {} ({size} bytes, mtime {mtime})",
        path.display(),
        canonical.display()
    )
}

/// A hash of the files the tool check and the plugin are made from.
fn sources_hash() -> String {
    let root = project_root();
    let mut h = DefaultHasher::new();
    for f in [
        "firmware/toolcheck/src/main.rs",
        "firmware/toolcheck/build.rs",
        "firmware/toolcheck/toolcheck.x",
        "firmware/toolcheck/Cargo.toml",
        "host-tools/qemu-icount/icount.c",
        "host-tools/qemu-icount/qemu_plugin_api_v1.h",
        "host-tools/qemu-icount/thumb_classes.h",
    ] {
        f.hash(&mut h);
        std::fs::read(root.join(f)).unwrap_or_default().hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// Checks the machine, installs what is missing, proves the toolchain once per tool versions.
/// `quiet` prints nothing when everything was already in place.
pub fn setup(quiet: bool) -> Result<()> {
    let started = Instant::now();
    let tc = toolchain::planned()?;
    let (mut found, mut missing) = probe(tc);
    if !missing.is_empty() {
        let mut packages: Vec<&str> = Vec::new();
        for m in &missing {
            if let Fix::Packages(p) = &m.fix {
                for package in p.iter() {
                    if !packages.contains(package) {
                        packages.push(package);
                    }
                }
            }
        }
        if !packages.is_empty() {
            println!("setup: missing on this machine:");
            for m in &missing {
                println!("  - {} {}", m.what, m.why);
            }
            install_packages(&packages)?;
            (found, missing) = probe(tc);
        }
    }
    if let [only] = missing.as_slice() {
        bail!("{}", only.line());
    } else if !missing.is_empty() {
        for m in &missing {
            eprintln!("setup: {}", m.line());
        }
        bail!(
            "{} tool(s) the build needs are missing (listed above)",
            missing.len()
        );
    }

    let plugin_rebuilt = build_icount_plugin()?;
    found.push(format!("sources: {}", sources_hash()));
    let key = found.join("\n") + "\n";
    if !plugin_rebuilt && std::fs::read_to_string(stamp_path()).is_ok_and(|s| s == key) {
        if !quiet {
            println!(
                "setup: everything is in place ({}, QEMU, icount plugin), checked before for these \
                 tool versions ({}); nothing to do",
                tc.describe(),
                stamp_path().display()
            );
        }
        return Ok(());
    }

    println!(
        "setup: proving the toolchain ({}): a minimal program linked for each Cortex-M target \
         family and booted on each QEMU board",
        tc.describe()
    );
    for (target, cpu, on) in families() {
        let elf = link_toolcheck(tc, target, cpu)?;
        for board in on {
            boot_toolcheck(board, &elf)?;
        }
    }
    std::fs::create_dir_all(host_target_dir())?;
    std::fs::write(stamp_path(), key)
        .with_context(|| format!("writing {}", stamp_path().display()))?;
    println!(
        "setup: the toolchain works (checked in {:.0} s; remembered in {})",
        started.elapsed().as_secs_f64(),
        stamp_path().display()
    );
    Ok(())
}

/// One entry per Rust target of the QEMU boards: the CPU to build for (the first board's) and
/// every QEMU board of that target to boot the result on.
fn families() -> Vec<(&'static str, &'static str, Vec<&'static Board>)> {
    let mut out: Vec<(&str, &str, Vec<&Board>)> = Vec::new();
    for b in boards::qemu_boards() {
        match out.iter_mut().find(|(t, _, _)| *t == b.target) {
            Some((_, _, on)) => on.push(b),
            None => out.push((b.target, b.cpu, vec![b])),
        }
    }
    out
}

/// Builds `firmware/toolcheck` for one target; returns the ELF. The compiler's output is shown
/// (the first time on the Debian toolchain this compiles `core`, about 40 s).
fn link_toolcheck(tc: ArmToolchain, target: &str, cpu: &str) -> Result<PathBuf> {
    println!("setup: linking firmware/toolcheck for {target} ({cpu})");
    let mut cmd = tc.cargo("build", target, cpu, &arm_target_dir());
    cmd.current_dir(project_root().join("firmware"))
        .args(["--release", "--package", "vitae-toolcheck"])
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    println!("  $ {}", shown(&cmd));
    let mut child = cmd.spawn().context("starting cargo for the tool check")?;
    let mut transcript = Vec::new();
    for line in BufReader::new(child.stderr.take().expect("stderr is piped")).lines() {
        let line = line.unwrap_or_default();
        eprintln!("    {line}");
        transcript.push(line);
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        let reason = transcript
            .iter()
            .find(|l| l.contains("linker `") && l.contains("not found"))
            .or_else(|| transcript.iter().find(|l| l.starts_with("error")))
            .map(|l| l.trim().to_string())
            .unwrap_or_else(|| format!("cargo exited with {status}"));
        bail!(
            "the toolchain cannot link a minimal program for {target}: {reason} (the full output is above)"
        );
    }
    Ok(arm_target_dir()
        .join(target)
        .join("release")
        .join("vitae-toolcheck"))
}

/// Boots the tool check on a QEMU board with the instruction-count plugin; it must print its
/// line, exit with 0 and have its marked region counted.
fn boot_toolcheck(board: &Board, elf: &Path) -> Result<()> {
    let Runner::Qemu { machine, cpu } = board.runner else {
        bail!("{} is not a QEMU board", board.name);
    };
    let log = host_target_dir().join(format!("xtask-setup-{}.log", board.name));
    let _ = std::fs::remove_file(&log);
    let mut cmd = Command::new("qemu-system-arm");
    cmd.args(["-machine", machine, "-cpu", cpu, "-nographic"])
        .args(["-monitor", "none", "-serial", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .arg("-kernel")
        .arg(elf)
        .arg("-plugin")
        .arg(format!("{},mode=tb", icount_plugin_path().display()))
        .args(["-d", "plugin", "-D"])
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", shown(&cmd)))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("qemu-system-arm -machine {machine} did not finish the tool check within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let counted = std::fs::read_to_string(&log).unwrap_or_default();
    let region = counted
        .lines()
        .find_map(|l| l.strip_prefix("icount: region=0 insns="))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok());
    // QEMU writes SYS_WRITE0 text to its stderr.
    if !status.success() || !format!("{stdout}{stderr}").contains("vitae-toolcheck: ok") {
        bail!(
            "the tool check did not run on qemu-system-arm -machine {machine} ({status}): {}",
            [stdout.trim(), stderr.trim()].join(" ").trim()
        );
    }
    let Some(instructions) = region.filter(|n| *n > 0) else {
        bail!(
            "the instruction-count plugin loaded in QEMU ({machine}) but counted no region (log: {})",
            log.display()
        );
    };
    println!(
        "setup: booted on {} ({}) under QEMU: ok, {instructions} instructions counted in its marked region",
        board.name, board.core
    );
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn sudo_works() -> bool {
    Command::new("sudo")
        .args(["-n", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Installs Debian packages with apt, showing its progress.
fn install_packages(packages: &[&str]) -> Result<()> {
    let command_line = format!(
        "sudo apt-get update && sudo apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    );
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!(
            "apt-get is not available on this machine: install the equivalents of {} by hand, or use \
             rustup with `rustup target add {}` and qemu-system-arm",
            packages.join(", "),
            toolchain::THUMB_TARGETS.join(" ")
        );
    }
    let prefix: Vec<&str> = if is_root() {
        vec![]
    } else if sudo_works() {
        vec!["sudo", "-n"]
    } else {
        bail!(
            "installing packages needs root. Run this once, then rerun the command:\n  {command_line}"
        );
    };
    let apt = |args: &[&str]| -> Command {
        let argv: Vec<&str> = prefix
            .iter()
            .copied()
            .chain(["apt-get"])
            .chain(args.iter().copied())
            .collect();
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    let started = Instant::now();
    println!(
        "setup: installing {} Debian package(s) with apt (about 2 minutes on a new machine): {}",
        packages.len(),
        packages.join(" ")
    );
    crate::run_checked(apt(&["update", "-q"]), "apt-get update")?;
    // Say what apt will take away before it does (e.g. Debian 12's qemu-system-arm 7.2 replaces
    // a newer qemu-utils from backports).
    let mut simulate = apt(&["install", "-s", "--no-install-recommends"]);
    simulate.args(packages);
    if let Ok(out) = simulate.output() {
        let removed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("Remv "))
            .map(str::to_string)
            .collect();
        if !removed.is_empty() {
            println!(
                "setup: note: to install these, apt removes {} (conflicting versions)",
                removed.join(", ")
            );
        }
    }
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(packages);
    crate::run_checked(install, "apt-get install")
        .with_context(|| format!("installing packages; by hand: {command_line}"))?;
    println!(
        "setup: packages installed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds the QEMU plugin with the system C compiler when it is missing or older than its source.
/// Returns whether it built.
fn build_icount_plugin() -> Result<bool> {
    let src_dir = project_root().join("host-tools").join("qemu-icount");
    let out = icount_plugin_path();
    let newest_src = ["icount.c", "qemu_plugin_api_v1.h", "thumb_classes.h"]
        .iter()
        .filter_map(|f| {
            std::fs::metadata(src_dir.join(f))
                .and_then(|m| m.modified())
                .ok()
        })
        .max()
        .context("host-tools/qemu-icount sources are missing")?;
    if let Ok(m) = std::fs::metadata(&out).and_then(|m| m.modified())
        && m >= newest_src
    {
        return Ok(false);
    }
    std::fs::create_dir_all(out.parent().expect("plugin path has a parent"))?;
    println!(
        "setup: building the QEMU instruction-count plugin -> {}",
        out.display()
    );
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.args([
        "-O2",
        "-Wall",
        "-Wextra",
        "-fvisibility=hidden",
        "-shared",
        "-fPIC",
        "-o",
    ])
    .arg(&out)
    .arg(src_dir.join("icount.c"));
    crate::run_checked(cmd, &format!("{cc} (building the icount plugin)"))?;
    Ok(true)
}
