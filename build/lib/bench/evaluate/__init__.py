"""Evaluations beyond accuracy: calibration, selective prediction, robustness to corruptions,
test-time augmentation and MC-dropout, on finished runs."""
