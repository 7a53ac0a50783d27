"""The batch keys mixflow adds to a model batch, and the label value every loss skips."""

IGNORE_INDEX = -100
"""Label value that ``torch.nn.CrossEntropyLoss`` (and HF models) skip."""

DOMAIN_KEY = "domain_ids"
"""Batch key carrying each sample's domain index; integrations remove it before the model's forward."""

SAMPLE_KEY = "sample_ids"
"""Batch key carrying each sample's global row index (for per-example cached weights such as IMP's);
removed before the model's forward like :data:`DOMAIN_KEY`."""

MIXFLOW_KEYS = (DOMAIN_KEY, SAMPLE_KEY)
"""Batch keys that belong to mixflow, never to the model."""
