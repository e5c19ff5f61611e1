"""bonify: distributed training for MURA v1.1 musculoskeletal X-ray classification.

This package holds only what every stage shares: the version and the vocabulary
(`bonify.vocabulary`). Each stage (`beam_preprocess`, `trainer`, `eval`) reads the
previous stage's output files and never imports another stage's internals.
"""

__version__ = "0.1.0"
