"""The params of the techniques a grid compares beside the base settings: A1111's sampler options, the latent
controls of A1111 extensions, high resolution beyond the model's size, differential diffusion, outpainting and
regional prompting. Each group is declared here once; `gridgen.params` adds them all to the one registry.
"""

from __future__ import annotations

from gridgen.backends.sd.denoise.controls import options as controls
from gridgen.backends.sd.hdr import options as hdr_options
from gridgen.backends.sd.images import outpaint
from gridgen.backends.sd.text import regions as text_regions
from gridgen.backends.sd.text import styles
from gridgen.param_decl import Param

# A1111's sampler options, applied once in the denoising recipe so every kind and stage honours them.
SAMPLER_OPTION_PARAMS: tuple[Param, ...] = (
    Param("eta", "float", None,
          "Eta: how much fresh noise each step adds. DDIM: 0 (its default) is deterministic DDIM, 1 adds DDPM's "
          "full step noise; one value per batch. Ancestral and SDE samplers (Euler a, DPM2 a, DPM++ SDE, DPM++ 2M "
          "SDE and their Karras variants): 1 (their default) is their usual step, 0 adds no noise (Euler a becomes "
          "Euler, DPM2 a DPM2, DPM++ 2M SDE DPM++ 2M); per cell inside a batch, except DPM2 a: one value per batch "
          "(its midpoint timesteps depend on it). Other samplers ignore it (warned).",
          aliases=("ddim_eta", "eta_ddim", "eta_ancestral"), min=0, max=1),
    Param("eta_noise_seed_delta", "int", 0,
          "ENSD: the step noise of ancestral and SDE samplers (Euler a, DPM2 a, DPM++ SDE, ...) is drawn from "
          "seed + this instead of the seed's own stream; 31337 matches the NovelAI-era A1111 setting. 0: off.",
          aliases=("ensd", "noise_seed_delta"), min=0, max=2**32 - 1),
    Param("s_churn", "float", None,
          "Sigma churn: how much noise Euler adds back at each step between s_tmin and s_tmax (default 0). "
          "Honoured by Euler; one value per batch.", aliases=("sigma_churn",), min=0, max=100),
    Param("s_tmin", "float", None, "Sigma tmin: churn applies only at noise levels from this one up (default 0). "
          "Honoured by Euler; one value per batch.", aliases=("sigma_tmin", "sigma_min"), min=0, max=1000),
    Param("s_tmax", "float", None, "Sigma tmax: churn applies only at noise levels up to this one (default: no limit). "
          "Honoured by Euler; one value per batch.", aliases=("sigma_tmax", "sigma_max"), min=0, max=1000),
    Param("s_noise", "float", None,
          "Sigma noise: scale of the noise churn adds (Euler) or of the SDE noise (DPM++ SDE), default 1. "
          "One value per batch.", aliases=("sigma_noise",), min=0, max=10),
    Param("var_seed", "seed", None,
          "Variation seed (A1111's subseed): its noise is blended into the seed's by var_seed_strength.",
          aliases=("subseed", "variation_seed", "Var. seed"), min=0, max=2**32 - 1),
    Param("var_seed_strength", "float", 0.0,
          "How far the start noise moves from the seed's to var_seed's (spherical interpolation): 0 the seed's "
          "image, 1 the variation seed's.", aliases=("var_strength", "subseed_strength", "variation_strength",
                                                       "variation_seed_strength", "Var. strength"), min=0, max=1),
    Param("seed_resize_from_w", "int", 0,
          "Draw the seed's noise as if for this width and paste it centred, so an image keeps its composition "
          "at another size (0: off; needs seed_resize_from_h).", aliases=("seed_resize_w", "resize_seed_from_w"),
          min=0, max=8192),
    Param("seed_resize_from_h", "int", 0, "The height of seed_resize_from_w's noise (0: off).",
          aliases=("seed_resize_h", "resize_seed_from_h"), min=0, max=8192),
    Param("tiling", "bool", False,
          "Seamless tiling: the UNet's and VAE's convolutions wrap around the edges, so the image repeats with no "
          "visible seam. One value per batch.", aliases=("seamless", "tileable")),
    Param("styles", "str", None,
          "A1111 prompt styles by name (`a, b` applies them in order) from styles.csv next to the spec or in the "
          "models folder: a style's `{prompt}` takes the prompt, else its text is appended after \", \".",
          aliases=("style", "prompt_styles"), stage="text", parse=styles.canonical),
    Param("image_mask_weight", "float", 1.0,
          "A1111's inpainting conditioning mask strength, for inpainting (9-channel) models: how much of the masked "
          "part of init_image the UNet's image input hides; 1 hides it all, 0 shows the whole image (keeping its "
          "composition in img2img). Per cell inside a batch.",
          aliases=("inpainting_mask_weight", "conditioning_mask_strength", "inpaint_mask_weight"), min=0, max=1),
    Param("token_merging_ratio", "float", 0.0,
          "Token merging (ToMe, through tomesd, as A1111 applies it): the share of image tokens merged before each "
          "self-attention of the UNet's full-resolution blocks; faster, less detail. 0: off; above 0.75 merges as "
          "0.75 does (every token but one in four). A model with no attention at full resolution (SDXL, "
          "gridgen-tiny) is unchanged. Also applies to hires fix, which redraws with the same model. One value per "
          "batch.",
          aliases=("tome_ratio", "tome"), min=0, max=0.9),
)
# Latent controls (A1111 extensions' knobs), each per sample in a batch: the `[Extension] Name` spellings of
# their X/Y/Z options resolve, since brackets and spaces do not count in a name.
LATENT_CONTROL_PARAMS: tuple[Param, ...] = (
    Param("cfg_rescale", "float", 0.0,
          "CFG rescale (Lin et al. 2023, diffusers' guidance_rescale): scales the guided prediction back to the "
          "conditional prediction's standard deviation; 0 off, 0.7 as the paper. Curbs the washed-out or burnt "
          "look of high CFG, above all on v-prediction and zero-terminal-SNR models.",
          aliases=("guidance_rescale", "cfg_rescale_phi", "rescale_cfg", "cfgrescale"), min=0, max=1),
    Param("mimic_scale", "float", 0.0,
          "Dynamic thresholding (sd-dynamic-thresholding): guide at cfg_scale but squeeze the prediction's spread "
          "to a guidance at this scale, so high CFG follows the prompt closely without burning; 0 off.",
          aliases=("dynthres_mimic_scale", "mimic", "mimic_cfg_scale"), min=0, max=100),
    Param("threshold_percentile", "float", 100.0,
          "Dynamic thresholding: the percentile of the CFG prediction's absolute deviations that is clamped to "
          "(AD only); below 100 clips the outliers harder.",
          aliases=("dynthres_threshold_percentile", "top_percentile"), min=0, max=100),
    Param("mimic_mode", "choice", "Constant", "Dynamic thresholding: the mimic scale's schedule over the steps, "
          "between mimic_scale_min and mimic_scale.", aliases=("dynthres_mimic_scheduler", "mimic_scheduler"),
          choose=controls.choose_schedule, choices_help=", ".join(controls.SCHEDULES)),
    Param("mimic_scale_min", "float", 0.0, "Dynamic thresholding: where the mimic scale's schedule starts or ends.",
          aliases=("dynthres_mimic_minimum", "mimic_minimum"), min=0, max=100),
    Param("cfg_mode", "choice", "Constant", "Dynamic thresholding: the CFG scale's schedule over the steps, "
          "between cfg_scale_min and cfg_scale.", aliases=("dynthres_cfg_scheduler", "cfg_scheduler"),
          choose=controls.choose_schedule, choices_help=", ".join(controls.SCHEDULES)),
    Param("cfg_scale_min", "float", 0.0, "Dynamic thresholding: where the CFG scale's schedule starts or ends.",
          aliases=("dynthres_cfg_minimum", "cfg_minimum"), min=0, max=100),
    Param("sched_val", "float", 4.0,
          "Dynamic thresholding: the power of the Power schedules, the repeats of Linear/Cosine Repeating and "
          "Sawtooth.", aliases=("dynthres_power_scheduler_value", "power_scheduler_value"), min=0, max=100),
    Param("separate_feature_channels", "bool", True,
          "Dynamic thresholding: measure and scale each latent channel on its own (true) or all together.",
          aliases=("dynthres_separate_feature_channels",)),
    Param("scaling_startpoint", "choice", "MEAN", "Dynamic thresholding: scale around each channel's mean or zero.",
          aliases=("dynthres_scaling_startpoint",), choose=controls.choose_startpoint,
          choices_help=", ".join(controls.STARTPOINTS)),
    Param("variability_measure", "choice", "AD",
          "Dynamic thresholding: spread as the largest absolute deviation (AD, clamped at threshold_percentile) "
          "or the standard deviation (STD).", aliases=("dynthres_variability_measure",),
          choose=controls.choose_variability, choices_help=", ".join(controls.VARIABILITIES)),
    Param("interpolate_phi", "float", 1.0,
          "Dynamic thresholding: 1 takes the thresholded prediction, 0 the plain CFG one, between mixes them.",
          aliases=("dynthres_interpolate_phi",), min=0, max=1),
    Param("mirror_mode", "choice", "None",
          "Latent mirroring: `Alternate Steps` mirrors the latents after every early step, `Blend Average` "
          "averages them with their mirror image (symmetric), None off.",
          aliases=("latent_mirror_mode", "mirror_application_mode"), choose=controls.choose_mirror_mode,
          choices_help=", ".join(controls.MIRROR_MODES)),
    Param("mirror_style", "choice", "Vertical Mirroring",
          "Latent mirroring: the mirror: Vertical (left-right), Horizontal (top-bottom), Horizontal+Vertical, "
          "90 Degree Rotation (square images) or 180 Degree Rotation.",
          aliases=("latent_mirror_style",), choose=controls.choose_mirror_style,
          choices_help="vertical, horizontal, both, 90, 180 (or the extension's names)"),
    Param("mirror_max_step", "float", 0.25,
          "Latent mirroring: the fraction of the steps it acts on; later steps add detail freely.",
          aliases=("mirroring_max_step_fraction", "mirror_max_step_fraction", "maximum_steps_fraction_to_mirror_at"),
          min=0, max=1),
    Param("cc_brightness", "float", 0.0,
          "Latent colour grading (VectorscopeCC): brightness added over the run; + brighter, - darker.",
          aliases=("[Vec.CC] Brightness", "Vec CC Brightness"), min=-10, max=10),
    Param("cc_contrast", "float", 0.0, "Latent colour grading: contrast, stretching luminance about its mean.",
          aliases=("[Vec.CC] Contrast", "Vec CC Contrast"), min=-10, max=10),
    Param("cc_saturation", "float", 1.0, "Latent colour grading: saturation, a factor on the colour directions "
          "(1 unchanged, 0 grey).", aliases=("[Vec.CC] Saturation", "Vec CC Saturation"), min=0, max=5),
    Param("cc_r", "float", 0.0, "Latent colour grading: + red, - cyan.", aliases=("[Vec.CC] R", "Vec CC R"),
          min=-10, max=10),
    Param("cc_g", "float", 0.0, "Latent colour grading: + green, - magenta.", aliases=("[Vec.CC] G", "Vec CC G"),
          min=-10, max=10),
    Param("cc_b", "float", 0.0, "Latent colour grading: + blue, - yellow.", aliases=("[Vec.CC] B", "Vec CC B"),
          min=-10, max=10),
    Param("cc_method", "choice", "Straight Abs.",
          "Latent colour grading: what each change is proportional to: the predicted image (Straight), the noisy "
          "latents (Cross), ones, or seeded noise (N.Random, U.Random, Multi-Res); Abs. takes its magnitude.",
          aliases=("[Adv.CC] Method", "Vec CC Noise", "cc_noise"), choose=controls.choose_cc_method,
          choices_help=", ".join(controls.CC_METHODS)),
    Param("cc_scaling", "choice", "Flat", "Latent colour grading: the strength over the steps (Cos fades it out, "
          "Sin fades it in).", aliases=("[Adv.CC] Scaling", "Vec CC Scaling"), choose=controls.choose_cc_scaling,
          choices_help=", ".join(controls.CC_SCALINGS)),
    Param("cc_alt", "bool", False,
          "Latent colour grading's Alt. mode: grade the noisy latents after every step instead of the predicted "
          "clean image, so each step's change carries into all later ones (stronger effects); Cross then takes "
          "the predicted image as its source.", aliases=("[Vec.CC] Alt.", "Vec CC Alt", "cc_alternative")),
    Param("hdr_brackets", "int", 1,
          "HDR (VectorscopeCC's High Dynamic Range): render this many exposures of the cell from its seed in one "
          "batch (odd, 3 to 9; off or 1: no HDR) and merge them by Mertens exposure fusion into its image; the "
          "brackets are kept next to it, darkest first. Other cells share the batch.",
          aliases=("hdr", "brackets", "Vec HDR Brackets", "hdr_count"), parse=hdr_options.parse_brackets,
          stage="post"),
    Param("hdr_gap", "float", 1.25,
          "HDR: the colour-grading brightness between neighbouring brackets, added to their latents at every step "
          "(Alt. mode, Ones, 1 - Cos); the middle bracket is the cell itself.",
          aliases=("hdr_gaps", "gaps", "Vec HDR Gaps"), min=0, max=5, stage="post"),
    Param("hdr_gamma", "float", 1.2,
          "HDR: the merged image is raised to 1 / gamma: above 1 lifts the midtones, below 1 darkens them.",
          aliases=("Vec HDR Gamma",), min=0.1, max=5, stage="post"),
    Param("hdr_depth", "int", 8,
          "HDR: bits per channel of the merged image: 8, or 16 (a 16-bit PNG; formats other than png keep 8).",
          aliases=("hdr_bit_depth", "bit_depth", "Vec HDR Depth"), parse=hdr_options.parse_depth, stage="post"),
    Param("antiburn_steps", "int", 1,
          "Anti-burn: the result is the mean of the last N steps' latents, smoothing a burnt finish; 1 is the "
          "plain result.", aliases=("antiburn", "anti_burn", "anti_burn_steps"), min=1, max=100),
)

def _choose_vae_tiling(text: str) -> str | None:
    # `on`/`off` may reach here as YAML booleans.
    value = str(text).strip().lower()
    return {"true": "on", "yes": "on", "false": "off", "no": "off"}.get(value, value if value in
                                                                         ("auto", "on", "off") else None)


# High resolution beyond the model's size: the tiled VAE and tiled diffusion (MultiDiffusion).
HIGHRES_PARAMS: tuple[Param, ...] = (
    Param("vae_tiling", "choice", "auto",
          "Encode and decode with the VAE in overlapping tiles, so memory stays bounded whatever the image size: "
          "on, off, or auto (tiles above four tiles' worth of pixels).",
          choose=_choose_vae_tiling, choices_help="auto, on, off"),
    Param("tile_diffusion", "bool", False,
          "Denoise the canvas as overlapping windows of the model's size whose predictions are averaged every "
          "step (MultiDiffusion): any width and height without repeated composition per window; memory bounded "
          "by the window batch.", aliases=("multidiffusion",)),
    Param("tile_diffusion_size", "int", 0,
          "Side of a tiled-diffusion window in pixels; 0: the model's native size.", min=0, max=16384),
    Param("tile_diffusion_overlap", "int", None,
          "Pixels neighbouring tiled-diffusion windows share (default: half a window).", min=0, max=16384),
    Param("tile_diffusion_batch", "int", 4, "Tiled-diffusion windows sent through the UNet together.",
          min=1, max=256),
    Param("demofusion_scale", "int", 0,
          "DemoFusion as a txt2img mode: the cell's image (width x height) is phase 1 and phases 2..N redraw it at "
          "2..N times that size, so the result is N times it; 1 keeps phase 1; 0 (off) leaves `upscaler` in charge. "
          "Set, it wins over upscale_by/upscale_width/upscale_height, and upscaler must be none or demofusion. "
          "Phases are cached, so a grid over 2, 3, 4 renders each phase once.", min=0, max=16, stage="post"),
    # DemoFusion (`upscaler: demofusion` or `demofusion_scale`), with the reference pipeline's names and defaults.
    Param("cosine_scale_1", "float", 3.0,
          "DemoFusion's skip residuals: how long each phase follows the previous one (higher: fewer steps).",
          min=0, max=100, stage="post"),
    Param("cosine_scale_2", "float", 1.0,
          "DemoFusion's dilated sampling: how long the global views steer the composition (higher: fewer steps).",
          min=0, max=100, stage="post"),
    Param("cosine_scale_3", "float", 1.0,
          "DemoFusion: how fast the blur of the global views fades over the steps.", min=0, max=100, stage="post"),
    Param("sigma", "float", 0.8, "DemoFusion: the spread of the Gaussian blur of the global views, in latent cells.",
          min=0.01, max=100, stage="post"),
    Param("stride", "int", None, "DemoFusion: pixels between neighbouring local patches (default: half the "
          "model's size).", min=1, max=16384, stage="post"),
    Param("view_batch_size", "int", 4, "DemoFusion: patches and global views sent through the UNet together.",
          min=1, max=256, stage="post"),
)
# Differential diffusion: a per-pixel change map on img2img (denoise/change_map.py).
CHANGE_MAP_PARAMS: tuple[Param, ...] = (
    Param("change_map", "path", None,
          "Differential diffusion: a grayscale image (white = change fully, black = keep) acting as a per-pixel "
          "denoise on init_image; any size, stretched to the image's.", aliases=("diff_map", "soft_change_map")),
    Param("soft_mask", "bool", False,
          "Use the mask, blurred by mask_blur, as a change map (differential diffusion) instead of a hard mask.",
          aliases=("soft_inpainting",)),
)


def _choose_outpaint_fill(text: str) -> str | None:
    try:
        return outpaint.canonical_fill(text)
    except ValueError:
        return None


_METHOD_SYNONYMS = {"poor_mans": "poor_man", "poor_mans_outpainting": "poor_man", "differential": "gradient",
                    "mk_2": "mk2", "outpainting_mk2": "mk2", "outpainting_mk_2": "mk2"}


def _choose_outpaint_method(text: str) -> str | None:
    value = str(text).strip().lower().replace("'", "").replace(" ", "_").replace("-", "_")
    value = _METHOD_SYNONYMS.get(value, value)
    return value if value in outpaint.METHODS else None


# Outpainting: the init image extended per side, filled, and redrawn (images/outpaint.py).
OUTPAINT_PARAMS: tuple[Param, ...] = (
    Param("outpaint", "str", None, "Extend init_image by pixels per side and draw the new area: `left 64, right 64` "
          "(sides left, right, up, down).", parse=outpaint.canonical),
    *(Param(f"outpaint_{side}", "int", None, f"Pixels to add on the {side} side (wins over `outpaint`'s {side}).",
            min=0, max=outpaint.MAX_EXTENT) for side in outpaint.SIDES),
    Param("outpaint_fill", "choice", "opencv-telea", "What the new area starts from before it is redrawn: "
          "opencv-telea (filled inward from the image), edge (the border pixels stretched outward), "
          "lama:<file> (a LaMa inpainting model file) or latent_noise (A1111's masked content: fresh noise in "
          "latent space, for high denoise). The mk2 method uses its own matched noise instead.",
          choose=_choose_outpaint_fill, choices_help=", ".join(outpaint.FILLS) + ", lama:<file>"),
    Param("outpaint_method", "choice", "gradient", "gradient: differential diffusion under a change map that ramps "
          "from the old border (no seam); poor_man: A1111's poor man's outpainting, a hard-mask inpaint; mk2: "
          "A1111's outpainting mk2, noise matched to the image's spectrum and colours inpainted under a mask "
          "grown and blurred by mask_blur, one side per pass (left, right, up, down) over the previous pass's "
          "result (its script recommends denoise 0.8; see outpaint_falloff, outpaint_color_variation).",
          choose=_choose_outpaint_method, choices_help=", ".join(outpaint.METHODS)),
    Param("outpaint_feather", "int", 32, "Pixels past the old border over which the gradient method's change "
          "rises from 0 to 1.", min=1, max=1024),
    Param("outpaint_falloff", "float", 1.0, "mk2's \"fall-off exponent\": the power of the picture's spectrum "
          "that shapes the noise of the new area. Lower keeps more fine detail (grain) in the fill; higher "
          "leaves only the picture's broad shapes, a smoother fill (the script's slider runs 0 to 4).",
          aliases=("fall_off_exponent", "falloff_exponent", "noise_q"), min=0, max=4),
    Param("outpaint_color_variation", "float", 0.05, "mk2's \"color variation\": how much of the noise that "
          "starts the new area is coloured rather than grey, before it takes the picture's colours (0: every "
          "channel follows one pattern, so the fill keeps the picture's colour relations; 1: each channel its "
          "own, a speckled fill).", aliases=("outpaint_colour_variation", "color_variation", "colour_variation"),
          min=0, max=1),
)

# Regional Prompter's matrix and mask modes, latent and attention calculation (text/regions.py, denoise/regional.py,
# denoise/regional_attention.py, images/region_masks.py).
def _choose_region_calc(text: str) -> str | None:
    return next((calc for calc in text_regions.CALCS if calc == text.strip().lower()), None)


REGION_PARAMS: tuple[Param, ...] = (
    Param("regions", "str", "off", "Regional prompting: off, Columns, Rows, a divide ratio (`1,2,1`; rows with "
          "`;`, each `height,widths...`), Mask (the colours of region_mask), or Prompt / Prompt-Ex (each region "
          "found where the main prompt's attention looks at the region prompt's last word, after its last comma; "
          "Prompt-Ex gives overlaps to the later region); region prompts are separated by BREAK, ADDCOL or ADDROW. "
          "Not with tile_diffusion.",
          aliases=("region_layout", "regional_prompter"), parse=text_regions.canonical),
    Param("region_threshold", "str", "0.4", "With `regions: Prompt` or `Prompt-Ex`: how strongly a position must "
          "attend to a region's target word to be in the region (0 to 1, of the attention map's range; lower finds "
          "more); one value, or one per region separated by commas.", aliases=("prompt_threshold", "rp_threshold")),
    Param("base_ratio", "float", 0.2, "With ADDBASE: how much of every region's prediction is the base prompt's "
          "(0 none, 1 the base prompt alone).", min=0, max=1),
    Param("region_calc", "choice", "attention", "How regions combine, as Regional Prompter's generation mode: "
          "attention, its default (each region's text attended to inside the UNet's cross-attention, the outputs "
          "blended by the masks at each attention resolution; one UNet row per cell, not with ELLA; LoRA tags apply "
          "to the whole cell) or latent (each region prompt's noise prediction, "
          "blended by the region masks at every step; a UNet row per region; each region applies the <lora:...> "
          "tags of its own prompt). Cells of either kind share batches.",
          aliases=("calcmode", "region_calculation", "generation_mode"), choose=_choose_region_calc,
          choices_help=", ".join(text_regions.CALCS)),
    Param("region_mask", "path", None, "With `regions: Mask`: an image whose colours are the regions, in Regional "
          "Prompter's colour order (region 0 RGB 128,64,64; 1: 64,128,128; 2: 96,128,64; 3: 96,64,128; ...; save it "
          "as PNG, colours must be exact within 8); unpainted pixels follow the first region, or the base prompt "
          "alone with ADDBASE. Any size, stretched to the image's.", aliases=("regional_mask", "region_mask_image")),
)

TECHNIQUE_PARAMS: tuple[Param, ...] = (
    *SAMPLER_OPTION_PARAMS, *LATENT_CONTROL_PARAMS, *HIGHRES_PARAMS,
    *CHANGE_MAP_PARAMS, *OUTPAINT_PARAMS, *REGION_PARAMS,
)
