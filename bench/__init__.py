"""Benchmarks of the xos matcher.

``bench.orders`` builds seeded workloads (modelled on exchange-core's test
orders generator); ``python -m bench.matcher`` times them through
``Engine.process`` and checks the outcome against the reference model.
"""
