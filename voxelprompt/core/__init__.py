"""Core: volumes and grids, scans, NIfTI/MGZ files, errors, morphology, packaged data and seed
streams. Imports no other layer."""
