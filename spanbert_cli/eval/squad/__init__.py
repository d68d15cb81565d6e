"""SQuAD: data loading and validation, official scoring, features, fine-tuning and post-processing.

- `data`: SQuAD v1.1 / v2.0 JSON (`.json`, `.json.gz`) and Hugging Face's flattened rows, validated.
- `scoring`: the official v1.1 and v2.0 metrics (docs/algorithm.md §4), to the digit, with the no-answer
  threshold search.
- `features`: question + context windows with offset mappings and span labels.
- `finetune`: the QA head, the fine-tuning loop (§5), post-processing and the `spanbert/eval-squad` artifact.
"""
