"""The stream processing steps, independent of faust: ingest (validate, dead-letter, re-key) and detect."""
