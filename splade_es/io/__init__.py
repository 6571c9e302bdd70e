"""Helpers both halves of splade-es need: reading corpora and user files, atomic writes, ranks.

The toolkit and the trainer import from here; nothing here imports either of them.
"""
