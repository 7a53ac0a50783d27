"""The arena corpus: real text that nobody in this project wrote, from files every machine of the
project's kind ships (the Python install, C headers, manual pages, package licences).

Seven domains of distinct character, with natural sizes that differ 40× (as a pretraining corpus
holds much more code and English than any other language):

==========  ==========================================================  ===========  =====
domain      source                                                      budget (MB)  clean
==========  ==========================================================  ===========  =====
python      the Python standard library's sources (``sysconfig``)        8.0          yes
c           C headers under ``/usr/include``                             4.0          yes
english     English manual pages (sections 1, 5, 7, 8), roff stripped    2.0          yes
licenses    ``/usr/share/doc/*/copyright``: highly redundant             1.0          yes
hexdump     xxd-style dumps of the Python install's compiled modules     0.5          no
german      German manual pages                                          0.5          yes
french      French manual pages                                          0.2          yes
==========  ==========================================================  ===========  =====

``hexdump`` is partly learnable noise: offsets count up and the ASCII column repeats the bytes,
while the machine code in between is close to random; it is not a *clean* domain (the arena's target
leaves it out). Files are taken in an order fixed by a hash of their path and the seed, so a domain
samples its whole source rather than the alphabetically first files, and the same machine always
gives the same corpus. ``manifest.json`` records every file used (path, bytes, SHA-256) and a hash of
the written corpus, so a result can name exactly the data it was measured on.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sysconfig
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixflow.data.roff import roff_text
from mixflow.errors import ConfigError
from mixflow.utils.jsonlog import write_json_atomic
from mixflow.utils.progress import progress as progress_bar

CHUNK_BYTES = 4096
"""Target size of one document (split at line boundaries)."""
MIN_DOCUMENT_BYTES = 64
"""Shorter pieces (a redirecting manual page, an empty header) are not documents."""


@dataclass(frozen=True)
class CorpusDomain:
    """One domain of the arena corpus: where its files are and how a file becomes text."""

    name: str
    description: str
    files: Callable[[], list[Path]]
    """Every candidate file (any order: the builder orders them by hash)."""
    text: Callable[[Path], str]
    """A file's text (empty: skip the file)."""
    budget: int
    """Bytes of text at scale 1."""
    clean: bool = True
    """Counted in the arena's target (the noisy domain is not)."""


def _walk(root: Path, keep: Callable[[Path], bool], skip_dirs: frozenset[str] = frozenset()) -> list[Path]:
    found = []
    for here, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip_dirs]
        found += [Path(here) / n for n in names if keep(Path(here) / n)]
    return found


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _python_files() -> list[Path]:
    skip = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})
    return _walk(_stdlib(), lambda p: p.suffix == ".py", skip)


def _header_files() -> list[Path]:
    return _walk(Path("/usr/include"), lambda p: p.suffix == ".h" and p.is_file())


def _man_files(*dirs: str) -> Callable[[], list[Path]]:
    # Google Cloud's CLI installs ~17,000 generated pages of one template, which would make "English" a
    # second redundant domain: they are left out.
    def find() -> list[Path]:
        return [
            p
            for d in dirs
            for p in _walk(
                Path("/usr/share/man") / d, lambda q: q.name.endswith(".gz") and not q.name.startswith("gcloud")
            )
        ]

    return find


def _licence_files() -> list[Path]:
    root = Path("/usr/share/doc")
    return [p / "copyright" for p in sorted(root.iterdir()) if (p / "copyright").is_file()] if root.is_dir() else []


def _compiled_modules() -> list[Path]:
    root = _stdlib() / "lib-dynload"  # platstdlib is the virtual environment's, without them
    return _walk(root, lambda p: p.suffix == ".so") if root.is_dir() else []


def _man_text(path: Path) -> str:
    try:
        source = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
    except (OSError, EOFError, zlib.error):  # a corrupt archive is no text (the manifest lists it as skipped)
        return ""
    return roff_text(source)


def hexdump(data: bytes, offset: int = 0) -> str:
    """xxd's layout: an offset, 8 groups of 2 bytes in hex, and the printable bytes, 16 to a line."""
    lines = []
    for start in range(0, len(data), 16):
        row = data[start : start + 16]
        groups = " ".join(row[i : i + 2].hex() for i in range(0, len(row), 2))
        printable = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{offset + start:08x}: {groups:<39}  {printable}")
    return "\n".join(lines)


def _hex_text(path: Path) -> str:
    # 4 KiB from the middle of the file: the machine code, not the ELF header every file shares
    data = path.read_bytes()
    start = (len(data) // 2) & ~15
    return hexdump(data[start : start + 4096], start)


DOMAINS: tuple[CorpusDomain, ...] = (
    CorpusDomain("python", "Python standard-library sources", _python_files, _read, 8_000_000),
    CorpusDomain("c", "C headers under /usr/include", _header_files, _read, 4_000_000),
    CorpusDomain(
        "english",
        "English manual pages (sections 1, 5, 7, 8)",
        _man_files("man1", "man5", "man7", "man8"),
        _man_text,
        2_000_000,
    ),
    CorpusDomain("licenses", "package copyright files (highly redundant)", _licence_files, _read, 1_000_000),
    CorpusDomain(
        "hexdump",
        "hex dumps of compiled Python modules (partly learnable noise)",
        _compiled_modules,
        _hex_text,
        500_000,
        clean=False,
    ),
    CorpusDomain("german", "German manual pages", _man_files("de"), _man_text, 500_000),
    CorpusDomain("french", "French manual pages", _man_files("fr"), _man_text, 200_000),
)


def _ordered(files: list[Path], seed: int) -> list[Path]:
    return sorted(files, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())


def _documents(text: str) -> Iterator[str]:
    """Pieces of about CHUNK_BYTES, split after a line."""
    piece: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        piece.append(line)
        size += len(line.encode("utf-8"))
        if size >= CHUNK_BYTES:
            yield "".join(piece)
            piece, size = [], 0
    if piece:
        yield "".join(piece)


def check_sources(domains: tuple[CorpusDomain, ...] = DOMAINS) -> list[str]:
    """One line per domain whose source has no file on this machine (every missing one at once)."""
    return [
        f"corpus: domain {d.name!r}: no source files on this machine ({d.description})"
        for d in domains
        if not d.files()
    ]


TOKENIZER_SAMPLE_BYTES = 200_000
"""Bytes of each domain (at most) the BPE tokenizer is trained on: the same for every domain, so the
small languages get tokens of their own."""


def build_corpus(
    out_dir: str | Path,
    scale: float = 1.0,
    seed: int = 0,
    vocab_size: int | None = 4096,
    progress: bool = True,
    domains: tuple[CorpusDomain, ...] = DOMAINS,
) -> dict[str, Any]:
    """Write each domain as ``<name>.jsonl`` (``{"text": ...}`` lines), ``dataset_info.json``, a BPE
    tokenizer of ``vocab_size`` tokens in ``tokenizer/`` (None: none) and ``manifest.json``; returns the
    manifest. ``scale`` multiplies every domain's byte budget."""
    errors = []
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 10:
        errors.append(f"scale: expected a number in (0, 10], got {scale!r}")
    if vocab_size is not None and (isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 257):
        errors.append(f"vocab_size: expected an integer ≥ 257, got {vocab_size!r}")
    if errors:
        raise ConfigError("\n".join(errors))
    missing = check_sources(domains)
    if missing:
        raise FileNotFoundError("\n".join(missing))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"seed": seed, "scale": scale, "chunk_bytes": CHUNK_BYTES, "domains": {}}
    total = sum(int(d.budget * scale) for d in domains)
    with progress_bar(
        total=total, enabled=progress, desc="arena corpus", unit="B", unit_scale=True, leave=False
    ) as bar:
        for d in domains:
            manifest["domains"][d.name] = _write_domain(d, out, int(d.budget * scale), seed, bar)
    digest = hashlib.sha256()
    for d in domains:
        digest.update((out / f"{d.name}.jsonl").read_bytes())
    manifest["corpus_sha256"] = digest.hexdigest()
    if vocab_size is not None:
        manifest["tokenizer"] = _tokenizer(out, domains, vocab_size)
    info = {d.name: {"file_name": f"{d.name}.jsonl", "columns": {"prompt": "text"}} for d in domains}
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def _tokenizer(out: Path, domains: tuple[CorpusDomain, ...], vocab_size: int) -> dict[str, Any]:
    from mixflow.data.bpe import train_bpe

    sample = []
    for d in domains:
        size = 0
        with open(out / f"{d.name}.jsonl", encoding="utf-8") as f:
            for line in f:
                if size >= TOKENIZER_SAMPLE_BYTES:
                    break
                text = json.loads(line)["text"]
                sample.append(text)
                size += len(text.encode("utf-8"))
    path = train_bpe(sample, out / "tokenizer", vocab_size)
    return {
        "dir": "tokenizer",
        "vocab_size": vocab_size,
        "sample_bytes_per_domain": TOKENIZER_SAMPLE_BYTES,
        "sha256": hashlib.sha256((path / "tokenizer.json").read_bytes()).hexdigest(),
    }


def _write_domain(d: CorpusDomain, out: Path, budget: int, seed: int, bar: Any) -> dict[str, Any]:
    used, skipped, written, documents = [], [], 0, 0
    tmp = out / f".{d.name}.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for path in _ordered(d.files(), seed):
            if written >= budget:
                break
            try:
                raw = path.read_bytes()
                text = d.text(path)
            except OSError as err:  # a dangling link, an unreadable file: named in the manifest
                skipped.append({"path": str(path), "why": str(err)})
                continue
            pieces = [p for p in _documents(text) if len(p.encode("utf-8")) >= MIN_DOCUMENT_BYTES]
            if not pieces:
                continue
            for piece in pieces:
                if written >= budget:
                    break
                f.write(json.dumps({"text": piece}, ensure_ascii=False) + "\n")
                size = len(piece.encode("utf-8"))
                written += size
                documents += 1
                bar.update(min(size, max(0, budget - written + size)))
            used.append({"path": str(path), "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()})
    os.replace(tmp, out / f"{d.name}.jsonl")
    if written < budget:
        bar.update(budget - written)
    return {
        "description": d.description,
        "clean": d.clean,
        "budget_bytes": budget,
        "text_bytes": written,
        "documents": documents,
        "files": used,
        "skipped": skipped,
    }
