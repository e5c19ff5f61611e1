"""Stage 1: the Apache Beam job that turns a MURA v1.1 tree into sharded TFRecords."""
