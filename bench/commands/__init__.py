"""The ``bench-*`` front doors (except ``bench-train``, :mod:`bench.cli`): each builds its
argparse parser, with ``--help`` and ``--version``, and imports its tool only after parsing, so
that asking for help needs no torch, pandas or Lightning. The work is in the tool's ``run``."""
