"""The ``mixflow train`` configuration: typed dataclasses, one docstring per field.

Mixing keys follow the DoReMi pipeline's user documentation (the keys LLaMA-Factory-style trainers use): ``train_type``, ``components_cfg_file``,
``component_name``, ``mixture_sample_rule``, ``init_mixture_proportions``, ``static_mix``,
``warmup_step``, ``update_step``, ``update_times``. Model and training keys follow Hugging Face
``TrainingArguments`` names and are passed through to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mixflow.algorithms.params import AlgorithmParams, bounded


@dataclass
class DomainConfig:
    """One data domain given inline (alternative to ``dataset`` + ``dataset_dir``)."""

    name: str
    """Domain name used in logs, metrics and plots."""
    path: str | list[str]
    """A file (.jsonl/.json/.txt, optionally .gz/.zst, or .parquet), a folder of them, a glob pattern, a
    ``datasets.save_to_disk`` directory, or a list of any of these."""
    text_field: str | None = None
    """Field (column) holding the text; default ``columns.prompt``, else ``text`` (plain text only)."""
    formatting: Literal["alpaca", "sharegpt"] | None = None
    """Instruction data in LLaMA-Factory's alpaca or sharegpt format (rendered with the chat template,
    prompts masked); None: plain text (or alpaca when ``columns`` name instruction columns)."""
    columns: dict[str, str] | None = None
    """LLaMA-Factory column roles → fields, e.g. ``{prompt: instruction, query: input, response: output}``."""
    tags: dict[str, str] | None = None
    """sharegpt: role and content tags (LLaMA-Factory's names and defaults)."""
    format: Literal["megatron", "numpy", "mixflow"] | None = None
    """Already tokenized, read in place: a Megatron prefix (PREFIX.bin + PREFIX.idx), a numpy token
    array (.npy, or a raw file with ``dtype``), a mixflow cache entry; None: from the path (text otherwise)."""
    dtype: str | None = None
    """A raw numpy token file's integer dtype (e.g. uint16)."""
    eos_id: int | None = None
    """Where a numpy token stream's documents end (default: the tokenizer's EOS id)."""


@dataclass
class ComponentConfig:
    """An algorithm or weighter and its parameters (an entry of the components file's sections)."""

    name: str
    """Registered name (``mixflow list`` shows them)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Parameters of the component; unknown ones are errors."""


@dataclass(frozen=True)
class ResolvedComponent:
    """The algorithm or weighter a run uses, chosen by ``train_type`` and the component keys, with
    its params built and validated once, at load."""

    name: str
    """Registered name."""
    params: AlgorithmParams
    """Typed, validated parameters (handed to the algorithm as they are)."""
    section: str
    """Where it was configured, for messages (e.g. ``mixers.doremi`` or ``component``)."""


@dataclass
class MixingConfig:
    """How domains are sampled and weighted (the seed's keys)."""

    train_type: Literal["static", "dynamic_mix", "dynamic_weight"] = "dynamic_mix"
    """static: a fixed mixture; dynamic_mix: a domain-level algorithm from the ``mixers`` section;
    dynamic_weight: a sample weighter from the ``weighters`` section on top of a static mixture."""
    components_cfg_file: str | None = None
    """YAML file with ``mixers:`` and ``weighters:`` sections, each entry ``{name, params}``."""
    component_name: str = "static"
    """Entry of the components file to use (of ``mixers`` or ``weighters``, by ``train_type``)."""
    component: ComponentConfig | None = None
    """The component given inline instead of through ``components_cfg_file``."""
    mixture_sample_rule: Literal["mixture", "stratified", "uniform", "temperature", "unimax"] = "mixture"
    """Initial sampling weights: mixture = init_mixture_proportions; stratified ∝ domain sizes;
    uniform; temperature ∝ size^(1/mixture_temperature); unimax = as uniform as the run's rows
    (max_steps × global batch) allow with no domain repeated more than unimax_max_epochs times."""
    mixture_temperature: float = 1.0
    """τ of the temperature rule (1 = stratified, larger flattens towards uniform)."""
    unimax_max_epochs: float = 1.0
    """UniMax's cap (Chung et al. 2023): the most epochs of a domain its proportions plan for. The
    proportions only plan it; max_epochs enforces a cap."""
    init_mixture_proportions: list[float] | None = None
    """Initial proportions, one per domain (normalised); null with rule mixture means uniform."""
    static_mix: bool = False
    """true: the weights never change (no updates); requires the static component."""
    warmup_step: int = 0
    """Optimizer steps with the initial weights before the first update."""
    update_step: int = 100
    """Optimizer steps between two updates (and weights-log lines)."""
    update_times: int = -1
    """Number of updates; -1: until training ends."""
    mixture_plan_horizon: int = 1
    """The weights of the update after step s apply from global batch s + this (the Trainer's own
    read-ahead is one batch). It must cover the DataLoader's read-ahead, 1 + dataloader_num_workers ×
    dataloader_prefetch_factor; for a given value the weight trajectory is the same for any number of
    workers (with workers, set it to that read-ahead or more)."""
    domain_prior: list[float] | None = None
    """π: importance of each domain in the objective (normalised); null = uniform."""
    on_exhausted: Literal["reshuffle", "stop"] = "reshuffle"
    """When a domain runs out of rows: reshuffle it and continue, or stop the stream."""
    max_epochs: float | list[float | None] | dict[str, float] | None = None
    """The most times a domain's training rows are seen (one number for all, one per domain with
    null for none, or {domain: epochs}): a domain that reaches it leaves the mixture and the others
    renormalise; the stream ends when none of p's domains is left. null: no cap (on_exhausted)."""
    objective_normalization: Literal["domain", "token"] = "domain"
    """Importance-mode algorithms (DoReMi's proxy, FGLS, ERMA, VA): domain = each domain's token sum divided by
    its own tokens in the step, so every domain counts exactly q_i whatever its row lengths; token = all the step's
    tokens (the old behaviour, biased towards long-row domains). Objective mode ignores it."""


@dataclass
class DataConfig:
    """Where the domains come from and how they are tokenized."""

    dataset: list[str] | None = None
    """Domain names in ``<dataset_dir>/dataset_info.json`` (a list or a comma-separated string)."""
    dataset_dir: str = "data"
    """Directory holding ``dataset_info.json`` and the files it names."""
    eval_dataset: list[str] | None = None
    """Evaluation sets of their own for a language model (LLaMA-Factory's key; names in
    ``<dataset_dir>/dataset_info.json`` other than the training domains', a list or a comma-separated
    string): each is evaluated whole, beside the domains' held-out rows (``val_size``), and reported
    as ``eval_<name>_loss``; the algorithms keep reading the held-out rows only."""
    domains: list[DomainConfig] | None = None
    """Domains given inline: ``[{name, path, text_field}]``."""
    cutoff_len: int = 1024
    """Sequence length: packed blocks (or truncated documents) of this many tokens."""
    packing: bool | None = None
    """Concatenate documents (EOS between them) and cut into full blocks; false: one row per document.
    Default: true for text domains, false for instruction domains (true packs whole examples)."""
    packed_attention: Literal["causal", "document"] = "causal"
    """causal: a packed row is one causal sequence (a token sees the earlier documents of its row);
    document: each document attends to itself only, positions restarting after every EOS (position ids
    from which transformers builds the mask; for the models whose masks it builds: Llama, Mistral,
    Qwen2, Gemma, ...)."""
    stage: Literal["pt", "sft"] | None = None
    """LLaMA-Factory's training stage, checked against the domains: pt, every domain is plain text;
    sft, every domain is instruction data (alpaca / sharegpt). Unset: any mix of the two."""
    val_size: float = 0.0
    """Held-out rows per domain: a fraction in [0, 1) or a count >= 1 (evaluated per domain)."""
    max_samples: int | None = None
    """Read at most this many documents per domain (quick experiments)."""
    tokenized_dir: str | None = None
    """Directory of the tokenization cache (token arrays on disk, one entry per domain and
    fingerprint); default: ``<dataset_dir>/tokenized`` with ``dataset``, else a ``tokenized``
    folder beside the inline domains' files (their common parent directory)."""
    overwrite_cache: bool = False
    """Rebuild the tokenization cache entries of this run's domains even when they match."""
    preprocessing_num_workers: int | None = None
    """Processes that tokenize (a fresh cache entry only); default 1, the fast tokenizer's own
    threads."""
    tokenizer: str | None = None
    """'byte' (the shipped byte-level tokenizer) or a local tokenizer directory; default: the
    tokenizer of ``model_name_or_path`` when it has one, else byte."""
    task: Literal["causal_lm", "classification"] = "causal_lm"
    """causal_lm: next-token prediction on packed or per-document rows; classification: one text and
    one label per example (``label_field``), a sequence classifier, loss and accuracy per set."""
    label_field: str = "label"
    """classification: field (column) holding each example's label (integers 0..C-1 or strings)."""
    eval_data: str | list[str] | None = None
    """classification: extra labelled file(s) evaluated at the end, each reported under its file
    name (e.g. a clean test set), with loss and accuracy."""
    real_data: str | list[str] | None = None
    """classification: the small real labelled set P′ that ``mixflow checkers`` trains IMP/DIMP's
    quality checker on (file path or list of paths)."""


@dataclass
class ModelConfig:
    """Which model trains."""

    model_name_or_path: str | None = None
    """A local Hugging Face model directory (nothing is downloaded)."""
    model_config: dict[str, Any] | None = None
    """A from-scratch model: keyword arguments of ``AutoConfig.for_model`` (``model_type`` required);
    ``vocab_size`` defaults to the tokenizer's."""
    num_labels: int | None = None
    """classification: number of classes; default: inferred from the training labels."""
    train_from_scratch: bool = False
    """With model_name_or_path: start from that directory's config with freshly initialised weights
    (LLaMA-Factory's key); its weights are not loaded."""
    finetuning_type: str = "full"
    """``full``: every weight trains; ``lora``: LoRA adapters through peft (``pip install
    'mixflow[lora]'``), the base weights frozen. LLaMA-Factory's key, as the ``lora_*`` keys below."""
    lora_rank: int = bounded(8, ge=1)
    """lora: the adapters' rank r."""
    lora_alpha: int | None = bounded(None, gt=0, why="null: 2 × lora_rank")
    """lora: the scale α (the update is α/r · BA); default 2 × lora_rank."""
    lora_dropout: float = bounded(0.0, ge=0, lt=1)
    """lora: dropout on the adapters' input, in [0, 1)."""
    lora_target: str = "all"
    """lora: the modules that get an adapter, comma-separated (e.g. ``q_proj,v_proj``); ``all``: every
    linear layer but the output head."""
    additional_target: str | None = None
    """lora: modules trained in full beside the adapters and saved with them, comma-separated (e.g.
    ``lm_head``)."""


@dataclass
class SafetyConfig:
    """What a run may do to earlier runs, and when it gives up."""

    overwrite_output_dir: bool = False
    """true: a new (non-resumed) run into a directory holding a previous run's logs or checkpoints
    moves them into ``<output_dir>/previous-<n>/`` (nothing is deleted); false: that is an error."""
    max_nonfinite_steps: int = 10
    """Stop after this many consecutive optimizer steps with a non-finite training loss (a diverged
    run), keep the last finite checkpoint, and say so in ``mixflow_results.json``; 0: never stop."""


@dataclass
class RunConfig:
    """Everything ``mixflow train`` reads. ``training`` holds the TrainingArguments keys."""

    mixing: MixingConfig
    data: DataConfig
    model: ModelConfig
    training: dict[str, Any]
    """Hugging Face TrainingArguments keys (``output_dir``, ``per_device_train_batch_size``, ...)."""
    source: str = "<dict>"
    """Where the configuration was read from (for messages)."""
    algorithm: ResolvedComponent | None = None
    """The domain algorithm (set by the loader; ``static`` for a plain mixture)."""
    weighter: ResolvedComponent | None = None
    """The sample weighter (``train_type: dynamic_weight``), or None."""
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    """What the run may do to earlier runs, and when it gives up."""


def domain_names(run: RunConfig) -> list[str]:
    """The domain names in order, from ``domains`` or ``dataset``."""
    if run.data.domains is not None:
        return [d.name for d in run.data.domains]
    return list(run.data.dataset or [])
