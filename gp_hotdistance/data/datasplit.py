"""Datasplit CSV files: which crops train and which validate.

Two forms are read, one row per crop, no header (a first row starting with
``usage`` is taken as a header and skipped):

- the CellMap challenge's five columns (``make_datasplit_csv``), quoted::

    "train","/data/jrc_x/jrc_x.zarr","recon-1/em/fibsem-uint8","/data/jrc_x/jrc_x.zarr","recon-1/labels/groundtruth/crop7/[mito,er]"

  usage, raw container, raw dataset, label container, label dataset with the
  crop's classes in brackets; a dataset column may be empty when its
  container column holds the joined path;
- cellmap-data's three columns ``usage, raw, gt`` with joined paths.

Usage is ``train`` or ``validate``. Relative paths are relative to the CSV
file's directory; paths holding ``://`` are kept as they are.
:func:`write_datasplit` writes the five-column form.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .sample import expand_label_template

USAGES = ("train", "validate")


@dataclass(frozen=True)
class DatasplitRow:
    """One crop: ``usage`` (``train``/``validate``), the ``raw`` dataset
    path and the ``labels`` bracket template (``.../crop7/[mito,er]``)."""

    usage: str
    raw: str
    labels: str

    @property
    def classes(self) -> list[str]:
        """The classes the crop annotates (its bracket list)."""
        return list(expand_label_template(self.labels))


def _join(container: str, dataset: str) -> str:
    container, dataset = container.strip(), dataset.strip()
    if not dataset:
        return container
    return f"{container.rstrip('/')}/{dataset.lstrip('/')}"


def _locate(path: str, base: Path) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    return str(base / path)


def read_datasplit(path: str | os.PathLike) -> list[DatasplitRow]:
    """The rows of a datasplit CSV (see the module docs).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a row that is not one of the two forms, an unknown
            usage, or a label dataset without a ``[class,...]`` bracket;
            named by file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"datasplit {path} does not exist")
    base = path.absolute().parent
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for line, fields in enumerate(csv.reader(handle), start=1):
            fields = [f.strip() for f in fields]
            if not any(fields):
                continue
            if line == 1 and fields[0].lower() == "usage":
                continue  # a header
            where = f"datasplit {path} line {line}"
            if len(fields) == 5:
                usage, raw = fields[0], _join(fields[1], fields[2])
                labels = _join(fields[3], fields[4])
            elif len(fields) == 3:
                usage, raw, labels = fields
            else:
                raise ValueError(
                    f"{where}: {len(fields)} columns {fields}; expected 5 (usage, raw container, "
                    "raw dataset, label container, label dataset/[classes]) or 3 (usage, raw, gt)"
                )
            if usage.lower() not in USAGES:
                raise ValueError(f"{where}: usage {usage!r} is not one of {list(USAGES)}")
            try:
                expand_label_template(labels)
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            rows.append(DatasplitRow(usage.lower(), _locate(raw, base), _locate(labels, base)))
    return rows


def _split_container(path: str) -> tuple[str, str]:
    """``.../jrc_x.zarr/recon-1/em`` -> (``.../jrc_x.zarr``, ``recon-1/em``);
    a path without a ``.zarr``/``.n5`` part is its own container."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if part.endswith((".zarr", ".n5")):
            return "/".join(parts[: i + 1]), "/".join(parts[i + 1 :])
    return path, ""


def write_datasplit(path: str | os.PathLike, rows: Sequence[DatasplitRow]) -> None:
    """Write ``rows`` in the challenge's five-column form (every field
    quoted, no header), replacing ``path`` atomically."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for row in rows:
            if row.usage not in USAGES:
                raise ValueError(f"usage {row.usage!r} is not one of {list(USAGES)}")
            writer.writerow([row.usage, *_split_container(row.raw), *_split_container(row.labels)])
    os.replace(temporary, path)
