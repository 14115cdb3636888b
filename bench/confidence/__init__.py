"""Confidence of a trained classifier, computed at the end of every run and by the tools:
temperature scaling and reliability bins (:mod:`.calibration`), risk-coverage curves and AURC
(:mod:`.selective`). Library code below ``bench.job``: it imports no run, task or tool."""
