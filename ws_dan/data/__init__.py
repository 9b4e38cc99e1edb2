"""Images to tensors: ``datasets`` (class folders, CSV and unlabelled lists; loaders that skip and count unreadable
images) and ``augment`` (training augmentations by name). Imports only :mod:`ws_dan.common`.
"""
