"""What the load tests and the reliability runs share: the answer key, the stack lifecycle,
the artifacts, request percentiles, markdown helpers, result paths and timeouts.

Layers: digitnet -> services (one folder per stack, the registry) -> harness -> loadtests,
reliability -> tools. Nothing here imports loadtests or reliability.
"""
