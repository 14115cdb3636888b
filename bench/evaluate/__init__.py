"""After-the-fact evaluation tools on finished runs: robustness to corruptions (``bench-robust``),
test-time augmentation (``bench-tta``) and MC-dropout (``bench-uncertainty``). Each loads its
runs through :mod:`bench.finished` and imports no other tool."""
