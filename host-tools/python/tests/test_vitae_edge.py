"""vitae_edge against the `vitae` command line: the same bytes, the same logits, the same errors."""

import threading

import numpy as np
import pytest

import vitae_edge
from conftest import DIGITS

CKPT = DIGITS / "model.pth"
KWARGS = DIGITS / "kwargs.json"


def images(n, seed=0, shape=(1, 32, 32)):
    """Seeded images in the digits model's normalized range [-1, 1]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(n, *shape)).astype(np.float32)


@pytest.fixture(scope="module")
def calib():
    return images(16, seed=1)


@pytest.fixture(scope="module")
def int8_blob(calib):
    return vitae_edge.quantize(CKPT, config=KWARGS, calib=calib, precision="int8")


def cli_error(stderr: str) -> str:
    """What `vitae` printed after `error: `, all lines."""
    assert stderr.startswith("error: "), stderr
    return stderr[len("error: ") :].rstrip("\n")


# ---- no CLI needed -------------------------------------------------------------------------


def test_error_type_is_a_value_error():
    assert issubclass(vitae_edge.VitaeError, ValueError)
    assert "vitae-t" in vitae_edge.PRESETS


def test_engine_runs_3d_and_batches_alike_whatever_the_threads(int8_blob):
    engine = vitae_edge.Engine(int8_blob, threads=1)
    assert (engine.input_dtype, engine.input_shape, engine.classes) == ("f32", (1, 32, 32), 10)
    x = images(5, seed=2)
    one_thread = engine.run(x)
    assert one_thread.dtype == np.float32 and one_thread.shape == (5, 10)
    assert np.isfinite(one_thread).all() and np.ptp(one_thread) > 0
    engine.threads = 2
    assert engine.threads == 2
    assert engine.run(x).tobytes() == one_thread.tobytes()
    assert engine.run(x[3]).tobytes() == one_thread[3:4].tobytes()
    # float64 is narrowed to float32, as for a float64 .npy.
    assert engine.run(x.astype(np.float64)).tobytes() == one_thread.tobytes()
    # A non-contiguous view gives the same logits as its copy.
    wide = np.repeat(x, 2, axis=3)[..., ::2]
    assert engine.run(wide).tobytes() == one_thread.tobytes()


def test_engine_from_several_threads_at_once(int8_blob):
    engine = vitae_edge.Engine(int8_blob)
    x = images(3, seed=3)
    want = engine.run(x).tobytes()
    got = [None] * 4

    def work(i):
        got[i] = engine.run(x).tobytes()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [want] * 4


def test_quantize_is_deterministic_and_int8_tracks_the_reference(calib, int8_blob):
    again = vitae_edge.quantize(str(CKPT), config=str(KWARGS), calib=calib)
    assert again == int8_blob
    x = images(8, seed=4)
    f32 = vitae_edge.Reference(CKPT, config=KWARGS).run(x)
    int8 = vitae_edge.Engine(int8_blob).run(x)
    assert f32.shape == int8.shape == (8, 10)
    # Calibrated on random images, the int8 model still ranks like the f32 one on most images.
    assert (f32.argmax(1) == int8.argmax(1)).mean() >= 0.5
    assert np.corrcoef(f32.ravel(), int8.ravel())[0, 1] > 0.9


def test_inspect_describes_the_blob(int8_blob):
    info = vitae_edge.inspect(int8_blob)
    assert info["precision"] == "int8"
    assert info["model"] == "model"  # the checkpoint's file stem
    assert info["flash_bytes"] == len(int8_blob)
    assert info["input_layout"].startswith("f32")
    assert info["ops"] == len(info["layers"]) > 0
    assert sum(layer["macs"] for layer in info["layers"]) == info["macs"]
    assert {"op", "name", "dtype", "input", "output", "weight_bytes", "arena_offset"} <= set(
        info["layers"][0]
    )


def test_u8_blob_takes_pixels(calib):
    blob = vitae_edge.quantize(CKPT, config=KWARGS, calib=calib, input="u8", mean=[0.5], std=[0.5])
    engine = vitae_edge.Engine(blob)
    assert (engine.input_dtype, engine.input_shape) == ("u8", (32, 32, 1))
    pixels = np.random.default_rng(5).integers(0, 256, size=(3, 32, 32, 1), dtype=np.uint8)
    logits = engine.run(pixels)
    assert logits.shape == (3, 10)
    assert engine.run(pixels[1]).tobytes() == logits[1:2].tobytes()
    with pytest.raises(vitae_edge.VitaeError, match=r"^x: the model takes u8 pixels"):
        engine.run(pixels.astype(np.float32))


def test_u8_from_an_array_needs_its_normalization(calib):
    with pytest.raises(vitae_edge.VitaeError, match="give mean and std"):
        vitae_edge.quantize(CKPT, config=KWARGS, calib=calib, input="u8")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "int2"}, "precision 'int2': expected one of int8, fp16, int4, int16-residual, mixed"),
        ({"precision": "int8", "flash_budget": 100000},
         "flash_budget applies to precision='mixed' only (this is precision='int8')"),
        ({"precision": "mixed", "max_logit_error": 0.0},
         "--max-logit-error 0: must be a number in (0, 1] (relative squared error of the logits)"),
        ({"calib_method": "best"}, "calib_method 'best': expected one of auto, minmax, percentile, mse"),
        ({"max_calib": 0}, "--max-calib 0: must be at least 1"),
    ],
)
def test_bad_settings(calib, kwargs, message):
    with pytest.raises(vitae_edge.VitaeError) as e:
        vitae_edge.quantize(CKPT, config=KWARGS, calib=calib, **kwargs)
    assert str(e.value) == message


def test_bad_arrays(int8_blob, calib):
    engine = vitae_edge.Engine(int8_blob)
    with pytest.raises(vitae_edge.VitaeError) as e:
        engine.run(np.zeros((2, 3, 32, 32), np.float32))
    assert str(e.value) == "x: input shape [2, 3, 32, 32] does not fit the model: expected (N, 1, 32, 32)"
    with pytest.raises(vitae_edge.VitaeError, match=r"^x: the batch is empty \(N = 0\)$"):
        engine.run(np.zeros((0, 1, 32, 32), np.float32))
    bad = images(2)
    bad[1, 0, 3, 4] = np.nan
    with pytest.raises(vitae_edge.VitaeError) as e:
        engine.run(bad)
    assert str(e.value) == f"x: value {1024 + 3 * 32 + 4} is NaN (not finite)"
    with pytest.raises(vitae_edge.VitaeError, match=r"^x: dtype is int64, expected float32$"):
        engine.run(np.zeros((1, 1, 32, 32), np.int64))
    with pytest.raises(vitae_edge.VitaeError) as e:
        vitae_edge.quantize(CKPT, config=KWARGS, calib=calib[:, :, :16])
    assert str(e.value) == "calib: calibration array has shape [16, 1, 16, 32], expected (N, 1, 32, 32)"


def test_architecture_is_given_once():
    with pytest.raises(vitae_edge.VitaeError, match="config=KWARGS.json or arch=NAME"):
        vitae_edge.Reference(CKPT)
    with pytest.raises(vitae_edge.VitaeError, match="not both"):
        vitae_edge.Reference(CKPT, config=KWARGS, arch="vitae-t")


# ---- the same results and messages as the command line -------------------------------------


def test_quantize_gives_the_cli_blob(cli, tmp_path, calib, int8_blob):
    np.save(tmp_path / "calib.npy", calib)
    for precision, blob in [("int8", int8_blob), ("mixed", None), ("int4", None),
                            ("int16-residual", None)]:
        if blob is None:
            blob = vitae_edge.quantize(CKPT, config=KWARGS, calib=calib, precision=precision)
        out = tmp_path / f"{precision}.vblob"
        cli("quantize", "--checkpoint", CKPT, "--config", KWARGS, "--calib", tmp_path / "calib.npy",
            "--precision", precision, "--no-progress", "--out", out)
        assert out.read_bytes() == blob, precision
    # A path works too, and so does u8 input with its normalization.
    out = tmp_path / "u8.vblob"
    cli("quantize", "--checkpoint", CKPT, "--config", KWARGS, "--calib", tmp_path / "calib.npy",
        "--input", "u8", "--mean", "0.5", "--std", "0.25", "--max-calib", "8", "--no-progress",
        "--out", out)
    blob = vitae_edge.quantize(CKPT, config=KWARGS, calib=tmp_path / "calib.npy", input="u8",
                               mean=[0.5], std=[0.25], max_calib=8)
    assert out.read_bytes() == blob


def test_board_plans_as_the_cli_does(cli, tmp_path, calib, int8_blob):
    np.save(tmp_path / "calib.npy", calib)
    out = tmp_path / "h7.vblob"
    cli("quantize", "--checkpoint", CKPT, "--config", KWARGS, "--calib", tmp_path / "calib.npy",
        "--board", "stm32h747i-disco", "--no-progress", "--out", out)
    blob = vitae_edge.quantize(CKPT, config=KWARGS, calib=calib, board="stm32h747i-disco")
    assert out.read_bytes() == blob
    # One arena part per region of the board (DTCM, AXI SRAM, SRAM1-3, SRAM4), same logits.
    parts = vitae_edge.inspect(blob)["arena_part_bytes"]
    assert len(parts) == 4 and sum(parts) >= vitae_edge.inspect(int8_blob)["arena_bytes"]
    x = images(3, seed=4)
    assert vitae_edge.Engine(blob).run(x).tobytes() == vitae_edge.Engine(int8_blob).run(x).tobytes()
    with pytest.raises(vitae_edge.VitaeError) as e:
        vitae_edge.quantize(CKPT, config=KWARGS, calib=calib, board="stm32h9")
    assert str(e.value).startswith("unknown board `stm32h9`; known boards: mps2-an386, ")


def test_patch_runs_the_first_cell_in_strips_as_the_cli_does(cli, tmp_path, calib, int8_blob):
    np.save(tmp_path / "calib.npy", calib)
    out = tmp_path / "strips.vblob"
    cli("quantize", "--checkpoint", CKPT, "--config", KWARGS, "--calib", tmp_path / "calib.npy",
        "--patch", "2", "--no-progress", "--out", out)
    blob = vitae_edge.quantize(CKPT, config=KWARGS, calib=calib, patch=2)
    assert out.read_bytes() == blob
    info = vitae_edge.inspect(blob)
    assert info["strips"]["passes"] == 2 and info["arena_bytes"] < vitae_edge.inspect(int8_blob)["arena_bytes"]
    x = images(3, seed=5)
    assert vitae_edge.Engine(blob).run(x).tobytes() == vitae_edge.Engine(int8_blob).run(x).tobytes()
    with pytest.raises(vitae_edge.VitaeError) as e:
        vitae_edge.quantize(CKPT, config=KWARGS, calib=calib, patch="tall")
    assert str(e.value).startswith("patch: `tall` is not a patch plan")


def test_engine_gives_the_cli_logits(cli, tmp_path, int8_blob):
    (tmp_path / "m.vblob").write_bytes(int8_blob)
    x = images(7, seed=6)
    np.save(tmp_path / "x.npy", x)
    cli("run", "--model", tmp_path / "m.vblob", "--input", tmp_path / "x.npy", "--out", tmp_path / "y.npy")
    want = np.load(tmp_path / "y.npy")
    got = vitae_edge.Engine(tmp_path / "m.vblob").run(x)
    assert got.shape == want.shape and got.tobytes() == want.tobytes()


def test_u8_engine_gives_the_cli_logits(cli, tmp_path, calib):
    blob = vitae_edge.quantize(CKPT, config=KWARGS, calib=calib, input="u8", mean=[0.5], std=[0.5])
    (tmp_path / "u8.vblob").write_bytes(blob)
    pixels = np.random.default_rng(7).integers(0, 256, size=(4, 32, 32, 1), dtype=np.uint8)
    np.save(tmp_path / "p.npy", pixels)
    cli("run", "--model", tmp_path / "u8.vblob", "--input", tmp_path / "p.npy", "--out", tmp_path / "y.npy")
    assert vitae_edge.Engine(blob).run(pixels).tobytes() == np.load(tmp_path / "y.npy").tobytes()


def test_reference_gives_the_cli_logits(cli, tmp_path):
    x = images(3, seed=8)
    np.save(tmp_path / "x.npy", x)
    cli("run", "--checkpoint", CKPT, "--config", KWARGS, "--input", tmp_path / "x.npy", "--out", tmp_path / "y.npy")
    got = vitae_edge.Reference(CKPT, config=KWARGS).run(x)
    assert got.tobytes() == np.load(tmp_path / "y.npy").tobytes()


def test_inspect_gives_the_cli_json(cli, tmp_path, int8_blob):
    import json

    (tmp_path / "m.vblob").write_bytes(int8_blob)
    _, out, _ = cli("inspect", "--json", tmp_path / "m.vblob")
    lines = [json.loads(line) for line in out.splitlines()]
    info = vitae_edge.inspect(int8_blob)
    layers = info.pop("layers")
    assert layers == lines[:-1] and info == lines[-1]


def test_errors_carry_the_cli_message(cli, tmp_path, int8_blob):
    x = images(1)
    np.save(tmp_path / "x.npy", x)
    # A corrupt blob: the CLI names the file first.
    corrupt = bytearray(int8_blob)
    corrupt[len(corrupt) // 2] ^= 0x40
    path = tmp_path / "corrupt.vblob"
    path.write_bytes(bytes(corrupt))
    status, _, stderr = cli("run", "--model", path, "--input", tmp_path / "x.npy", "--out", tmp_path / "y.npy", ok=False)
    assert status == 2
    with pytest.raises(vitae_edge.VitaeError) as e:
        vitae_edge.Engine(bytes(corrupt))
    assert cli_error(stderr) == f"{path}: {e.value}"
    # The wrong shape: the CLI names the file where Python names the argument.
    np.save(tmp_path / "wide.npy", np.zeros((2, 3, 32, 32), np.float32))
    (tmp_path / "m.vblob").write_bytes(int8_blob)
    _, _, stderr = cli("run", "--model", tmp_path / "m.vblob", "--input", tmp_path / "wide.npy", "--out", tmp_path / "y.npy", ok=False)
    with pytest.raises(vitae_edge.VitaeError) as e:
        vitae_edge.Engine(int8_blob).run(np.zeros((2, 3, 32, 32), np.float32))
    assert str(e.value).startswith("x: ")
    assert cli_error(stderr) == f"{tmp_path / 'wide.npy'}: {str(e.value)[3:]}"
    # Missing files.
    missing = tmp_path / "missing.pth"
    _, _, stderr = cli("run", "--checkpoint", missing, "--config", KWARGS, "--input", tmp_path / "x.npy", "--out", tmp_path / "y.npy", ok=False)
    with pytest.raises(vitae_edge.VitaeError) as e:
        vitae_edge.Reference(missing, config=KWARGS)
    assert cli_error(stderr) == str(e.value)
    _, _, stderr = cli("inspect", tmp_path / "missing.vblob", ok=False)
    with pytest.raises(vitae_edge.VitaeError) as e:
        vitae_edge.inspect(tmp_path / "missing.vblob")
    assert cli_error(stderr) == str(e.value)
    # A checkpoint of another architecture: the report, every line.
    _, _, stderr = cli("run", "--checkpoint", CKPT, "--arch", "vitae-t", "--input", tmp_path / "x.npy", "--out", tmp_path / "y.npy", ok=False)
    with pytest.raises(vitae_edge.VitaeError) as e:
        vitae_edge.Reference(CKPT, arch="vitae-t")
    assert "\n" in str(e.value)
    assert cli_error(stderr) == str(e.value)
    # A setting out of range.
    _, _, stderr = cli("quantize", "--checkpoint", CKPT, "--config", KWARGS, "--calib", tmp_path / "x.npy", "--mean", "nan", "--std", "0.5", "--out", tmp_path / "q.vblob", ok=False)
    with pytest.raises(vitae_edge.VitaeError) as e:
        vitae_edge.quantize(CKPT, config=KWARGS, calib=x, mean=[float("nan")], std=[0.5])
    assert cli_error(stderr) == str(e.value)


# ---- the shared reference fixtures -----------------------------------------------------------


def test_mcu_a_matches_pytorch_and_the_cli(cli, fixtures, tmp_path):
    d = fixtures / "mcu_a"
    x = np.load(d / "input.npy")
    reference = vitae_edge.Reference(d / "model.pth", config=d / "kwargs.json")
    f32 = reference.run(x)
    torch = np.load(d / "logits.npy")
    assert np.abs(f32 - torch).max() <= 1e-4 * max(1.0, np.abs(torch).max())
    cli("run", "--checkpoint", d / "model.safetensors", "--config", d / "kwargs.json", "--input", d / "input.npy", "--out", tmp_path / "f32.npy")
    assert f32.tobytes() == np.load(tmp_path / "f32.npy").tobytes()
    blob = vitae_edge.quantize(d / "model.pth", config=d / "kwargs.json", calib=x)
    cli("quantize", "--checkpoint", d / "model.pth", "--config", d / "kwargs.json", "--calib", d / "input.npy", "--no-progress", "--out", tmp_path / "m.vblob")
    assert (tmp_path / "m.vblob").read_bytes() == blob
    cli("run", "--model", tmp_path / "m.vblob", "--input", d / "input.npy", "--out", tmp_path / "int8.npy")
    assert vitae_edge.Engine(blob).run(x).tobytes() == np.load(tmp_path / "int8.npy").tobytes()
