"""Per-sample losses from the training logits and the weighted objective of a micro-batch."""
