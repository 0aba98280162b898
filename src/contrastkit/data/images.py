"""Image-text pairs: a table of image paths and captions, images opened with PIL.

:class:`ImageTextPairs` streams ``(image, caption)`` from a CSV, TSV, JSONL or Parquet file (or
a saved Hugging Face dataset) with one row per pair. Columns are found by name,
case-insensitively:

===========  ===================================================================
field        column names recognised
===========  ===================================================================
``image``    image, image_path, filepath, file_name, path, img, image_file
``caption``  caption, text, title, sentence, alt_text
===========  ===================================================================

(``filepath`` / ``title`` are open_clip's CSV defaults, ``file_name`` Hugging Face's
``metadata.jsonl``.) ``columns={"image": ..., "caption": ...}`` names them explicitly.

Image paths are relative to ``root``, by default the folder of the table file. A path that
leads outside ``root`` (an absolute path, ``..``, or a symbolic link out of it) is refused
unless ``allow_outside_root=True``. A cell may also hold a ``PIL.Image`` or a
``{"bytes": ...}`` record (a Hugging Face ``Image`` column, also as stored in Parquet).

Each image is opened, fully decoded and converted to ``mode`` (``"RGB"``), then passed to
``transform`` (for example a torchvision transform that returns a tensor). An image that is
missing or cannot be decoded, an empty caption or a refused path is a
:class:`~contrastkit.data.errors.DataError` naming the file, line and column; with
``skip_bad_rows=True`` it is skipped and counted instead.

Example::

    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from contrastkit.data import ImageTextPairs

    pairs = ImageTextPairs("captions.csv", transform=T.Compose([T.Resize(224), T.ToTensor()]))
    loader = DataLoader(pairs, batch_size=32, num_workers=4)
    for images, captions in loader:     # (32, 3, 224, 224) tensor, list of 32 strings
        ...
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional

from torch.utils.data import IterableDataset

from . import hf
from .errors import BadRows, DataError, Location, MissingDependency
from .formats import RowReader
from .text import ColumnError, _column, _file_error, _share, _sources, _text

__all__ = ["ImageTextPairs", "IMAGE_COLUMN_NAMES"]

#: field -> column names recognised (lower case)
IMAGE_COLUMN_NAMES = {
    "image": ("image", "image_path", "filepath", "file_name", "path", "img", "image_file"),
    "caption": ("caption", "text", "title", "sentence", "alt_text"),
}


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependency(
            "image-text pairs need Pillow: pip install 'contrastkit[data]' (or pillow)"
        ) from exc
    return Image


def _resolve(names, columns: Mapping) -> tuple[str, str]:
    names = [str(n) for n in names]
    out = []
    for field in ("image", "caption"):
        if field in columns:
            if columns[field] not in names:
                raise ColumnError(
                    f"missing column (named in columns=); columns: {names}", columns[field]
                )
            out.append(columns[field])
            continue
        found = [
            n for c in IMAGE_COLUMN_NAMES[field] for n in names if n.lower() == c and n not in out
        ]
        if len(found) > 1:
            raise ValueError(
                f"columns {found} could each be the {field}: pass columns={{{field!r}: ...}}"
            )
        if not found:
            raise ColumnError(
                f"no {field} column among {names}: name one of {list(IMAGE_COLUMN_NAMES[field])}"
                f" or pass columns={{{field!r}: ...}}",
                field,
            )
        out.append(found[0])
    return out[0], out[1]


class ImageTextPairs(IterableDataset):
    """``(image, caption)`` pairs streamed from a table of image paths and captions.

    Args:
        source: a CSV/TSV/JSONL/Parquet path, a list of them, a saved Hugging Face dataset
            directory or a ``datasets.Dataset``.
        columns: ``{"image": ..., "caption": ...}`` (either or both).
        root: the folder image paths are relative to (default: each table file's folder).
        transform: applied to each ``PIL.Image`` (default: none; the image is yielded as is).
        mode: PIL mode to convert to (``"RGB"``; ``None`` keeps the file's).
        allow_outside_root: accept absolute paths and paths that lead outside ``root``.
        skip_bad_rows, format, split, rank, world_size: as in
            :class:`~contrastkit.data.text.TextPairs`.
    """

    def __init__(
        self,
        source,
        *,
        columns: Optional[Mapping[str, str]] = None,
        root=None,
        transform: Optional[Callable] = None,
        mode: Optional[str] = "RGB",
        allow_outside_root: bool = False,
        skip_bad_rows: bool = False,
        format: Optional[str] = None,
        split: Optional[str] = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ):
        super().__init__()
        self.columns = dict(columns or {})
        unknown = sorted(set(self.columns) - {"image", "caption"})
        if unknown:
            raise ValueError(f"columns: unknown key(s) {unknown}; keys are image, caption")
        if transform is not None and not callable(transform):
            raise ValueError(f"transform must be callable, got {type(transform).__name__}")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if world_size is not None and not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        _pil()
        self.root = None if root is None else Path(root)
        self.transform = transform
        self.mode = mode
        self.allow_outside_root = bool(allow_outside_root)
        self.format = format
        self.rank, self.world_size = rank or 0, world_size or 1
        self.bad_rows = BadRows(skip=skip_bad_rows)
        self._sources = _sources(source, format, split)

    def __repr__(self) -> str:
        names = [str(v if k == "file" else v[0] if isinstance(v, tuple) else "<dataset>")
                 for k, v in self._sources]  # fmt: skip
        return f"ImageTextPairs({names})"

    def _readers(self):
        for kind, value in self._sources:
            if kind == "file":
                yield RowReader(value, self.format), Path(value).parent
            elif isinstance(value, tuple):
                yield hf.HFRows(value[1], name=value[0]), Path(value[0])
            else:
                yield hf.HFRows(value), None

    def _path(self, value: str, root: Optional[Path], where: Location, col: str) -> Path:
        p = Path(value)
        base = self.root if self.root is not None else root
        if p.is_absolute():
            if not self.allow_outside_root:
                raise DataError.at(
                    where, f"absolute image path {value!r} refused (allow_outside_root=True "
                    "accepts it)", col
                )  # fmt: skip
            return p
        if base is None:
            raise DataError.at(where, f"relative image path {value!r} without a root=", col)
        full = base / p
        if not self.allow_outside_root:
            inside = os.path.realpath(base)
            real = os.path.realpath(full)
            if os.path.commonpath([inside, real]) != inside:
                raise DataError.at(
                    where, f"image path {value!r} leads outside {str(base)!r} "
                    "(allow_outside_root=True accepts it)", col
                )  # fmt: skip
        return full

    def load_image(self, value, root: Optional[Path], where: Location, col: str):
        """The image of one cell (a path, a ``PIL.Image`` or ``{"bytes": ...}``), converted to
        ``mode``; ``DataError`` when it cannot be read."""
        Image = _pil()
        if isinstance(value, Image.Image):
            image = value
        else:
            if isinstance(value, dict) and value.get("bytes") is not None:
                target, shown = io.BytesIO(value["bytes"]), "image bytes"
            elif isinstance(value, dict) and isinstance(value.get("path"), str):
                target = self._path(value["path"], root, where, col)
                shown = repr(value["path"])
            elif isinstance(value, str) and value.strip():
                target, shown = self._path(value, root, where, col), repr(value)
            elif isinstance(value, str) or value is None:
                raise DataError.at(where, "empty image path", col)
            else:
                raise DataError.at(
                    where, f"expected an image path, got {type(value).__name__}", col
                )
            try:
                with Image.open(target) as im:
                    im.load()
                    image = im.copy() if self.mode is None else im.convert(self.mode)
            except FileNotFoundError:
                raise DataError.at(
                    where, f"unreadable image {shown}: file not found", col
                ) from None
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                raise DataError.at(
                    where, f"unreadable image {shown} ({type(exc).__name__}: {exc})", col
                ) from None
            return image
        return image if self.mode is None or image.mode == self.mode else image.convert(self.mode)

    def __iter__(self) -> Iterator[tuple]:
        keep = _share(self.rank, self.world_size)
        self.bad_rows.reset()
        for reader, root in self._readers():
            cols = None
            seen = 0
            for where, row in reader.items(keep):
                seen += 1
                if row is None:  # another worker's row
                    continue
                if reader.columns is not None and cols is None:
                    try:
                        cols = _resolve(reader.columns, self.columns)
                    except ValueError as exc:  # the whole file's problem: never skipped
                        raise _file_error(reader, exc) from None
                try:
                    if isinstance(row, DataError):
                        raise row
                    image_col, caption_col = cols or _resolve_row(row, self.columns, where)
                    caption = _text(row, caption_col, where)
                    if image_col not in row:
                        raise DataError.at(where, "missing column", image_col)
                    image = self.load_image(row[image_col], root, where, image_col)
                except DataError as err:
                    self.bad_rows.handle(err)
                    continue
                yield (image if self.transform is None else self.transform(image)), caption
            if seen == 0:
                raise DataError("no rows", file=reader.name)
        self.bad_rows.report(repr(self))


def _resolve_row(row: dict, columns: Mapping, where: Location) -> tuple[str, str]:
    try:
        return _resolve(list(row), columns)
    except ValueError as exc:
        raise DataError.at(where, str(exc), _column(exc)) from None
