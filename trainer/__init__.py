"""Stage 2: the distributed trainer (tf.distribute, mixed precision, exact resume)."""
