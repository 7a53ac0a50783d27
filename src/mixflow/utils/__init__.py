"""Small plumbing shared by the layers above: collectives across ranks, crash-safe JSON files."""
