"""Integrations with training loops: the Hugging Face Trainer and a plain PyTorch loop."""
