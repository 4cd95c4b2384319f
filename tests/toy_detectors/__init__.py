"""Detectors that exist only in the tests: a new detector is its module plus one `catalog.register`."""
