"""The generation workflow (LSTM-VAE on normal ECGs): sources → cleaned records and R-peaks → raw or
analytic windows (datamodule), the LightningModule, its loss and β schedule, fidelity, figures and
analyses."""
