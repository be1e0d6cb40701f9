"""Prompts to conditioning: `clip` (SD 1.x/2.x) and `clip_xl` (SDXL) encode and cache prompts, `prompt_syntax`
parses A1111's emphasis and BREAK, `wildcards` expands `__name__` files, `t5`, `ella`, `ella_context` and
`ella_setup` run ELLA's T5 conditioning, and `encoding_cache` keeps encodings by their input.
"""
