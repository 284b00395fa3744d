"""Binding, deciding, recording and waiting for each governed call."""
