"""Training and evaluation pipeline that produces the model bundles in ``models/``."""
