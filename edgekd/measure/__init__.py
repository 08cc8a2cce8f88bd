"""Measurements of a file on a target: the latency harness, one measurement (latency, accuracy on the
backend, what really ran), whether an INT8 row is usable, and the fingerprint of where it was measured."""
