"""Integrations with training loops you do not own: the Hugging Face Trainer (``hf_trainer``).

A loop you own needs no integration: it calls :class:`~mixflow.engine.engine.StepEngine` directly
(``examples/plain_pytorch.py``).
"""
