"""Recipes: build a run from its config and train it (``mixflow train``, the DoReMi pipeline,
the IMP checkers)."""
