"""Tokenizers: the byte-level tokenizer shipped with mixflow and an adapter for local HF ones."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mixflow.errors import ConfigError, DataError
from mixflow.utils.jsonlog import read_json

TOKENIZER_FILE = "mixflow_tokenizer.json"


@runtime_checkable
class TextTokenizer(Protocol):
    """The small interface the data pipeline needs from a tokenizer."""

    eos_token_id: int
    pad_token_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        """Token ids for ``text``, without special tokens."""
        ...


class ByteTokenizer:
    """UTF-8 byte tokenizer: ids 0..255 are bytes, then pad, bos and eos.

    It needs no files and no network, so the demo and the tests run anywhere.
    """

    pad_token_id = 256
    bos_token_id = 257
    eos_token_id = 258
    vocab_size = 259

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of ``text`` as ids; no special tokens are added."""
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """:meth:`encode` of each text, as uint8 arrays (no Python list per token)."""
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Text from ids, skipping special tokens; invalid UTF-8 becomes U+FFFD."""
        data = bytes(int(i) for i in ids if 0 <= int(i) < 256)
        return data.decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return self.vocab_size

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write ``mixflow_tokenizer.json`` into ``save_directory`` and return its path."""
        out_dir = Path(save_directory)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / TOKENIZER_FILE
        config = {
            "type": "byte",
            "vocab_size": self.vocab_size,
            "pad_token_id": self.pad_token_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
        }
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ByteTokenizer:
        """Load a tokenizer saved by :meth:`save_pretrained`."""
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} not found")
        config = read_json(path)
        if not isinstance(config, dict) or config.get("type") != "byte":
            raise DataError(f'{path}: field "type" must be "byte"')
        return cls()


class HFTokenizerAdapter:
    """Wraps a Hugging Face tokenizer in the :class:`TextTokenizer` interface."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ConfigError("tokenizer.eos_token_id: expected an EOS token for packing documents")
        self.eos_token_id: int = int(eos)
        pad = tokenizer.pad_token_id
        # Many causal-LM tokenizers (GPT-2, Llama) define no pad token; padded
        # positions are masked out of the loss anyway, so EOS is a safe filler.
        self.pad_token_id: int = int(pad) if pad is not None else self.eos_token_id
        # len() counts added tokens too, unlike the HF `vocab_size` attribute.
        self.vocab_size: int = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        """Token ids for ``text``, without special tokens."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """:meth:`encode` of each text in one call (a fast tokenizer encodes the batch in Rust)."""
        out = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
        return list(out["input_ids"])

    def decode(self, ids: Iterable[int]) -> str:
        """Text from ids, skipping special tokens."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def encode_batch(tokenizer: TextTokenizer, texts: list[str]) -> list[Any]:
    """Token ids of each text: the tokenizer's own ``encode_batch`` when it has one."""
    batch = getattr(tokenizer, "encode_batch", None)
    return batch(texts) if batch is not None else [tokenizer.encode(t) for t in texts]


def tokenizer_fingerprint(tokenizer: TextTokenizer) -> dict[str, Any]:
    """What decides a tokenizer's ids, for cache keys: its type, special ids, vocabulary size and,
    for a Hugging Face tokenizer, a hash of its full definition (vocabulary, merges, normaliser)."""
    import hashlib

    out: dict[str, Any] = {
        "type": type(tokenizer).__name__,
        "vocab_size": int(tokenizer.vocab_size),
        "eos_token_id": int(tokenizer.eos_token_id),
    }
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None:
        backend = getattr(inner, "backend_tokenizer", None)
        definition = backend.to_str() if backend is not None else json.dumps(sorted(inner.get_vocab().items()))
        out["definition_sha256"] = hashlib.sha256(definition.encode("utf-8")).hexdigest()
        template = getattr(inner, "chat_template", None)  # decides instruction rows
        if template:
            out["chat_template_sha256"] = hashlib.sha256(str(template).encode("utf-8")).hexdigest()
    return out


def load_tokenizer(path: str | None) -> ByteTokenizer | HFTokenizerAdapter:
    """Load a tokenizer: ``None``/``"byte"`` or a saved byte tokenizer, else a local HF tokenizer.

    Never downloads: HF tokenizers are loaded with ``local_files_only=True``.
    """
    if path is None or path == "byte":
        return ByteTokenizer()
    directory = Path(path).expanduser()
    if (directory / TOKENIZER_FILE).is_file():
        return ByteTokenizer.from_pretrained(directory)
    # A hub-style name ("org/model") may still resolve from the local HF cache,
    # but something written as a filesystem path must exist.
    looks_like_path = directory.is_absolute() or str(path).startswith((".", "~"))
    if looks_like_path and not directory.exists():
        raise FileNotFoundError(f"tokenizer path {path} not found")
    from transformers import AutoTokenizer

    try:
        hf_tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"tokenizer {path!r}: expected 'byte' or a local tokenizer directory ({first_line})"
        ) from None
    return HFTokenizerAdapter(hf_tokenizer)
