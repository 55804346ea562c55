"""The benchmark harness: cases, registered methods, results with a schema, figures.

Modules, in the order a benchmark run uses them:

* :mod:`.cases` — the settings of a run and the declarative list of cases
  (benchmark, dataset, method, k, seed, budget);
* :mod:`.datasets` — the benchmark data sets (EMPS, BAM TiO2, simulated) and their train /
  validation / test splits;
* :mod:`.cache` — run folders keyed by a hash of their config and data, so that finished runs
  are found again (the code version is recorded, not part of the key);
* :mod:`.context` — the shared state of one invocation (settings, results store, data);
* :mod:`.methods` — the registered methods (classical, unet, attention_unet, sage_gan,
  sage_gan_retrain), which call only the public ``sagegan`` API;
* :mod:`.evaluation` — testing a trained method and the segmentation rows;
* :mod:`.generator`, :mod:`.speed` — the generator (Fréchet distance, TSTR) and speed benchmarks;
* :mod:`.results` — the row schema, the results store and the row key;
* :mod:`.figures` — figures drawn from a results file only;
* :mod:`.runner`, :mod:`.cli` — running the cases and the command line of ``benchmarks/run.py``.
"""
