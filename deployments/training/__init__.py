"""Training kraken models from the archive's corrections.

jobs.py     the SQLite job store (STATE_DIR/training/jobs.db): jobs survive restarts
ketos.py    the ketos command lines and what their output says (epochs, best model)
bases.py    base models for fine-tuning, at a height small hosts can train
trainer.py  the Trainer deployment: one job at a time, in a subprocess
"""
