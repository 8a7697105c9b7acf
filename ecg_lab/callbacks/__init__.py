"""Lightning callbacks of ecg_lab."""
