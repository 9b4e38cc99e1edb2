"""The names the data tools (and their users' code) have always imported from here, each defined once elsewhere.

Where each concept lives:

* output-folder safety (:func:`prepare_output_dir`, :func:`check_not_nested`, the ``.incomplete.json`` marker,
  stale temp cleanup, :func:`output_path`) and the safe copy / link / move of files (:func:`copy_file`,
  :func:`move_file`, :func:`save_image`, :func:`unique_path`): ``ws_dan.outputs`` (super_resolution needs them
  too, and may import only ws_dan);
* the dataset scanner (:func:`scan_dataset`, :func:`split_folders`, :class:`DatasetImage`): ``ws_dan.layout``;
* file digests and the bad-input error (:func:`sha256_file`, :class:`DataToolError` = ``ws_dan.io.InputError``):
  ``ws_dan.io``;
* the table printer (:func:`format_table`): ``ws_dan.tables``;
* progress and the process pool (:func:`track`, :func:`parallel_map`): ``data_tools.parallel``;
* the shared flags (:func:`add_job_flags`): ``data_tools.flags``.

Standard library only at the top (through those modules), so worker processes that import it start fast.
"""

from __future__ import annotations

import shutil  # noqa: F401  (tests patch common.shutil.copy2: the one shutil module copy_file uses)

from data_tools.flags import add_job_flags
from data_tools.parallel import Progress, parallel_map, track
from ws_dan.io import InputError as DataToolError
from ws_dan.io import PathLike, sha256_file
from ws_dan.layout import SPLIT_NAMES, DatasetImage, class_folders, scan_dataset, skipped_rows, split_folders
from ws_dan.outputs import (
    MARKER_NAME,
    check_not_nested,
    copy_file,
    finish_output_dir,
    marker_matches,
    move_file,
    output_path,
    prepare_output_dir,
    read_marker,
    remove_stale_temp_files,
    remove_tree,
    save_image,
    unique_path,
    write_marker,
)
from ws_dan.tables import format_table
from ws_dan.utils import default_workers

__all__ = [
    "DataToolError", "PathLike", "sha256_file", "SPLIT_NAMES", "DatasetImage", "class_folders", "scan_dataset",
    "skipped_rows", "split_folders", "MARKER_NAME", "check_not_nested", "copy_file", "finish_output_dir",
    "marker_matches", "move_file", "output_path", "prepare_output_dir", "read_marker", "remove_stale_temp_files",
    "remove_tree", "save_image", "unique_path", "write_marker", "format_table", "default_workers", "Progress",
    "parallel_map", "track", "add_job_flags",
]
