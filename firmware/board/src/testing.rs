//! A minimal on-target test harness: many tests in one boot, each reported by name.
//!
//! Tests return `Result<(), Failure>` instead of panicking, so one failing test does not stop
//! the others. The protocol lines (`TEST <name>`, `PASS <name>`, `FAIL <name> ...`,
//! `DONE passed=<n> failed=<n>`) are read by `cargo xtask test` from the decoded defmt log; a
//! panic or fault ends the run, and the host reports the test that was running as failed.

/// Why a test failed; the details were already logged where the check failed.
#[derive(Debug, Clone, Copy)]
pub struct Failure {
    /// Source file of the failed check.
    pub file: &'static str,
    /// Line of the failed check.
    pub line: u32,
}

/// A test's outcome.
pub type TestResult = Result<(), Failure>;

/// One named test.
#[derive(Clone, Copy)]
pub struct Test {
    /// Name reported to the host.
    pub name: &'static str,
    /// The test body.
    pub run: fn() -> TestResult,
}

/// Runs every test, logs the protocol lines and returns the number of failures.
pub fn run_all(tests: &[Test]) -> usize {
    let mut failed = 0;
    for t in tests {
        defmt::println!("TEST {=str}", t.name);
        match (t.run)() {
            Ok(()) => defmt::println!("PASS {=str}", t.name),
            Err(f) => {
                failed += 1;
                defmt::println!("FAIL {=str} at {=str}:{=u32}", t.name, f.file, f.line);
            }
        }
    }
    defmt::println!(
        "DONE passed={=usize} failed={=usize}",
        tests.len() - failed,
        failed
    );
    failed
}

/// Fails the test unless both sides are equal, logging both values.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            defmt::println!(
                "check_eq failed: {} != {} ({=str} vs {=str})",
                l,
                r,
                stringify!($left),
                stringify!($right)
            );
            return Err($crate::testing::Failure {
                file: file!(),
                line: line!(),
            });
        }
    }};
}

/// Fails the test unless the condition holds.
#[macro_export]
macro_rules! check {
    ($cond:expr $(,)?) => {{
        if !$cond {
            defmt::println!("check failed: {=str}", stringify!($cond));
            return Err($crate::testing::Failure {
                file: file!(),
                line: line!(),
            });
        }
    }};
}

/// Builds a `&[Test]` from test function paths, naming each by its path.
#[macro_export]
macro_rules! tests {
    ($($f:path),* $(,)?) => {
        &[$($crate::testing::Test { name: stringify!($f), run: $f }),*]
    };
}
