"""The edge path: export a checkpoint (:mod:`.export`) and run it on a CPU device without the training
stack (:mod:`.runtime`, ``python -m ecg_lab.edge``), with the preprocessing the device runs
(:mod:`.preprocess`), which training imports from here so that the two cannot drift.

An export folder carries a copy of this package and what it imports; nothing here imports Lightning,
Hydra, OmegaConf, wandb or NeuroKit2, and this file imports nothing.
"""
