"""Exact and near-duplicate images, within one folder tree or between two (train/test leakage).

One concept per module, the way imagededup separates hashing from search:

* :mod:`~data_tools.dedupe.hashing`: pixel digests (exact duplicates) and perceptual hashes (near ones), on
  worker processes; JPEGs decoded at reduced scale, digests only where needed;
* :mod:`~data_tools.dedupe.resample`: PIL's LANCZOS resize, bit for bit, as matrix products (the hashes' resizes);
* :mod:`~data_tools.dedupe.neighbours`: the vectorised all-against-all search and the grouping of pairs;
* :mod:`~data_tools.dedupe.groups`: duplicate groups, the keeper of each, leaks, label conflicts, the contact
  sheet;
* :mod:`~data_tools.dedupe.actions`: copy the images to keep, quarantine the extra copies (+ undo, through
  ``data_tools.manifest``);
* :mod:`~data_tools.dedupe.job`: the whole job as ``scripts/dedupe.py`` runs it.

The names below are re-exported (each defined once, in its module) so ``from data_tools.dedupe import X`` keeps
working. The library never prints; scripts/dedupe.py is the command-line front end.
"""

from data_tools.dedupe.actions import MANIFEST_FIELDS, copy_unique, quarantine, undo_quarantine
from data_tools.dedupe.groups import (
    DuplicateGroup,
    DuplicateReport,
    build_report,
    contact_sheet,
    duplicates_contact_sheet,
    find_duplicates,
    find_leaks,
    keeper_order,
)
from data_tools.dedupe.hashing import (
    CROP_FRACTION,
    DRAFT_DEVIATION,
    HASH_NAMES,
    HASH_WORKING_SIZE,
    VIEW_NAMES,
    HashedImages,
    ImageHash,
    add_digests,
    file_hashes,
    hash_file,
    hash_images,
    image_hashes,
    pixel_digest,
    working_reduction,
)
from data_tools.dedupe.job import ACTIONS, DUPLICATE_FIELDS, run_dedupe
from data_tools.dedupe.neighbours import (
    DEFAULT_THRESHOLD,
    EXACT_CANDIDATE_DISTANCE,
    MAX_DISTANCE,
    MAX_THRESHOLD,
    PAIRINGS,
    check_threshold,
    connected_groups,
    distance,
    exact_candidates,
    exact_pairs,
    find_pairs,
    pair_distances,
    popcount,
)

#: The old private name, still used by merge code written against it.
_exact_pairs = exact_pairs

__all__ = [
    "MANIFEST_FIELDS", "copy_unique", "quarantine", "undo_quarantine", "CROP_FRACTION", "HASH_NAMES",
    "HASH_WORKING_SIZE", "VIEW_NAMES", "HashedImages", "ImageHash", "hash_file", "hash_images", "image_hashes",
    "pixel_digest", "DRAFT_DEVIATION", "add_digests", "file_hashes", "working_reduction", "ACTIONS",
    "DUPLICATE_FIELDS", "run_dedupe", "DuplicateGroup", "DuplicateReport", "build_report", "contact_sheet",
    "duplicates_contact_sheet", "find_duplicates", "find_leaks", "keeper_order", "DEFAULT_THRESHOLD",
    "EXACT_CANDIDATE_DISTANCE", "MAX_DISTANCE", "MAX_THRESHOLD", "PAIRINGS", "check_threshold", "connected_groups",
    "distance", "exact_candidates", "exact_pairs", "find_pairs", "pair_distances", "popcount",
]
