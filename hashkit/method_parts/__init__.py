"""Shared parts of the hashing methods: what two or more methods in ``methods/`` use lives here once.

* :mod:`~hashkit.method_parts.centers` — fixed ±1 class codes (Hadamard, Bernoulli, MDSH's optimised
  minimal-distance centers) and multi-label targets;
* :mod:`~hashkit.method_parts.memory` — the pairwise memory of the training split's relaxed codes;
* :mod:`~hashkit.method_parts.pairs` — squared distances, balanced pair weights, in-batch triplet likelihood,
  soft label similarities (DSH, DCH, DTSH, IDHN);
* :mod:`~hashkit.method_parts.histograms` — soft (triangular-kernel) histograms of pairwise distances and their
  entropies (MIHash);
* :mod:`~hashkit.method_parts.proxies` — learnable class proxies and the code-table bound ζ of their margin
  (HyP²);
* :mod:`~hashkit.method_parts.relaxations` — binarisation layers (straight-through sign, bi-half,
  stochastic binary);
* :mod:`~hashkit.method_parts.feature_similarity` — codes that copy the cosine similarities of the batch's
  backbone features (unsupervised GreedyHash, BiHalf);
* :mod:`~hashkit.method_parts.classification` — classifiers on codes, class-code methods, soft cross-entropy;
* :mod:`~hashkit.method_parts.orthohash` — the OrthoHash scheme (OrthoCos, OrthoArc);
* :mod:`~hashkit.method_parts.closed_form` — solvers of the shallow methods fitted without a training loop;
* :mod:`~hashkit.method_parts.reference_recipes` — training recipes of reference repositories, as data.

A new method that needs a piece another method already has imports it from here; a piece two new methods
need (pair or triplet mining, soft similarities, histogram estimators, …) gets its own module here.
"""
