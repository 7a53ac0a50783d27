"""The arena's pieces that need no training: the recommendation (never a baseline, exactly the keys a
method was measured with), the up-front check of every method's config, the train/validation/test split."""

import json
import os

import pytest
import yaml

from mixflow.bench.arena_data import split_domains
from mixflow.bench.arena_recommend import recommend, recommendation_yaml
from mixflow.bench.stats import compare
from mixflow.data.sources import DomainSource


def _vs_best(method, diffs):
    return compare(method, [1.0 + d for d in diffs], "best static", [1.0] * len(diffs), "target loss", "lower")


def test_a_baseline_never_becomes_the_recommended_method():
    comparisons = [_vs_best("unimax", [-0.2, -0.21, -0.19]), _vs_best("odm", [0.01, -0.02, 0.0])]
    rec = recommend(["a", "b"], [0.25, 0.75], comparisons, methods=["odm"])
    assert rec["method"] == "static" and rec["mixture"] == {"a": 0.25, "b": 0.75} and "odm no different" in rec["why"]
    rec = recommend(["a", "b"], [0.25, 0.75], [_vs_best("odm", [-0.1, -0.12, -0.11])], methods=["odm"])
    assert rec["method"] == "odm" and "lowers the target loss below the best static mixture by 0.11" in rec["why"]


def test_the_yaml_holds_exactly_the_keys_the_method_was_measured_with():
    rec = {"method": "odm", "mixture": {"a": 0.5, "b": 0.5}, "why": "odm wins"}
    keys = yaml.safe_load(recommendation_yaml(["a", "b"], rec, {"component": {"name": "odm"}, "update_step": 1}))
    assert keys == {"dataset": "a,b", "train_type": "dynamic_mix", "component": {"name": "odm"}, "update_step": 1}
    static = {"method": "static", "mixture": {"a": 0.3, "b": 0.7}, "why": "nothing beats it"}
    keys = yaml.safe_load(recommendation_yaml(["a", "b"], static, {}))
    assert keys["train_type"] == "static" and keys["init_mixture_proportions"] == [0.3, 0.7]
    doremi = recommendation_yaml(
        ["a", "b"],
        {"method": "doremi", "mixture": {}, "why": "w"},
        {"reference": {}, "proxy": {"update_step": 5}, "doremi": {}},
    )
    assert "mixflow doremi THIS_FILE" in doremi and yaml.safe_load(doremi)["proxy"] == {"update_step": 5}


def test_every_domain_keeps_a_validation_and_a_test_document_and_the_split_is_fixed(tmp_path):
    for name, n in (("big", 45), ("tiny", 3)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"{name} {i}"}) + "\n" for i in range(n)))
    sources = [DomainSource(n, str(tmp_path / f"{n}.jsonl")) for n in ("big", "tiny")]
    split = split_domains(sources, tmp_path / "split")
    texts = {
        (d, part): [json.loads(x)["text"] for x in (folder / f"{d}.jsonl").read_text().splitlines()]
        for d in ("big", "tiny")
        for part, folder in split._asdict().items()
    }
    assert texts["big", "test"] == ["big 19", "big 39"] and texts["big", "val"] == ["big 9", "big 29"]
    assert texts["big", "train"] == [f"big {i}" for i in range(45) if i % 20 not in (9, 19)]  # in order, all kept
    assert (texts["tiny", "train"], texts["tiny", "val"], texts["tiny", "test"]) == (["tiny 0"], ["tiny 1"], ["tiny 2"])
    assert json.loads((split.val / "dataset_info.json").read_text())["tiny"]["file_name"] == "tiny.jsonl"
    assert split_domains(sources, tmp_path / "again") == tuple(tmp_path / "again" / p for p in ("train", "val", "test"))
    assert (tmp_path / "again" / "test" / "big.jsonl").read_bytes() == (split.test / "big.jsonl").read_bytes()


def test_splitting_again_keeps_unchanged_files_so_their_token_cache_is_reused(tmp_path):
    for name, n in (("a", 30), ("b", 30)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"{name} {i}"}) + "\n" for i in range(n)))
    sources = [DomainSource(n, str(tmp_path / f"{n}.jsonl")) for n in ("a", "b")]
    split = split_domains(sources, tmp_path / "split")
    files = [folder / f"{d}.jsonl" for folder in split for d in ("a", "b")]
    for path in files:
        os.utime(path, ns=(1, 1))  # a time no rewrite would give back
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": f"changed {i}"}) + "\n" for i in range(30)))
    split_domains(sources, tmp_path / "split")
    assert all(p.stat().st_mtime_ns == 1 for p in files if p.name == "a.jsonl")
    assert all(p.stat().st_mtime_ns != 1 for p in files if p.name == "b.jsonl")
    assert "changed 0" in (split.train / "b.jsonl").read_text()
    assert not list((tmp_path / "split").rglob("*.tmp"))


def test_a_domain_too_small_to_split_is_named(tmp_path):
    for name, n in (("ok", 30), ("two", 2), ("one", 1)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"{name} {i}"}) + "\n" for i in range(n)))
    with pytest.raises(ValueError) as err:
        split_domains([DomainSource(n, str(tmp_path / f"{n}.jsonl")) for n in ("ok", "two", "one")], tmp_path / "s")
    assert str(err.value).splitlines() == [
        "domain 'two': 2 document(s); the arena splits documents into train, validation and test, so it needs at least 3",
        "domain 'one': 1 document(s); the arena splits documents into train, validation and test, so it needs at least 3",
    ]


def test_methods_that_cannot_run_are_named_before_anything_trains(tmp_path):
    from mixflow.bench.arena import Arena, method_spec
    from mixflow.bench.arena_runs import check_specs

    data = tmp_path / "d"
    data.mkdir()
    for name in ("a", "b", "c", "e"):
        (data / f"{name}.jsonl").write_text(
            "".join(json.dumps({"text": f"{name} {i} " * 40}) + "\n" for i in range(30))
        )
    (data / "dataset_info.json").write_text(json.dumps({n: {"file_name": f"{n}.jsonl"} for n in "abce"}))
    base = {
        "tokenizer": "byte",
        "cutoff_len": 32,
        "val_size": 0.1,
        "per_device_train_batch_size": 8,
        "max_steps": 20,
        "model_config": {
            "model_type": "llama",
            "hidden_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "intermediate_size": 64,
            "max_position_embeddings": 32,
        },
        "use_cpu": True,
    }
    arena = Arena(
        train_dir=data,
        test_dir=data,
        val_dir=data,
        domains=list("abce"),
        clean=list("abce"),
        tokens=dict.fromkeys("abce", 1),
        base=base,
        work=tmp_path / "w",
        seeds=2,
        jobs=1,
        swarm=2,
        methods=["odm", "pike", "va"],
    )
    with pytest.raises(ValueError) as err:
        check_specs([method_spec(arena, m, 0) for m in arena.methods])
    lines = str(err.value).splitlines()
    assert lines[0].startswith("arena: these runs cannot start")
    assert [line.split(":")[0] for line in lines[1:]] == ["pike", "va"] and "global batch of at least 9" in lines[1]


def _three_domain_arena(tmp_path):
    """An arena over three one-document domains of natural sizes 600, 300 and 100 tokens (nothing trains)."""
    from mixflow.bench.arena import Arena

    data = tmp_path / "d"
    data.mkdir()
    for name in "abc":
        (data / f"{name}.jsonl").write_text(json.dumps({"text": name}) + "\n")
    arena = Arena(
        train_dir=data,
        test_dir=data,
        val_dir=data,
        domains=list("abc"),
        clean=list("abc"),
        tokens={"a": 600, "b": 300, "c": 100},
        base={"max_steps": 10, "per_device_train_batch_size": 4, "cutoff_len": 8},
        work=tmp_path / "w",
        seeds=2,
        jobs=1,
        swarm=4,
        methods=[],
    )
    return arena


def test_the_best_static_mixture_is_the_swarm_member_measured_best_and_the_swarm_is_cached(tmp_path, monkeypatch):
    import numpy as np

    from mixflow.bench import arena as arena_module
    from mixflow.bench.arena import VAL_TARGET, search_best_static

    arena = _three_domain_arena(tmp_path)
    ran = []

    def fake_runs(specs, jobs, log, devices=0):  # the validation loss of a mixture: lowest at (0.2, 0.3, 0.5); the
        ran.extend(s.extra["name"] for s in specs)  # natural mixture (0.6, 0.3, 0.1) is lucky on its first seed
        return [
            {
                "extra": s.extra,
                "steps": 10,
                "seconds": 1.0,
                VAL_TARGET: float(np.abs(np.array(s.extra["mixture"]) - [0.2, 0.3, 0.5]).sum())
                - (1.0 if s.extra["name"] == "natural" else 0.0),
            }
            for s in specs
        ]

    monkeypatch.setattr(arena_module, "run_specs", fake_runs)
    found = search_best_static(arena)
    assert ran[:4] == ["uniform", "natural", "temperature", "unimax"] and ran[9 - 1] == "loglinear proposal"
    assert "natural (seed 1)" in ran and "natural (seed 2)" in ran  # the lowest of one seed is measured again
    assert len(ran) == 4 + 4 + 1 + 3 * 2 and found["runs"] == 15
    members = {m["name"]: m for m in found["members"]}
    replicated = {n: m["replicated mean"] for n, m in members.items() if "replicated mean" in m}
    assert len(replicated) == 3 and replicated["natural"] == pytest.approx(members["natural"][VAL_TARGET] + 1 - 1 / 3)
    assert found["chosen"] == min(replicated, key=replicated.__getitem__) != "natural"  # measured on 3 seeds
    assert found["mixture"] == members[found["chosen"]]["mixture"]
    ran.clear()
    assert search_best_static(arena) == found and ran == []  # the cached swarm: nothing runs again


def test_a_best_static_mixture_that_is_a_baseline_reuses_its_runs_instead_of_training_them_again(tmp_path):
    from mixflow.bench.arena import BASELINES
    from mixflow.bench.arena_compare import _scoring_specs, _with_best_static_as

    arena = _three_domain_arena(tmp_path)
    chosen_baseline = {"chosen": "temperature", "mixture": arena.mixture("temperature")}
    chosen_member = {"chosen": "member 3", "mixture": [0.2, 0.3, 0.5]}
    assert [s.method for s in _scoring_specs(arena, chosen_baseline)] == [*BASELINES] * 2
    assert [s.method for s in _scoring_specs(arena, chosen_member)] == [*BASELINES, "best static"] * 2
    runs = {
        b: [{"method": b, "seed": s, "target loss": float(i + s)} for s in range(2)] for i, b in enumerate(BASELINES)
    }
    runs["odm"] = [{"method": "odm", "seed": s, "target loss": 9.0} for s in range(2)]
    out = _with_best_static_as(runs, "temperature")
    assert list(out) == [*BASELINES, "best static", "odm"]  # placed where its own runs would be
    assert [r["target loss"] for r in out["best static"]] == [r["target loss"] for r in runs["temperature"]]
    assert {r["method"] for r in out["best static"]} == {"best static"} and runs["temperature"][0][
        "method"
    ] == "temperature"


def test_search_arena_trains_a_best_static_baseline_as_that_baseline_so_lm_arenas_runs_serve(tmp_path, monkeypatch):
    from mixflow.bench import search_arena

    arena = _three_domain_arena(tmp_path)
    asked = {}

    def fake_runs(arena, mixtures):
        asked.update(mixtures)
        return {name: [{"method": name, "seed": s, "target loss": float(s)} for s in range(2)] for name in mixtures}

    monkeypatch.setattr(search_arena, "_runs", fake_runs)
    proposal = [0.1, 0.1, 0.8]
    runs = search_arena._mixture_runs(arena, {"chosen": "temperature", "mixture": [0.5, 0.3, 0.2]}, proposal)
    assert list(asked) == ["natural", "uniform", "temperature", search_arena.PROPOSAL]
    assert asked["temperature"] == arena.mixture("temperature")  # the baseline's own run config, reused
    assert list(runs) == ["natural", "uniform", "best static", search_arena.PROPOSAL]
    assert {r["method"] for r in runs["best static"]} == {"best static"}
    asked.clear()
    runs = search_arena._mixture_runs(arena, {"chosen": "member 2", "mixture": [0.5, 0.3, 0.2]}, proposal)
    assert list(asked) == ["natural", "uniform", "best static", search_arena.PROPOSAL]
    assert asked["best static"] == [0.5, 0.3, 0.2]
