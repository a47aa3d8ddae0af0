"""Shared setup of the vitae_edge tests.

The committed digit classifier (host-tools/train/digits) needs nothing else; the shared reference
fixtures (../shared/fixtures beside the checkout) are skipped where absent unless
VITAE_REQUIRE_FIXTURES=1. Comparisons with the command line use the `vitae` binary named by
VITAE_BIN (`cargo xtask test` builds and sets it), else target/release/vitae of this checkout;
without one those tests are skipped (failed under VITAE_REQUIRE_FIXTURES=1).
"""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DIGITS = REPO / "host-tools" / "train" / "digits"
FIXTURES = REPO.parent / "shared" / "fixtures"
REQUIRE = os.environ.get("VITAE_REQUIRE_FIXTURES") == "1"


def _missing(what: str):
    if REQUIRE:
        pytest.fail(f"VITAE_REQUIRE_FIXTURES=1 but {what}")
    pytest.skip(what)


@pytest.fixture(scope="session")
def vitae_bin() -> Path:
    named = os.environ.get("VITAE_BIN")
    path = Path(named) if named else REPO / "target" / "release" / "vitae"
    if not path.is_file():
        if named:
            pytest.fail(f"VITAE_BIN={named} is not a file")
        _missing(
            f"no vitae binary at {path} (build it with `cargo build --release -p vitae` "
            "or set VITAE_BIN)"
        )
    return path


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not (FIXTURES / "mcu_a" / "model.pth").is_file():
        _missing(f"the reference fixtures are not at {FIXTURES}")
    return FIXTURES


class Cli:
    """Runs `vitae` and returns (exit status, stdout, stderr)."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, *args, ok: bool = True):
        done = subprocess.run(
            [str(self.path), *map(str, args)], capture_output=True, text=True, check=False
        )
        if ok and done.returncode != 0:
            raise AssertionError(f"vitae {' '.join(map(str, args))} failed:\n{done.stderr}")
        return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="session")
def cli(vitae_bin) -> Cli:
    return Cli(vitae_bin)
