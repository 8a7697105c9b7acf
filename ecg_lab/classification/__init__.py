"""The classification workflow (PhysioNet/CinC 2017): records → windows → batches (datamodule), the
LightningModule, its loss, metrics and figures."""
