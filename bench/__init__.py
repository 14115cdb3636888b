"""medbench: benchmark CNN architectures on medical images.

The Python API (:mod:`bench.api`) is loaded on first use, so that ``import bench`` (which every
``bench-*`` command does) stays light::

    import bench
    run = bench.load_run("runs/<run_id>")
    probs = run.predict(images)
"""

__version__ = "0.1.0"

_API = ("train", "leaderboard", "load_run", "Run")


def __getattr__(name: str):
    if name in _API:
        from bench import api  # on first use: keeps `import bench` free of torch and pandas

        return getattr(api, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
