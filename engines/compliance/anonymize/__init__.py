"""Deterministic anonymisation in place: rules, the per-kind batch targets, the resumable loop."""
