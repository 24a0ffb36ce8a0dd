"""Training: one trainer (Ray Train + DeepSpeed) and one small task per job kind (codec, ar, fm)."""
