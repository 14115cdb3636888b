"""Speed benchmarks: runners (harness, raw loop, official pipeline), projection, profiling."""
