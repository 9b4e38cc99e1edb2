"""Training: ``recipe`` (the classifier's recipe as named steps, ``TrainSettings``, train.py's flags), ``trainer``
(the epoch loop: resume, RNG, metrics.csv, CheckpointSaver, Ctrl-C), ``engine`` (train_step, one epoch,
validation), ``optim`` (optimizers, schedules, warm-up, clipping), ``distributed`` (torchrun / DDP). The top of
:mod:`ws_dan`: it may import every other subpackage, none imports it.
"""
