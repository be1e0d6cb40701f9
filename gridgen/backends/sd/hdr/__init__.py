"""HDR brackets, as the VectorscopeCC extension's "High Dynamic Range" script makes them: a cell renders as
several exposures of one seed, merged into its image by exposure fusion.

- `options`: the params' values, checks and `parameters` text (no torch: validation and metadata read them);
- `brackets`: a cell's brackets as rows of the batch it renders in, and their merge back into the cell's result;
- `fusion`: OpenCV's Mertens exposure fusion of the brackets into an 8- or 16-bit image.

The exposure itself is a brightness the colour grading adds to a bracket's latents at every step
(`denoise.controls.colour_grading`), so the brackets share the batch with any other cells.
"""
