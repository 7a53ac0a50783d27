"""The offline demo corpus: four distinct, deterministic domains."""

import json
import math
import re
from collections import Counter

import pytest

from mixflow.data.demo import DEMO_DOMAINS, build_demo_corpus
from mixflow.data.sources import read_documents, sources_from_dataset_info

CAP = 20_000
ARITHMETIC = re.compile(r"^(\d+)([+\-*])(\d+)=(\d+)$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    paths = build_demo_corpus(out, max_bytes_per_domain=CAP, seed=0, progress=False)
    sources = sources_from_dataset_info(out, list(DEMO_DOMAINS))
    docs = {source.name: read_documents(source) for source in sources}
    return out, paths, docs


def _entropy_bits_per_byte(texts):
    counts = Counter(b for t in texts for b in t.encode("utf-8"))
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def test_files_and_dataset_info(corpus):
    out, paths, docs = corpus
    assert tuple(paths) == DEMO_DOMAINS
    info = json.loads((out / "dataset_info.json").read_text())
    for name in DEMO_DOMAINS:
        assert paths[name].is_file()
        assert out / info[name]["file_name"] == paths[name]
        size = sum(len(d.encode("utf-8")) for d in docs[name])
        assert CAP // 2 < size <= CAP
        assert all(docs[name])


def test_arithmetic_lines_are_correct(corpus):
    lines = [line for doc in corpus[2]["arithmetic"] for line in doc.split("\n")]
    assert len(lines) > 100
    for line in lines:
        a, op, b, result = ARITHMETIC.match(line).groups()
        expected = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert int(result) == expected


def test_domains_differ(corpus):
    docs = corpus[2]
    assert any("def " in d for d in docs["code"])
    assert any("import " in d for d in docs["code"])
    prose_words = re.findall(r"[A-Za-z]+", " ".join(docs["prose"]))
    assert len(prose_words) > 1000
    assert _entropy_bits_per_byte(docs["random"]) > 6.0
    assert _entropy_bits_per_byte(docs["random"]) > _entropy_bits_per_byte(docs["prose"]) + 1.0
    assert not any(ARITHMETIC.match(line) for d in docs["random"] for line in d.split("\n"))


def test_deterministic_for_a_seed(corpus, tmp_path):
    out, paths, _ = corpus
    again = build_demo_corpus(tmp_path, max_bytes_per_domain=CAP, seed=0, progress=False)
    for name in DEMO_DOMAINS:
        assert again[name].read_bytes() == paths[name].read_bytes()
    other = build_demo_corpus(tmp_path / "other", max_bytes_per_domain=CAP, seed=1, progress=False)
    assert other["arithmetic"].read_bytes() != paths["arithmetic"].read_bytes()
    assert other["random"].read_bytes() != paths["random"].read_bytes()


def test_bad_cap(tmp_path):
    with pytest.raises(ValueError, match="max_bytes_per_domain"):
        build_demo_corpus(tmp_path, max_bytes_per_domain=0, progress=False)
