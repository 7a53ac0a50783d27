"""The step engine: per-micro-batch loss and statistics, per-step reductions, updates, logs, state."""
