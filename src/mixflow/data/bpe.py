"""Train a small byte-level BPE tokenizer offline (the ``tokenizers`` library) and save it as a
Hugging Face tokenizer directory that ``tokenizer: DIR`` in a config reads."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mixflow.errors import ConfigError

#: The one special token: the end of a document (packing separates documents with it).
EOS = "<|endoftext|>"


def train_bpe(texts: Iterable[str], out: str | Path, vocab_size: int) -> Path:
    """Train byte-level BPE with ``vocab_size`` tokens (EOS included) on ``texts``; save it to ``out``."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 257:
        raise ConfigError(f"vocab_size: expected an integer ≥ 257 (the 256 bytes and EOS), got {vocab_size!r}")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    # every byte is in the alphabet, so no text is ever out of vocabulary
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(texts, trainer=trainer)
    out = Path(out)
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS).save_pretrained(out)
    return out
