"""Imaging: preprocessing, registration and co-registration of a study's images. Never reaches the networks."""
