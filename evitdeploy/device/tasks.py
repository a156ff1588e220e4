"""What a model's outputs mean (a manifest's spec.task), named once where the device can read them:
evitdeploy's spec and schemas, and the device's integrity and metrics, import these."""

CLASSIFICATION = "classification"
SEGMENTATION = "segmentation"
PROMPTABLE = "promptable_segmentation"  # a SAM-like model: an image encoder and a prompt decoder
TASKS = (CLASSIFICATION, SEGMENTATION, PROMPTABLE)
