"""Data plumbing: the mixture sampler, tokenization and packing, the offline demo corpus."""
