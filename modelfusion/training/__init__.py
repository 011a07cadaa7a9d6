"""Training: one engine (:class:`Trainer`) with checkpoints, resume and early stopping, for every training job.

Examples
--------
>>> from modelfusion.training import EarlyStopping, Trainer
>>> Trainer(net, nn.functional.cross_entropy, max_epochs=10, checkpoint_dir="ckpt").fit((X, y), (X_val, y_val))
"""

from modelfusion.training.checkpoint import config_digest, load_checkpoint, save_checkpoint
from modelfusion.training.finetune import finetune_ensemble
from modelfusion.training.trainer import EarlyStopping, Trainer, as_dataset, history_csv

__all__ = [
    "EarlyStopping",
    "Trainer",
    "as_dataset",
    "config_digest",
    "finetune_ensemble",
    "history_csv",
    "load_checkpoint",
    "save_checkpoint",
]
