"""Data curation tools, on top of ``ws_dan`` and ``super_resolution`` (never the other way round).

* datasets: ``prepare`` (the standard benchmarks from their official files), ``split`` (stratified re-split),
  ``validate``, ``stats``, ``downsample``, ``merge``, ``synthetic`` (the built-in sample set);
* duplicates: the ``dedupe`` package (hashing / search / report / actions / job), ``dedupe_eval`` (its benchmark);
* more data: ``search`` with ``search_backends`` (Openverse, Wikimedia Commons, Google), ``url_list``,
  ``download`` (the job) with ``image_fetch`` and ``hash_index``, ``http`` (the one HTTP layer, on urllib3),
  ``licenses`` and ``attribution`` (ATTRIBUTION.csv), ``clean`` (the wanted / unwanted classifier);
* labels: ``label_issues`` (confident learning), ``out_of_sample`` (K-fold probabilities), ``label_review``
  (the job), ``label_noise`` (planted flips, to measure it);
* shared: ``manifest`` (the one manifest / undo), ``parallel`` (progress, process pool), ``flags`` (the flags every
  data tool takes). What every package shares (files, images, output folders, the dataset scanner) is
  :mod:`ws_dan.common`.
"""
