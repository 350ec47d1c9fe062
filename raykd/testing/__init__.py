"""Test-only helpers that production code installs from outside (never written into the training step)."""
