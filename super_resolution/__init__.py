"""Super-resolution for small photos: DBPN networks (loading the authors' published weights), tiled
inference, PSNR/SSIM as SR papers report them, and DBPN training.

The two calls a prediction pipeline needs::

    from super_resolution import load_sr_model, super_resolve_image
    model, scale = load_sr_model("DBPN_x4.pth", device="cuda")      # or a train_sr.py checkpoint
    big = super_resolve_image(model, pil_image, scale, tile=256)     # PIL in, PIL out (scale x larger)
"""

from .dbpn import DBPN, PROJECTION, SCALES, VARIANTS, bicubic_upsample, build_dbpn, count_parameters
from .folder import DEFAULT_MAX_AREA, FolderSummary, needs_enlarging, super_resolve_folder
from .inference import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    EnlargeSmallImages,
    super_resolve_image,
    tile_spans,
    tiled_forward,
)
from .metrics import psnr, psnr_y, rgb_to_y, ssim, ssim_y
from .weights import (
    SRWeightsError,
    describe_state_dict,
    load_dbpn_weights,
    load_sr_model,
    model_from_config,
    sr_config,
    strip_prefix,
)

__all__ = [
    "DBPN", "PROJECTION", "SCALES", "VARIANTS", "bicubic_upsample", "build_dbpn", "count_parameters",
    "DEFAULT_MAX_AREA", "FolderSummary", "needs_enlarging", "super_resolve_folder",
    "DEFAULT_OVERLAP", "DEFAULT_TILE", "EnlargeSmallImages", "super_resolve_image", "tile_spans", "tiled_forward",
    "psnr", "psnr_y", "rgb_to_y", "ssim", "ssim_y",
    "SRWeightsError", "describe_state_dict", "load_dbpn_weights", "load_sr_model", "model_from_config",
    "sr_config", "strip_prefix",
]
