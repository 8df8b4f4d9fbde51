"""Dataset readers, sequences, clip sampling, augmentation and the embedded sample.

Kept import-light: submodules are imported explicitly by their users.
"""
