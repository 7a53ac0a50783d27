"""Manual pages as text: the readable words of roff source (the language ``man`` pages are written
in), with layout macros dropped and character escapes resolved; used by the arena corpus
(:mod:`mixflow.data.corpus`).
"""

from __future__ import annotations

import re
import unicodedata

# roff, the manual pages' markup: macros whose arguments are text, and the escapes of common characters
_TEXT_MACROS = {
    "SH",
    "SS",
    "B",
    "I",
    "BR",
    "BI",
    "IB",
    "RB",
    "IR",
    "RI",
    "SM",
    "SB",
    "IP",
    "TP",
    "Nm",
    "Nd",
    "Sh",
    "Ss",
    "Ar",
    "Fl",
    "Op",
    "It",
    "Dq",
    "Pa",
    "Xr",
    "Em",
    "Sy",
    "Li",
    "Cm",
    "Ql",
    "UR",
    "MT",
    "OP",
    "SY",
}
_ESCAPES = {
    "(em": "—",
    "(en": "–",
    "(aq": "'",
    "(lq": "“",
    "(rq": "”",
    "(dq": '"',
    "(bu": "•",
    "(co": "©",
    "(mi": "−",
    "(ga": "`",
    "(ti": "~",
    "(ha": "^",
    "(Fo": "«",
    "(Fc": "»",
    "(oq": "‘",
    "(cq": "’",
}
_ESCAPES.update({"(ss": "ß", "(Bq": "„", "(bq": "‚", "*(Aq": "'", "*(lq": "“", "*(rq": "”"})
#: roff's accent prefixes and the combining marks they put on the next letter (\('e is é)
_ACCENTS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", ":": "\u0308", "~": "\u0303", ",": "\u0327", "o": "\u030a"}
_ESCAPE = re.compile(
    r"\\(\(..|\[[^\]]*\]|[fn]\(..|[fn]\[[^\]]*\]|[fn].|s[+-]?\d|\*\(..|\*\[[^\]]*\]|\*.|\$\d|[-e&c ~|^0%:'`\"])"
)


def _unescape(match: re.Match[str]) -> str:
    esc = match.group(1)
    if esc.startswith("[") and len(esc) > 2:
        esc = f"({esc[1:-1]}"
    if re.fullmatch(r"\(u[0-9A-Fa-f]{4,5}", esc):  # \[u00E9]: a code point
        return chr(int(esc[2:], 16))
    if esc in _ESCAPES:
        return _ESCAPES[esc]
    if len(esc) == 3 and esc[0] == "(" and esc[1] in _ACCENTS and esc[2].isalpha():
        return unicodedata.normalize("NFC", esc[2] + _ACCENTS[esc[1]])
    return {"-": "-", "e": "\\", " ": " ", "~": " ", "0": " ", "'": "'", "`": "`"}.get(esc, "")


def roff_text(source: str) -> str:
    """The readable text of a manual page's roff source: comments and layout macros dropped, the
    arguments of text macros kept, font and character escapes resolved."""
    lines: list[str] = []
    defining = False
    for raw in source.splitlines():
        line = raw.split('\\"', 1)[0] if '\\"' in raw else raw
        if defining:  # the body of a macro definition (.de NAME ... ..) is not text
            defining = line.strip() != ".."
            continue
        if line.startswith((".", "'")):
            parts = line[1:].strip().split(None, 1)
            if parts and parts[0] in ("de", "de1", "am", "ig"):
                defining = True
            if not parts or parts[0] not in _TEXT_MACROS or len(parts) < 2:
                continue
            line = parts[1].replace('"', "")
            if parts[0] in ("IP", "TP"):  # a trailing number is the indentation, not text
                line = re.sub(r"\s+\d+(\.\d+)?[mnvi]?$", "", line)
        line = _ESCAPE.sub(_unescape, line).rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip()
