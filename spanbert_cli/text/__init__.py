"""Where text becomes tokens: reading corpora, WordPiece, sentences, and the tokenize stage.

corpus.py      inputs (files, directories, globs, stdin), formats, documents, re-hashing as read
wordpiece.py   a deterministic WordPiece trainer, loading tokenizers, tokenizer files
sentences.py   sentence ends found on token ids
tokenize.py    the stage: corpus → `spanbert/tokenized` (documents of ids with sentence ends)
"""
