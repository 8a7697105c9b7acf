"""Data pipeline: files → records → windows → batches."""
