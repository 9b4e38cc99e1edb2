"""The floor every package of the toolkit stands on; it knows nothing of models and imports no other part of it.

``io`` (the one atomic writer, CSV / JSON, digests, :class:`~ws_dan.common.io.InputError`), ``images`` (safe image
open: EXIF, formats, decompression bombs, content sniffing), ``outputs`` (output-folder safety, safe copy / link /
move), ``owned_files`` (never replace an input or a user's file), ``dataset_folders`` (the one scanner of class
folders and train/test splits), ``run_dir`` (a training run's folder rules), ``cli_types`` (bounded argparse types),
``tables`` (plain-text tables), ``contact_sheet`` (image grids), ``benchmark`` (timing helpers), ``runtime``
(devices, seeds, logging).
"""
