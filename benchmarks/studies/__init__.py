"""One-off studies: ablations, z diversity, allocator, scale search, GAN step time, long GAN runs.

Each is a script with its own command line (``python benchmarks/studies/NAME.py --help`` or
``python -m benchmarks.studies.NAME --help``); shared pieces come from :mod:`benchmarks.harness`.
Their results and commands are in BENCHMARKS.md.
"""
