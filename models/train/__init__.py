"""Training of learned reconstruction models (``python -m models.train RECIPE``)."""
