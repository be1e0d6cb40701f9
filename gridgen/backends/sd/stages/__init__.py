"""What runs after the base image, and its cache: `cache` keys and keeps stage outputs, `upscalers` and
`segment_params` parse those params (no torch), `upscale_stage` with `upscale_models`, `second_pass` (hires fix,
SD upscale), `tiling` and `x4` (the SD x4 upscaler) enlarge images, and `segment_stage` with `segment` runs
SAM-prompted edits.
"""
