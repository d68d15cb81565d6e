"""Evaluation of pretrained encoders: held-out MLM/SBO and SQuAD."""
