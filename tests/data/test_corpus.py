"""The arena corpus (`mixflow data corpus`): real text from files the machine ships, deterministic, with a
manifest naming every file, and every missing source or bad argument reported at once."""

import dataclasses
import json

import pytest

from mixflow.cli.main import main
from mixflow.data.corpus import DOMAINS, CorpusDomain, build_corpus, hexdump, roff_text


def test_roff_text_keeps_the_words_and_drops_the_markup():
    source = "\n".join(
        [
            '.\\" a comment',
            ".TH FAILLOG 8",
            ".de XX",
            "macro body, not text",
            "..",
            ".SH BESCHREIBUNG",
            "faillog \\- Examiner d\\*(Aq\\('echecs \\(`a z\\('ero, gr\\(:o\\(ss, \\fBgras\\fR \\(Fotexte\\(Fc \\[u00E9]",
            ".IP \\(bu 2",
            ".B \\-\\-all",
        ]
    )
    assert roff_text(source) == "BESCHREIBUNG\nfaillog - Examiner d'échecs à zéro, größ, gras «texte» é\n•\n--all"


def test_hexdump_has_xxds_layout():
    assert hexdump(b"AB\x00\xffmixflow-corpus!xyz", offset=32).splitlines() == [
        "00000020: 4142 00ff 6d69 7866 6c6f 772d 636f 7270  AB..mixflow-corp",
        "00000030: 7573 2178 797a                           us!xyz",
    ]


def _domains(root):
    files = {}
    for name, count in (("alpha", 6), ("beta", 2)):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            (folder / f"{i}.txt").write_text("\n".join(f"{name} line {i}.{j} " * 3 for j in range(80)))
        files[name] = folder
    return (
        CorpusDomain("alpha", "alpha files", lambda: sorted(files["alpha"].iterdir()), lambda p: p.read_text(), 12_000),
        CorpusDomain(
            "beta", "beta files", lambda: sorted(files["beta"].iterdir()), lambda p: p.read_text(), 3_000, clean=False
        ),
    )


def test_build_is_deterministic_within_budget_and_records_its_files(tmp_path):
    domains = _domains(tmp_path / "src")
    first = build_corpus(tmp_path / "a", vocab_size=300, progress=False, domains=domains)
    second = build_corpus(tmp_path / "b", vocab_size=300, progress=False, domains=domains)
    assert first["corpus_sha256"] == second["corpus_sha256"]
    assert (tmp_path / "a" / "alpha.jsonl").read_bytes() == (tmp_path / "b" / "alpha.jsonl").read_bytes()
    alpha, beta = first["domains"]["alpha"], first["domains"]["beta"]
    # a domain stops at the first document past its budget
    assert 12_000 <= alpha["text_bytes"] < 12_000 + 4096 + 200 and alpha["clean"] and not beta["clean"]
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in alpha["files"])
    texts = [json.loads(line)["text"] for line in (tmp_path / "a" / "alpha.jsonl").read_text().splitlines()]
    assert len(texts) == alpha["documents"] and all(t.startswith("alpha line") for t in texts)
    info = json.loads((tmp_path / "a" / "dataset_info.json").read_text())
    assert info["beta"] == {"file_name": "beta.jsonl", "columns": {"prompt": "text"}}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path / "a" / "tokenizer"), local_files_only=True)
    assert len(tok) == 300 and tok.decode(tok("beta line 1.2")["input_ids"]) == "beta line 1.2"
    # a dangling link is skipped and named, not a crash (a budget that reaches every file)
    (tmp_path / "src" / "alpha" / "9.txt").symlink_to(tmp_path / "nowhere.txt")
    everything = (dataclasses.replace(domains[0], budget=10**6),)
    again = build_corpus(tmp_path / "d", vocab_size=None, progress=False, domains=everything)
    assert [x["path"] for x in again["domains"]["alpha"]["skipped"]] == [str(tmp_path / "src" / "alpha" / "9.txt")]
    # the order files are taken in is a fixed function of their paths and the seed
    from pathlib import Path

    from mixflow.data.corpus import _ordered

    paths = [Path(f"/usr/share/man/man1/page{i}.1.gz") for i in range(30)]
    assert _ordered(paths, 0) == _ordered(list(reversed(paths)), 0) != _ordered(paths, 1)


def test_every_missing_source_and_bad_argument_is_reported_at_once(tmp_path):
    empty = tuple(CorpusDomain(n, f"{n} files", list, str, 10) for n in ("one", "two"))
    with pytest.raises(FileNotFoundError) as err:
        build_corpus(tmp_path, progress=False, domains=empty)
    assert str(err.value).splitlines() == [
        "corpus: domain 'one': no source files on this machine (one files)",
        "corpus: domain 'two': no source files on this machine (two files)",
    ]
    with pytest.raises(ValueError) as err:
        build_corpus(tmp_path, scale=0, vocab_size=12, domains=empty)
    assert len(str(err.value).splitlines()) == 2 and "scale" in str(err.value) and "vocab_size" in str(err.value)


def test_the_machines_corpus_has_seven_domains_of_different_sizes(tmp_path, capsys):
    assert main(["data", "corpus", str(tmp_path), "--scale", "0.01", "--vocab-size", "0", "--quiet"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    sizes = {name: d["text_bytes"] for name, d in manifest["domains"].items()}
    assert list(sizes) == [d.name for d in DOMAINS] and all(v > 0 for v in sizes.values())
    assert max(sizes.values()) >= 10 * min(sizes.values())
    assert [n for n, d in manifest["domains"].items() if not d["clean"]] == ["hexdump"]
    assert f"corpus sha256 {manifest['corpus_sha256']}" in capsys.readouterr().out
