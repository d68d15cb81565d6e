"""Where sequences are packed: `[CLS] block [SEP]` training sequences in Arrow shards, and reading them.

pack.py       the shard stage: whole sentences packed into blocks, the train/valid split, Arrow shards
reader.py     `ShardReader`: random access by global sequence index, memory-mapped
arrow_io.py   Arrow files: bounded writers, schema checks, damaged-file messages
"""
