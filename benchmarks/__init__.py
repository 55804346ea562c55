"""sagegan's benchmarks.

``benchmarks/run.py`` (or ``python -m benchmarks.run``) runs the benchmark cases, which the
package :mod:`benchmarks.harness` defines; ``benchmarks/summarize.py`` turns results files into
the markdown tables of BENCHMARKS.md; ``benchmarks/migrate_results.py`` converts results files of
the earlier row format; ``benchmarks/studies/`` holds one-off studies (ablations, z diversity,
allocator, scale search...). Every script runs both as a file and as a module.
"""
