"""Results across runs: a sweep's, a seed series', a k-fold's."""
