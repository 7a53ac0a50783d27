"""An offline demo corpus of four clearly different domains, from what every Python install has.

- ``code``: Python standard-library source;
- ``prose``: standard-library docstrings and the ``pydoc`` topic help texts;
- ``arithmetic``: synthetic sums and products, learnable to a low loss;
- ``random``: random printable characters, whose loss can never drop below
  the entropy of the generator.

A data-mixing algorithm should learn to spend few samples on ``random``.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.errors import ConfigError
from mixflow.utils.progress import progress as progress_bar

DEMO_DOMAINS = ("code", "prose", "arithmetic", "random")

CHUNK_BYTES = 4096
"""Target size of one code or prose document."""
LINES_PER_DOCUMENT = 20
"""Lines per arithmetic or random document."""

# Directories whose contents vary between installs (site-packages) or are not
# typical library code (test suites, some with deliberately broken files).
_SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}


def build_demo_corpus(
    out_dir: str | Path,
    max_bytes_per_domain: int = 400_000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Path]:
    """Write the demo domains as ``<name>.jsonl`` files plus a ``dataset_info.json``.

    Each domain holds at most ``max_bytes_per_domain`` bytes of UTF-8 text and
    is deterministic for a given ``seed`` on a given Python install. Returns
    the path of each domain's file, keyed by domain name.
    """
    if isinstance(max_bytes_per_domain, bool) or not isinstance(max_bytes_per_domain, int):
        raise ConfigError(f"max_bytes_per_domain: expected a positive integer, got {max_bytes_per_domain!r}")
    if max_bytes_per_domain < 1:
        raise ConfigError(f"max_bytes_per_domain: expected a positive integer, got {max_bytes_per_domain}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    generators = {
        "code": _code_documents(),
        "prose": _prose_documents(),
        "arithmetic": _arithmetic_documents(np.random.default_rng([seed, 0])),
        "random": _random_documents(np.random.default_rng([seed, 1])),
    }
    paths: dict[str, Path] = {}
    with progress_bar(
        total=max_bytes_per_domain * len(DEMO_DOMAINS),
        enabled=progress,
        desc="demo corpus",
        unit="B",
        unit_scale=True,
        leave=False,
    ) as bar:
        for name in DEMO_DOMAINS:
            path = out / f"{name}.jsonl"
            written = _write_jsonl(path, _capped(generators[name], max_bytes_per_domain), bar)
            # Keep the overall bar honest when a domain runs out before its cap.
            bar.update(max_bytes_per_domain - written)
            paths[name] = path

    info = {name: {"file_name": path.name, "columns": {"prompt": "text"}} for name, path in paths.items()}
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return paths


def _capped(documents: Iterable[str], max_bytes: int) -> Iterator[tuple[str, int]]:
    """Documents and their byte sizes, stopping before the total would pass ``max_bytes``."""
    total = 0
    for text in documents:
        size = len(text.encode("utf-8"))
        if size == 0:
            continue
        if total + size > max_bytes:
            return
        total += size
        yield text, size


def _write_jsonl(path: Path, documents: Iterable[tuple[str, int]], bar: Any) -> int:
    written = 0
    with path.open("w", encoding="utf-8") as handle:
        for text, size in documents:
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            written += size
            bar.update(size)
    return written


def _stdlib_files() -> list[Path]:
    """Standard-library ``.py`` files sorted by path, without tests or third-party packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files: list[Path] = []
    for directory, subdirs, names in os.walk(root):
        # Pruning here, rather than filtering afterwards, avoids walking a large site-packages.
        subdirs[:] = [d for d in subdirs if d not in _SKIPPED_DIRS]
        files.extend(Path(directory, n) for n in names if n.endswith(".py"))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_source(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _chunks(text: str, max_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """Split ``text`` at line boundaries into pieces of about ``max_bytes`` bytes."""
    piece: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        line_size = len(line.encode("utf-8"))
        if piece and size + line_size > max_bytes:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += line_size
    if piece:
        yield "".join(piece)


def _code_documents() -> Iterator[str]:
    for path in _stdlib_files():
        source = _read_source(path)
        if source:
            yield from _chunks(source)


def _docstrings(source: str, min_chars: int = 80) -> Iterator[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                cleaned = inspect.cleandoc(doc)
                if len(cleaned) >= min_chars:
                    yield cleaned


def _stdlib_docstrings() -> Iterator[str]:
    for path in _stdlib_files():
        source = _read_source(path)
        if source:
            yield from _docstrings(source)


def _pydoc_topics() -> Iterator[str]:
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield from _chunks(topics[key].strip())


def _prose_documents() -> Iterator[str]:
    # Alternate the two sources so that even a small cap holds both kinds of prose.
    sources = [_stdlib_docstrings(), _pydoc_topics()]
    while sources:
        for source in list(sources):
            try:
                yield next(source)
            except StopIteration:
                sources.remove(source)


def _arithmetic_line(rng: np.random.Generator) -> str:
    op = rng.choice(["+", "-", "*"])
    if op == "*":
        a, b = int(rng.integers(2, 100)), int(rng.integers(2, 10))
        return f"{a}*{b}={a * b}"
    a, b = int(rng.integers(0, 1000)), int(rng.integers(0, 1000))
    if op == "-":
        # Keep results non-negative so every line has the same simple shape.
        a, b = max(a, b), min(a, b)
        return f"{a}-{b}={a - b}"
    return f"{a}+{b}={a + b}"


def _arithmetic_documents(rng: np.random.Generator) -> Iterator[str]:
    while True:
        yield "\n".join(_arithmetic_line(rng) for _ in range(LINES_PER_DOCUMENT))


_PRINTABLE = np.array([chr(c) for c in range(33, 127)])
"""Printable ASCII without space, so random lines look like the arithmetic ones in shape."""


def _random_documents(rng: np.random.Generator) -> Iterator[str]:
    # Same line count and similar line lengths as arithmetic, so the two domains
    # differ in predictability only.
    while True:
        lengths = rng.integers(5, 14, size=LINES_PER_DOCUMENT)
        yield "\n".join("".join(rng.choice(_PRINTABLE, size=int(n))) for n in lengths)
