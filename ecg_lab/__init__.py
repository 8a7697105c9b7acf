"""ecg_lab: Hydra-configured PyTorch Lightning experiments for single-lead ECG deep learning.

Verbs at the top (``python -m ecg_lab.train``, ``eval``, ``generate``, ``analyze``, ``export``,
``report``); what they use in packages: ``data`` (readers, embedded dataset, cache, splits), ``models``
(plain networks), ``classification`` and ``generation`` (the two workflows), ``edge`` (export and
the device runtime), ``app`` (Hydra plumbing, checkpoints, the run-folder writer), ``callbacks`` and
``sweeps`` (results across runs). Importing it sets nothing.
"""

__version__ = "0.2.0"
