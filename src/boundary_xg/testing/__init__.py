"""Helpers shipped for tests, benchmarks and users' own checks.

* :mod:`boundary_xg.testing.models`: identical small models in every framework,
  built from one set of NumPy weights (cross-backend oracles).
* :mod:`boundary_xg.testing.oracles`: closed-form attributions of analytic models.

Importing this package imports no framework; each builder imports its own.
"""
