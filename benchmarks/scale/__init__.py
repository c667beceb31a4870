"""The sections of ``benchmarks/bench_scale.py`` (issue #20's figures), one module each."""
