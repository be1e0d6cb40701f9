"""The UNet input channels of each model kind, by the name the `pipeline` param gives it: the one place these
facts live (model detection, single-file families and the kinds all read them here).

An unCLIP UNet has a txt2img UNet's 4 channels and reads an image embedding besides, which `locate` tells
apart by its folder; img2img runs on a txt2img UNet. Every other kind has a channel count of its own.
"""

CHANNELS = {"txt2img": 4, "img2img": 4, "depth2img": 5, "x4-upscaler": 7, "instruct-pix2pix": 8, "inpaint": 9,
            "unclip": 4}
# The kind a UNet is from its channels alone (unCLIP aside).
KIND_BY_CHANNELS = {4: "txt2img", 5: "depth2img", 7: "x4-upscaler", 8: "instruct-pix2pix", 9: "inpaint"}
