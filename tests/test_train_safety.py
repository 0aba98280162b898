"""The training tool against untrusted files and names, damaged checkpoints, kills, concurrent
runs, full disks and bad configuration: each case fails safe with one clear error."""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import shutil

import pytest
import torch
from typer.testing import CliRunner

import contrastkit.train.checkpoint as C
import contrastkit.train.loop as L
from contrastkit.cli import app
from contrastkit.train import load_config, train
from contrastkit.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from contrastkit.train.config import load_resume_config
from contrastkit.train.rundir import MARKER, RunLock, check_run_name

FAST = [
    "epochs=3",
    "batch_size=128",
    "threads=1",
    "progress=false",
    "report=false",
    "tensorboard=false",
]
runner = CliRunner()


def _cfg(tmp_path, *extra, recipe=None):
    return load_config(recipe, overrides=FAST + [f"out_dir='{tmp_path}'", *extra])


def _cli(*args):
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), output
    assert "Traceback" not in output
    return lines[-1]


class Payload:
    """Unpickling this creates ``path``: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# -- critical: untrusted checkpoints never run code ----------------------------------------------


def test_pickle_payload_in_legacy_state_file_is_refused(tmp_path):
    train(_cfg(tmp_path, "max_steps=2", "name='r'"))
    ckpt = latest_checkpoint(tmp_path / "r")
    proof = tmp_path / "pwned"
    for f in ("state.json", "state.safetensors", "manifest.json"):
        (ckpt / f).unlink()
    with open(ckpt / "state.pt", "wb") as fh:
        pickle.dump({"step": 2, "x": Payload(proof)}, fh)
    with pytest.raises(CheckpointError, match="state.pt: refused"):
        load_checkpoint(ckpt)
    code, out = _cli("eval", "--checkpoint", str(tmp_path / "r"), "--no-report")
    assert code == 2 and "refused" in _one_error_line(out)
    code, out = _cli("train", "--name", "r", "--resume", "--set", f"out_dir='{tmp_path}'")
    assert code == 2 and "refused" in _one_error_line(out)
    assert not proof.exists()


def test_pickle_bytes_in_the_json_state_are_refused_even_with_a_matching_manifest(tmp_path):
    train(_cfg(tmp_path, "max_steps=2", "name='r'"))
    ckpt = latest_checkpoint(tmp_path / "r")
    proof = tmp_path / "pwned"
    (ckpt / "state.json").write_bytes(pickle.dumps(Payload(proof)))
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"]["state.json"] = {
        "sha256": C._sha256(ckpt / "state.json"),
        "bytes": (ckpt / "state.json").stat().st_size,
    }
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    code, out = _cli("eval", "--checkpoint", str(ckpt), "--no-report")
    assert code == 2 and "state.json: not JSON" in _one_error_line(out)
    assert not proof.exists()


def test_trainer_state_round_trips_exactly(tmp_path):
    p = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.randn(3)
    opt.step()
    state = {
        "step": 7,
        "optimizer": opt.state_dict(),
        "rng": torch.get_rng_state(),
        "tuple": (1, 2.5, None),
        "nan": float("nan"),
    }
    C._write_state(tmp_path, state)
    back = C._load_state(tmp_path)
    assert back["step"] == 7 and back["tuple"] == (1, 2.5, None) and back["nan"] != back["nan"]
    assert torch.equal(back["rng"], state["rng"])
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    for k, v in state["optimizer"]["state"][0].items():
        assert torch.equal(back["optimizer"]["state"][0][k], v)


# -- critical: run names and --overwrite never reach outside out_dir -----------------------------


@pytest.mark.parametrize("name", ["../x", "..", ".", "/abs", "a/b", ".hidden", "", "a\\b", "a\nb"])
def test_run_names_are_one_safe_path_component(name):
    with pytest.raises(ValueError, match="config field 'name'"):
        check_run_name(name)
    with pytest.raises(ValueError, match="config field 'name'"):
        load_config(overrides=[f"name={json.dumps(name)}"])


def test_overwrite_with_escaping_name_deletes_nothing(tmp_path):
    out = tmp_path / "runs"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    (out / "sub").mkdir(parents=True)
    for name in ("../victim", ".", "..", str(victim)):
        code, output = _cli("train", "--name", name, "--overwrite", "--set", f"out_dir='{out}'")
        assert code == 2 and "run name" in _one_error_line(output)
    assert (victim / "keep.txt").read_text() == "precious" and (out / "sub").is_dir()


@pytest.mark.slow
def test_overwrite_removes_only_a_marked_run_inside_out_dir(tmp_path):
    out = tmp_path / "runs"
    plain = out / "plain"
    plain.mkdir(parents=True)
    (plain / "data.txt").write_text("not a run")
    with pytest.raises(ValueError, match="not a contrastkit run"):
        train(_cfg(out, "max_steps=1", "name='plain'"), overwrite=True)
    assert (plain / "data.txt").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / MARKER).write_text("{}")
    (out / "link").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="symbolic link"):
        train(_cfg(out, "max_steps=1", "name='link'"), overwrite=True)
    assert (elsewhere / MARKER).exists()
    train(_cfg(out, "max_steps=1", "name='real'"))
    assert (out / "real" / MARKER).is_file()
    train(_cfg(out, "max_steps=1", "name='real'"), overwrite=True)  # a real run is replaced


def test_latest_pointer_and_checkpoint_links_stay_inside_the_run(tmp_path):
    train(_cfg(tmp_path, "max_steps=2", "name='r'"))
    root = tmp_path / "r" / "checkpoints"
    outside = tmp_path / "outside" / "step-99999999"
    shutil.copytree(root / "step-00000002", outside)
    (root / "step-99999999").symlink_to(outside)
    (root / "latest").write_text("../../outside/step-99999999")
    assert latest_checkpoint(tmp_path / "r") == root / "step-00000002"
    code, out = _cli("eval", "--checkpoint", str(root / "step-99999999"), "--no-report")
    assert code == 2 and "not a checkpoint inside its run" in _one_error_line(out)


# -- high: damaged checkpoints, resume, logs, locks, full disk ----------------------------------


def _damage(path, how):
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "flipped":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        path.unlink()


@pytest.mark.slow
@pytest.mark.parametrize(
    "how,file",
    [
        ("truncated", "model.safetensors"),
        ("empty", "state.safetensors"),
        ("flipped", "model.safetensors"),
        ("missing", "state.json"),
        ("missing", "manifest.json"),
    ],
)
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, how, file):
    args = ["max_steps=6", "checkpoint_every=3"]
    train(_cfg(tmp_path, *args, "name='clean'"))
    train(_cfg(tmp_path, *args, "name='hurt'"))
    newest = tmp_path / "hurt" / "checkpoints" / "step-00000006"
    _damage(newest / file, how)
    said = []
    train(_cfg(tmp_path, *args, "name='hurt'"), resume=True, warn=said.append)
    assert len(said) == 1 and "step-00000006" in said[0] and file in said[0]
    a = load_checkpoint(latest_checkpoint(tmp_path / "clean"))[0]
    b = load_checkpoint(latest_checkpoint(tmp_path / "hurt"))[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "hurt" / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(s) for s in range(6)]


def test_no_intact_checkpoint_is_an_error_not_a_silent_restart(tmp_path):
    train(_cfg(tmp_path, "max_steps=4", "checkpoint_every=2", "name='r'"))
    for ckpt in (tmp_path / "r" / "checkpoints").glob("step-*"):
        _damage(ckpt / "model.safetensors", "flipped")
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        train(_cfg(tmp_path, "max_steps=4", "checkpoint_every=2", "name='r'"), resume=True)


def test_resume_of_a_missing_run_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no run .* to resume"):
        train(_cfg(tmp_path, "max_steps=1", "name='ghost'"), resume=True)
    code, out = _cli("train", "--name", "ghost", "--resume", "--set", f"out_dir='{tmp_path}'")
    assert code == 2 and "no run" in _one_error_line(out)
    assert not (tmp_path / "ghost").exists()


@pytest.mark.slow
def test_resume_takes_the_runs_own_config(tmp_path):
    out = f"out_dir='{tmp_path}'"
    code, text = _cli(
        "train",
        "--recipe",
        "moco-digits",
        "--name",
        "moco",
        *sum((["--set", s] for s in FAST + ["max_steps=2", out]), []),
    )
    assert code == 0, text
    saved = (tmp_path / "moco" / "config.json").read_text()
    # as docs/training.md shows: no recipe given, the run's own (moco) config is used
    code, text = _cli("train", "--name", "moco", "--resume", "--set", out, "--set", "max_steps=3")
    assert code == 0, text
    cfg = json.loads((tmp_path / "moco" / "config.json").read_text())
    assert cfg["recipe"] == "moco-digits" and cfg["max_steps"] == 3
    assert cfg["loss_params"] == {"temperature": 0.1, "in_batch_negatives": False}
    before = (tmp_path / "moco" / "config.json").read_text()
    code, text = _cli("train", "--name", "moco", "--resume", "--set", out, "--set", "lr=0.5")
    assert code == 2 and "cannot change ['lr']" in _one_error_line(text)
    code, text = _cli(
        "train", "--recipe", "simclr-digits", "--name", "moco", "--resume", "--set", out
    )
    assert code == 2 and "cannot change ['" in _one_error_line(text)
    assert (tmp_path / "moco" / "config.json").read_text() == before != saved
    code, text = _cli("eval", "--checkpoint", str(tmp_path / "moco"), "--no-report")
    assert code == 0, text


def test_kill_before_the_first_checkpoint_leaves_no_duplicate_rows(tmp_path, monkeypatch):
    class Killed(Exception):
        pass

    def die(*a, **k):
        raise Killed

    monkeypatch.setattr(L, "save_checkpoint", die)
    with pytest.raises(Killed):
        train(_cfg(tmp_path, "max_steps=4", "checkpoint_every=3", "snapshot_every=1", "name='r'"))
    monkeypatch.undo()
    log = (tmp_path / "r" / "train_log.csv").read_text().splitlines()
    assert len(log) == 1 + 3  # steps 0, 1, 2 logged, no checkpoint
    said = []
    train(
        _cfg(tmp_path, "max_steps=4", "checkpoint_every=3", "snapshot_every=1", "name='r'"),
        resume=True,
        warn=said.append,
    )
    assert any("starting from step 0" in s for s in said)
    steps = [r.split(",")[0] for r in (tmp_path / "r" / "train_log.csv").read_text().splitlines()]
    assert steps[1:] == ["0", "1", "2", "3"]
    snaps = (tmp_path / "r" / "snapshots.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in snaps] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_torn_last_log_lines_are_dropped_on_resume(tmp_path):
    args = ["max_steps=4", "checkpoint_every=2", "name='r'"]
    train(_cfg(tmp_path, *args))
    run = tmp_path / "r"
    shutil.rmtree(run / "checkpoints" / "step-00000004")  # as if killed after step 3
    with open(run / "train_log.csv", "a") as fh:
        fh.write("4,1,0.51")
    with open(run / "snapshots.jsonl", "a") as fh:
        fh.write('{"step": 5, "pos_me')
    train(_cfg(tmp_path, *args), resume=True)
    steps = [r.split(",")[0] for r in (run / "train_log.csv").read_text().splitlines()]
    assert steps[1:] == ["0", "1", "2", "3"]
    for line in (run / "snapshots.jsonl").read_text().splitlines():
        json.loads(line)
    # a damaged line in the middle is reported with the file and line, not a bare traceback
    (run / "train_log.csv").write_text("step,epoch,loss,lr,samples_per_s\nxx\n1,0,1,1,1\n")
    shutil.rmtree(run / "checkpoints" / "step-00000004")
    with pytest.raises(ValueError, match=r"train_log.csv: line 2"):
        train(_cfg(tmp_path, *args), resume=True)


def test_a_second_training_of_one_run_fails_at_once(tmp_path):
    cfg = _cfg(tmp_path, "max_steps=1", "name='r'")
    with RunLock(tmp_path, "r"):
        with pytest.raises(
            ValueError, match=rf"being trained by another process \(pid {os.getpid()}"
        ):
            train(cfg)
    assert not (tmp_path / "r").exists()
    # a lock file left by a dead process is stale: the kernel released its flock
    (tmp_path / ".r.lock").write_text("999999999\n")
    train(cfg)


def test_full_disk_is_one_clear_error_and_leaves_no_temporary_directory(tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "model.safetensors")

    monkeypatch.setattr(C, "save_file", full)
    code, out = _cli(
        "train",
        "--name",
        "r",
        *sum((["--set", s] for s in FAST + ["max_steps=2"]), []),
        "--set",
        f"out_dir='{tmp_path}'",
    )
    line = _one_error_line(out)
    assert code == 2 and "no space left" in line and str(tmp_path / "r") in line
    assert not list((tmp_path / "r" / "checkpoints").glob(".*"))


# -- CLI: one error line, exit code 2 -----------------------------------------------------------


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--set", "epochs=0"], "'epochs' must be >= 1"),
        (["train", "--recipe", "nope"], "unknown recipe"),
        (["train", "--config", "/no/such.toml"], "does not exist"),
        (["train", "--set", "lr=nan"], "'lr' must be positive and finite"),
        (["eval", "--checkpoint", "/no/such/run"], "no such run"),
        (["mine", "/no/such.jsonl", "--out", "x.jsonl"], "/no/such.jsonl"),
        (["bench", "--n", "x"], "--n"),
        (["bench"], "--n"),
    ],
)
def test_every_cli_failure_is_one_error_line_and_exit_code_2(args, needle):
    code, out = _cli(*args)
    assert code == 2 and needle in _one_error_line(out)


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("internal")

    monkeypatch.setattr(L, "build_method", boom)
    code, out = _cli("train", "--set", f"out_dir='{tmp_path}'", "--set", "max_steps=1")
    assert code == 2 and _one_error_line(out) == "error: RuntimeError: internal"
    res = runner.invoke(app, ["--debug", "train", "--set", f"out_dir='{tmp_path}'"])
    assert isinstance(res.exception, RuntimeError)


def test_bad_config_file_names_the_file(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_bytes(b"epochs = \xff\xfe")
    with pytest.raises(ValueError, match="c.toml"):
        load_config(config_file=str(bad))
    bad.write_text("epochs = [")
    with pytest.raises(ValueError, match="c.toml"):
        load_config(config_file=str(bad))


# -- configuration ------------------------------------------------------------------------------


def test_set_merges_tables_and_takes_dotted_keys():
    cfg = load_config("moco-digits", overrides=["loss_params={temperature=0.2}"])
    assert cfg.loss_params == {"temperature": 0.2, "in_batch_negatives": False}
    cfg = load_config("moco-digits", overrides=["loss_params.temperature=0.3"])
    assert cfg.loss_params == {"temperature": 0.3, "in_batch_negatives": False}


def test_changing_the_loss_drops_the_old_loss_parameters(tmp_path):
    cfg = load_config(overrides=["loss='DCL'"])
    assert cfg.loss == "DCL" and cfg.loss_params == {}
    cfg = load_config(overrides=["loss='DCL'", "loss_params.temperature=0.3"])
    assert cfg.loss_params == {"temperature": 0.3}
    with pytest.raises(ValueError, match=r"DCL does not take \['in_batch_negatives'\]"):
        load_config(overrides=["loss='DCL'", "loss_params.in_batch_negatives=false"])


def test_loss_and_method_compatibility_is_checked_before_the_run_directory(tmp_path):
    code, out = _cli(
        "train",
        "--recipe",
        "supcon-digits",
        "--set",
        "loss='SigLIPLoss'",
        "--set",
        f"out_dir='{tmp_path}'",
        "--name",
        "x",
    )
    assert code == 2 and "does not accept the inputs of method 'two-view' with labels" in (
        _one_error_line(out)
    )
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "override,needle",
    [
        ("threads=0", "'threads' must be >= 1"),
        ("max_steps=0", "'max_steps' must be >= 1"),
        ("lr=inf", "'lr' must be positive and finite"),
        ("lr=nan", "'lr' must be positive and finite"),
        ("weight_decay=-0.1", "'weight_decay' must be finite and >= 0"),
        ("weight_decay=inf", "'weight_decay' must be finite and >= 0"),
        ("seed=-1", "'seed' must be in 0 .. 2**63 - 1"),
        (f"seed={2**63}", "'seed' must be in 0 .. 2**63 - 1"),
        ("split_seed=-3", "'split_seed' must be in"),
    ],
)
def test_range_checks(override, needle):
    with pytest.raises(ValueError) as err:
        load_config(overrides=[override])
    assert needle in str(err.value)


def test_split_seed_fixes_the_split_while_seed_varies_the_rest():
    from contrastkit.train.methods import build_method

    a = build_method(load_config(overrides=["seed=0"]))
    b = build_method(load_config(overrides=["seed=5"]))
    c = build_method(load_config(overrides=["split_seed=5"]))
    assert torch.equal(a.data.x_test, b.data.x_test)
    assert all(torch.equal(u, v) for u, v in zip(a._probe_views, b._probe_views))
    assert not torch.equal(a.data.x_test, c.data.x_test)
    # the largest seed runs (derived generator seeds stay in range)
    load_config(overrides=[f"seed={2**63 - 1}", f"split_seed={2**63 - 1}"])


def test_resume_config_keeps_recipe_fields(tmp_path):
    train(_cfg(tmp_path, "max_steps=1", "name='r'", recipe="supcon-digits"))
    cfg = load_resume_config(None, None, [f"out_dir='{tmp_path}'", "name='r'", "epochs=9"])
    assert (cfg.recipe, cfg.loss, cfg.labels, cfg.epochs) == ("supcon-digits", "SupCon", True, 9)


def test_links_inside_a_run_are_refused_not_written_through(tmp_path):
    train(_cfg(tmp_path, "max_steps=2", "name='r'"))
    target = tmp_path / "outside.txt"
    target.write_text("keep")
    (tmp_path / "r" / "metrics.json").unlink()
    (tmp_path / "r" / "metrics.json").symlink_to(target)
    code, out = _cli("eval", "--checkpoint", str(tmp_path / "r"), "--no-report")
    assert code == 2 and "symbolic link" in _one_error_line(out)
    with pytest.raises(ValueError, match="symbolic link"):
        train(_cfg(tmp_path, "max_steps=3", "name='r'"), resume=True)
    assert target.read_text() == "keep"


# -- devices and precision ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,needle",
    [
        ("device='tpu'", "config field 'device'"),
        ("device='banana'", "config field 'device'"),
        ("precision='fp8'", "config field 'precision' must be one of"),
        ("precision='fp16'", "'fp16' needs device 'cuda'"),
    ],
)
def test_device_and_precision_are_checked(override, needle):
    with pytest.raises(ValueError) as err:
        load_config(overrides=[override])
    assert needle in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_a_gpu_is_a_config_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_config(overrides=["device='cuda'"])
    assert load_config(overrides=["device='auto'"]).device == "auto"


@pytest.mark.slow
def test_bf16_autocast_trains_and_resumes_exactly(tmp_path):
    args = ["max_steps=4", "checkpoint_every=2", "precision='bf16'", "recipe='clip-pairs'"]
    seen = []
    real = L._precision

    def spy(cfg, device):
        autocast, scaler = real(cfg, device)
        seen.append((autocast.fast_dtype, autocast._enabled))
        return autocast, scaler

    L._precision = spy
    try:
        a = train(_cfg(tmp_path, *args, "name='a'"))
        train(_cfg(tmp_path, *args, "name='b'"))
    finally:
        L._precision = real
    assert seen[0] == (torch.bfloat16, True) and math.isfinite(a["final_loss"])
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-00000004")
    train(_cfg(tmp_path, *args, "name='b'"), resume=True)
    wa = load_checkpoint(latest_checkpoint(tmp_path / "a"))[0]
    wb = load_checkpoint(latest_checkpoint(tmp_path / "b"))[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    fp32 = load_checkpoint(latest_checkpoint(tmp_path / "a"))[0]
    train(_cfg(tmp_path, "max_steps=4", "checkpoint_every=2", "recipe='clip-pairs'", "name='c'"))
    wc = load_checkpoint(latest_checkpoint(tmp_path / "c"))[0]
    assert any(not torch.equal(fp32[k], wc[k]) for k in wc)  # autocast really changed the math


# -- export -------------------------------------------------------------------------------------


def test_export_digit_encoder_gives_the_evaluated_features(tmp_path):
    from contrastkit.train.export import load_encoder
    from contrastkit.train.loop import load_run

    train(_cfg(tmp_path, "max_steps=2", "name='r'", recipe="clip-pairs"))
    code, out = _cli("export", str(tmp_path / "r"))
    assert code == 0, out
    enc = load_encoder(tmp_path / "r" / "export")
    method, _, _ = load_run(tmp_path / "r")
    want = method.features("trained")["test"]
    with torch.no_grad():
        got = enc(method.data.x_test)
    assert torch.equal(got, want)
    meta = json.loads((tmp_path / "r" / "export" / "contrastkit_export.json").read_text())
    assert meta["recipe"] == "clip-pairs" and meta["step"] == 2
    # an earlier export is replaced; a directory that is not one is refused
    assert _cli("export", str(tmp_path / "r"))[0] == 0
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    code, out = _cli("export", str(tmp_path / "r"), "--out", str(other))
    assert code == 2 and "not empty" in _one_error_line(out)
    assert (other / "keep.txt").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--bogus"], "No such option: --bogus"),
        (["nosuch"], "No such command 'nosuch'"),
        (["bench", "--d", "x"], "Invalid value for '--d'"),
        ([], "missing command"),
        (["eval", "--checkpoint", "/no/such/run"], "no such run"),
    ],
)
def test_usage_errors_through_the_console_entry_point(args, needle):
    import subprocess
    import sys

    code = "import sys; from contrastkit.cli import main; main(sys.argv[1:])"
    res = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2 and needle in _one_error_line(res.stdout + res.stderr)


# -- schedules, clipping, TensorBoard ------------------------------------------------------------


def test_lr_schedules_with_warmup():
    from contrastkit.train.config import lr_factor

    assert [lr_factor(s, 10, 4, "constant") for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert [lr_factor(s, 10, 2, "linear") for s in (2, 6, 10, 12)] == [1.0, 0.5, 0.0, 0.0]
    assert lr_factor(2, 10, 2, "cosine") == 1.0 and abs(lr_factor(6, 10, 2, "cosine") - 0.5) < 1e-12
    # without warmup the cosine is the one the recipes always used
    for s in range(12):
        assert lr_factor(s, 10) == 0.5 * (1 + math.cos(math.pi * min(s, 10) / 10))
    for override, needle in [
        ("schedule='step'", "'schedule' must be one of"),
        ("warmup_steps=-1", "'warmup_steps' must be >= 0"),
        ("grad_clip=0.0", "'grad_clip' must be positive"),
        ("grad_clip='x'", "'grad_clip' must be a number"),
    ]:
        with pytest.raises(ValueError, match=needle):
            load_config(overrides=[override])


def test_clipping_warmup_and_tensorboard_scalars(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    norms = []
    real = L._grad_norm

    def spy(params, clip):
        params = list(params)
        out = real(params, clip)
        after = real(params, None)  # the norm of the gradients the optimiser will use
        norms.append((out, after))
        return out

    monkeypatch.setattr(L, "_grad_norm", spy)
    args = ["max_steps=3", "warmup_steps=2", "schedule='linear'", "grad_clip=0.01"]
    train(_cfg(tmp_path, *args, "tensorboard=true", "name='r'", recipe="clip-pairs"))
    assert len(norms) == 3
    for before, after in norms:
        assert before > 0.01 and abs(after - 0.01) < 1e-4  # clipped to grad_clip
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard")).Reload()
    tags = events.Tags()["scalars"]
    assert {"train/grad_norm", "train/temperature", "train/lr"} <= set(tags)
    lrs = [e.value for e in events.Scalars("train/lr")]
    assert lrs == pytest.approx([2e-3 * f for f in (1.0, 1.0, 0.0)], rel=1e-6)
    temps = [e.value for e in events.Scalars("train/temperature")]
    assert 0.06 < temps[0] < 0.08  # CLIP starts at 0.07 and learns
    assert any(tag.startswith("config") for tag in events.Tags()["tensors"])  # hyperparameters
