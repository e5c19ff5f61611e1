"""Stage 3: the batch evaluator (metrics, confusion matrices, figures, report)."""
