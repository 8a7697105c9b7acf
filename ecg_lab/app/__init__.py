"""The Hydra app plumbing: configs and resolvers, the task wrapper, checkpoints, config checks, the
run-folder writer, and the process settings entry points make."""
