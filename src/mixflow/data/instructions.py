"""Instruction (SFT) data: LLaMA-Factory's ``alpaca`` and ``sharegpt`` formats, rendered to token
ids with a target mask (the response tokens) by the tokenizer's chat template, or by a plain
template when it has none.

A record becomes a conversation ``[{"role": system|user|assistant, "content": str}, ...]``:

- ``alpaca``: ``system`` (optional), then each ``history`` pair ``[user, assistant]``, then the user
  turn ``prompt`` + "\\n" + ``query`` (``query`` only when non-empty) and the assistant's ``response``;
- ``sharegpt``: the ``messages`` column's turns, their role read from ``role_tag`` and mapped by the
  ``*_tag`` values (a system turn only first, then user and assistant alternating), plus the
  ``system`` column when given.

Every assistant turn is a target (LLaMA-Factory's default, ``mask_history: false``); everything
else is masked with -100, so the loss and every per-domain statistic count response tokens only.
The plain template (tokenizers without ``chat_template``, the byte tokenizer) is
``System: {s}\\n`` · ``User: {u}\\nAssistant: `` · ``{a}<eos>`` · ``\\n`` between turns, with the
targets exactly ``{a}<eos>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixflow.errors import DataError

#: formatting → its columns (LLaMA-Factory's names) with their defaults (None: not read).
COLUMNS: dict[str, dict[str, str | None]] = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "system": None, "history": None},
    "sharegpt": {"messages": "conversations", "system": None},
}
#: sharegpt tags and LLaMA-Factory's defaults.
TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "system_tag": "system",
    "observation_tag": "observation",
    "function_tag": "function_call",
}
#: Columns LLaMA-Factory knows that mixflow does not train on (never silently dropped).
UNSUPPORTED_COLUMNS = {
    "tools": "tool descriptions",
    "images": "images",
    "videos": "videos",
    "audios": "audio",
    "chosen": "preference pairs",
    "rejected": "preference pairs",
    "kto_tag": "KTO labels",
}
#: A column mapping with any of these keys (besides prompt) is instruction data, not plain text.
INSTRUCTION_KEYS = ("query", "response", "system", "history")


@dataclass(frozen=True)
class Formatting:
    """How a domain's records become conversations."""

    kind: str
    """``alpaca`` or ``sharegpt``."""
    columns: dict[str, str] = field(default_factory=dict)
    """LLaMA-Factory column name → the field of the file (only those read)."""
    tags: dict[str, str] = field(default_factory=dict)
    """sharegpt tags (defaults filled in)."""

    def fields(self) -> tuple[list[str], list[str]]:
        """(required fields, optional fields) of a record."""
        if self.kind == "alpaca":
            required = [self.columns["prompt"], self.columns["response"]]
        else:
            required = [self.columns["messages"]]
        optional = [v for k, v in self.columns.items() if v not in required]
        return required, optional


def formatting_of(
    kind: str | None, columns: Mapping[str, Any] | None, tags: Mapping[str, Any] | None, where: str
) -> Formatting | None:
    """The instruction formatting an entry asks for, or None for plain text. ``where`` names the
    entry in errors. A column, tag or formatting mixflow does not support is an error."""
    columns = dict(columns or {})
    if kind is None:
        kind = "alpaca" if any(k in columns for k in INSTRUCTION_KEYS) else None
    if kind is None:
        if tags:
            raise DataError(f"{where}: tags: only sharegpt formatting has tags")
        return None
    if kind not in COLUMNS:
        raise DataError(f"{where}: formatting: {kind!r} is not supported; expected one of {', '.join(COLUMNS)}")
    for key, value in columns.items():
        if key in UNSUPPORTED_COLUMNS:
            raise DataError(
                f"{where}: columns.{key}: {UNSUPPORTED_COLUMNS[key]} are not supported by mixflow; remove the column"
            )
        if key not in COLUMNS[kind]:
            raise DataError(f"{where}: columns.{key}: not a {kind} column; expected some of {', '.join(COLUMNS[kind])}")
        if not isinstance(value, str):
            raise DataError(f"{where}: columns.{key}: expected a field name (string), got {value!r}")
    chosen = {k: v for k, v in {**COLUMNS[kind], **columns}.items() if v is not None}
    out_tags: dict[str, str] = {}
    if kind == "sharegpt":
        for key, value in (tags or {}).items():
            if key not in TAGS:
                raise DataError(f"{where}: tags.{key}: not a sharegpt tag; expected some of {', '.join(TAGS)}")
            if not isinstance(value, str):
                raise DataError(f"{where}: tags.{key}: expected a string, got {value!r}")
        out_tags = {**TAGS, **(tags or {})}
    elif tags:
        raise DataError(f"{where}: tags: only sharegpt formatting has tags")
    return Formatting(kind, chosen, out_tags)


def conversation(fmt: Formatting, record: Mapping[str, Any], where: str) -> list[dict[str, str]]:
    """The conversation of one record (see the module docstring); errors name ``where``."""
    c = fmt.columns
    system = record.get(c["system"]) if "system" in c else None
    if system is not None and not isinstance(system, str):
        raise DataError(f"{where}: field {c['system']!r} must be a string")
    turns: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    if fmt.kind == "alpaca":
        history = record.get(c["history"]) if "history" in c else None
        for i, pair in enumerate(history or []):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise DataError(f"{where}: field {c['history']!r} item {i}: expected [user, assistant] strings")
            turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        prompt, query, response = (
            record[c["prompt"]],
            record.get(c["query"]) if "query" in c else None,
            record[c["response"]],
        )
        for name, value in ((c["prompt"], prompt), (c["response"], response)):
            if not isinstance(value, str):
                raise DataError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
        if query is not None and not isinstance(query, str):
            raise DataError(f"{where}: field {c['query']!r} must be a string")
        user = prompt + ("\n" + query if query else "")
        return turns + [{"role": "user", "content": user}, {"role": "assistant", "content": response}]
    return turns + _sharegpt_turns(fmt, record[c["messages"]], bool(system), where)


def _sharegpt_turns(fmt: Formatting, messages: Any, has_system: bool, where: str) -> list[dict[str, str]]:
    t = fmt.tags
    roles = {t["user_tag"]: "user", t["assistant_tag"]: "assistant", t["system_tag"]: "system"}
    unsupported = {t["observation_tag"], t["function_tag"]}
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field {fmt.columns['messages']!r}: expected a non-empty list of turns")
    out: list[dict[str, str]] = []
    for i, turn in enumerate(messages):
        if not isinstance(turn, Mapping) or t["role_tag"] not in turn or t["content_tag"] not in turn:
            raise DataError(f"{where}: turn {i}: expected an object with {t['role_tag']!r} and {t['content_tag']!r}")
        tag, content = turn[t["role_tag"]], turn[t["content_tag"]]
        if tag in unsupported:
            raise DataError(f"{where}: turn {i}: role {tag!r} (tool calls) is not supported by mixflow")
        if tag not in roles:
            raise DataError(f"{where}: turn {i}: role {tag!r}; expected one of {', '.join(map(repr, roles))}")
        if not isinstance(content, str):
            raise DataError(f"{where}: turn {i}: {t['content_tag']!r} must be a string")
        role = roles[tag]
        if role == "system":
            if i != 0 or has_system:
                raise DataError(f"{where}: turn {i}: a system turn may only come first")
            out.append({"role": role, "content": content})
            continue
        expected = "user" if len([x for x in out if x["role"] != "system"]) % 2 == 0 else "assistant"
        if role != expected:
            raise DataError(
                f"{where}: turn {i}: expected a {expected} turn (user and assistant alternate), got {tag!r}"
            )
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last turn must be the assistant's")
    return out


def render(tokenizer: Any, turns: list[dict[str, str]], where: str) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, target mask) of a conversation: the tokenizer's chat template when it has one,
    else the plain template."""
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and getattr(inner, "chat_template", None):
        return _render_template(inner, turns, where)
    ids: list[int] = []
    mask: list[bool] = []

    def add(text: str, target: bool) -> None:
        piece = list(tokenizer.encode(text)) if text else []
        ids.extend(piece)
        mask.extend([target] * len(piece))

    for i, turn in enumerate(turns):
        if turn["role"] == "system":
            add(f"System: {turn['content']}\n", False)
        elif turn["role"] == "user":
            add(
                ("\n" if i and turns[i - 1]["role"] == "assistant" else "") + f"User: {turn['content']}\nAssistant: ",
                False,
            )
        else:
            add(turn["content"], True)
            ids.append(int(tokenizer.eos_token_id))
            mask.append(True)
    return np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool)


def _render_template(hf: Any, turns: list[dict[str, str]], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Render with the chat template; an assistant turn's target span is what its text adds to the
    conversation before it (rendered with the generation prompt), found by character offsets."""
    full = hf.apply_chat_template(turns, tokenize=False)
    spans = []
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        before = hf.apply_chat_template(turns[:i], tokenize=False, add_generation_prompt=True)
        upto = hf.apply_chat_template(turns[: i + 1], tokenize=False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise DataError(
                f"{where}: the tokenizer's chat template does not render a conversation as the "
                "continuation of its prefix, so its response tokens cannot be located"
            )
        spans.append((len(before), len(upto)))
    enc = hf(full, add_special_tokens=False, return_offsets_mapping=True)
    starts = np.asarray([s for s, _ in enc["offset_mapping"]], dtype=np.int64)
    mask = np.zeros(len(starts), dtype=bool)
    for a, b in spans:
        mask |= (starts >= a) & (starts < b)
    return np.asarray(enc["input_ids"], dtype=np.int64), mask
