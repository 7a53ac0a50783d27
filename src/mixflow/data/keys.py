"""The batch keys mixflow adds to a model batch, and the label value every loss skips."""

IGNORE_INDEX = -100
"""Label value that ``torch.nn.CrossEntropyLoss`` (and HF models) skip."""

DOMAIN_KEY = "domain_ids"
"""Batch key carrying each sample's domain index; integrations remove it before the model's forward."""

SAMPLE_KEY = "sample_ids"
"""Batch key carrying each sample's global row index (for per-example cached weights such as IMP's);
removed before the model's forward like :data:`DOMAIN_KEY`."""

PROB_KEY = "sampling_probs"
"""Batch key carrying each sample's p_d: the sampling weight of its domain in the plan its batch was
drawn from (the plan travels with the batch, so importance weights q_d / p_d never look it up)."""

MIXFLOW_KEYS = (DOMAIN_KEY, SAMPLE_KEY, PROB_KEY)
"""Batch keys that belong to mixflow, never to the model."""
