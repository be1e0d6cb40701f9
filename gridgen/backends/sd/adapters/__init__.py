"""Adapters on a loaded model: `lora` reads LoRA files, `embeddings` textual-inversion files, and `networks`
applies a cell's set of both to the loaded UNet and text encoders.
"""
