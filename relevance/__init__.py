"""Search quality: the labelled shapes dataset, CLIP fine-tuning (FLYP) and retrieval metrics."""
