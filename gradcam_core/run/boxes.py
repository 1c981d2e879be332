"""Ground-truth boxes for the evaluation (``-boxes``): a folder of Pascal VOC XML files named after the
images (``cat_dog.xml`` for ``cat_dog.jpg``), or one CSV file with the header ``image,x1,y1,x2,y2,label``.

Coordinates are the original image's pixels as VOC writes them: 1-based and inclusive
(``xmin = 1`` is the first column, ``xmax = width`` the last); a CSV row the same. A box's class is
what ``-label`` takes: a 1-based ImageNet label (``283``), a class name (``tiger cat``) or a WordNet id
(``n02123159``), looked up in the model's class names. A CSV row names its image by file name or by its
path relative to the folder searched.

Bad input never stops the run: a file that does not parse, a box outside its image, a CSV row with
missing fields, a class the model does not know, an image without a box are one line each
(:attr:`GroundTruth.problems`); the box (or the file) is left out and an image without boxes is scored
without localization.
"""
from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GradCamError
from ..fileio import open_regular

MAX_BYTES = 16 << 20
"""The largest box file read (a VOC file is a few hundred bytes)."""

CSV_FIELDS = ("image", "x1", "y1", "x2", "y2", "label")


@dataclass(frozen=True)
class RawBox:
    """A box as the file gives it: 1-based inclusive pixel coordinates of the original image and the
    0-based class."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: int


@dataclass
class GroundTruth:
    """The boxes of each image (by the image's path as found), and one line per problem met."""

    boxes: dict[str, list[RawBox]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _read(path: Path) -> bytes:
    try:
        with open_regular(path) as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise GradCamError(f"{path}: {err.strerror or err}") from None
    if len(data) > MAX_BYTES:
        raise GradCamError(f"{path}: larger than {MAX_BYTES >> 20} MB")
    return data


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image from its header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as err:
        raise GradCamError(f"{path}: cannot read the image size ({err})") from None


def read_ground_truth(source: Path, images: Sequence[tuple[Path, str]], label_of: Callable[[str], int]) -> GroundTruth:
    """The boxes of ``images`` ((file, its name relative to the folder searched)) from ``source`` (a
    VOC folder or a CSV file), each checked against its image's size; ``label_of`` turns a box's class
    as written into a 0-based class (raising GradCamError for an unknown one)."""
    truth = GroundTruth()
    by_key: dict[str, Path] = {}
    for path, rel in images:
        by_key.setdefault(rel, path)
        by_key.setdefault(path.name, path)
    if source.is_dir():
        found = _voc_folder(source, images, label_of, truth)
    else:
        found = _csv_file(source, by_key, label_of, truth)
    sizes: dict[Path, tuple[int, int]] = {}
    for path, rel in images:
        kept = []
        for box, where in found.get(path, []):
            if path not in sizes:
                sizes[path] = image_size(path)
            w, h = sizes[path]
            if not (1 <= box.x1 <= box.x2 <= w and 1 <= box.y1 <= box.y2 <= h):
                truth.problems.append(f"{where}: the box ({box.x1:g}, {box.y1:g}, {box.x2:g}, {box.y2:g}) is outside "
                                      f"the image {rel} ({w} x {h}); left out")
                continue
            kept.append(box)
        if kept:
            truth.boxes[str(path)] = kept
        else:
            truth.problems.append(f"{rel}: no box; scored without localization")
    return truth


def _voc_folder(folder: Path, images: Sequence[tuple[Path, str]], label_of: Callable[[str], int],
                truth: GroundTruth) -> dict[Path, list[tuple[RawBox, str]]]:
    found: dict[Path, list[tuple[RawBox, str]]] = {}
    for path, rel in images:
        xml = folder / Path(rel).with_suffix(".xml")
        if not xml.is_file():
            xml = folder / (path.stem + ".xml")
        if not xml.is_file():
            continue
        try:
            root = ET.fromstring(_read(xml))
        except ET.ParseError as err:
            truth.problems.append(f"{xml}: not a VOC XML file ({err}); {rel} is scored without its boxes")
            continue
        except GradCamError as err:
            truth.problems.append(f"{err}; {rel} is scored without its boxes")
            continue
        for i, obj in enumerate(root.iter("object"), 1):
            where = f"{xml} object {i}"
            try:
                name = (obj.findtext("name") or "").strip()
                bnd = obj.find("bndbox")
                if not name or bnd is None:
                    raise GradCamError("needs a name and a bndbox")
                x1, y1, x2, y2 = (_number(bnd.findtext(k), k) for k in ("xmin", "ymin", "xmax", "ymax"))
                found.setdefault(path, []).append((RawBox(x1, y1, x2, y2, label_of(name)), where))
            except GradCamError as err:
                truth.problems.append(f"{where}: {err}; left out")
    return found


def _csv_file(file: Path, by_key: dict[str, Path], label_of: Callable[[str], int],
              truth: GroundTruth) -> dict[Path, list[tuple[RawBox, str]]]:
    found: dict[Path, list[tuple[RawBox, str]]] = {}
    try:
        text = _read(file).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise GradCamError(f"-boxes {file}: not a UTF-8 CSV file") from None
    rows = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(rows, [])]
    if tuple(header) != CSV_FIELDS:
        raise GradCamError(f"-boxes {file}: the first line must be the header {','.join(CSV_FIELDS)}")
    for number, row in enumerate(rows, 2):
        where = f"{file} line {number}"
        if not any(cell.strip() for cell in row):
            continue
        cells = [c.strip() for c in row]
        if len(cells) != len(CSV_FIELDS) or not all(cells):
            truth.problems.append(f"{where}: needs the {len(CSV_FIELDS)} fields {','.join(CSV_FIELDS)}; left out")
            continue
        path = by_key.get(cells[0])
        if path is None:
            truth.problems.append(f"{where}: no image {cells[0]!r} in this run; left out")
            continue
        try:
            x1, y1, x2, y2 = (_number(v, k) for v, k in zip(cells[1:5], CSV_FIELDS[1:5]))
            found.setdefault(path, []).append((RawBox(x1, y1, x2, y2, label_of(cells[5])), where))
        except GradCamError as err:
            truth.problems.append(f"{where}: {err}; left out")
    return found


def _number(text: str | None, what: str) -> float:
    try:
        value = float((text or "").strip())
    except ValueError:
        raise GradCamError(f"{what} {text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise GradCamError(f"{what} {text!r} is not a finite number")
    return value
