"""Labelled data on disk, read and checked against a model: the layouts users have (ImageFolder,
images + masks, Cityscapes, ADE20K, COCO-style JSON). A helper layer: `eval`, deploy's bundle
subset and the precision plan's task-metric search all read data through it."""
