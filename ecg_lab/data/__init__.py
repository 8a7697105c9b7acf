"""What both workflows share: the PhysioNet 2017 and PTB-XL readers, the embedded synthetic dataset,
download, the on-disk cache and record-level splits."""
