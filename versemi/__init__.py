"""VerSemi companion: the task-prompted V-Net, its losses and training methods, data preparation
for the four public datasets (and their phantoms), evaluation, and the notebooks' logic."""

__version__ = "0.1.0"
