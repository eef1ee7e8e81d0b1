"""The tiny synthetic training setup shared by the engine, runner and reliability tests: 16 synthetic
32x32 figures (8 for validation), an 8x8 grid, a one-layer CNN of width 8, pairwise radius 3."""

TINY_SYNTHETIC = [
    "model.options={width: 8, depth: 1}",
    "data.train={length: 16, seed: 0}",
    "data.val={length: 8, seed: 1}",
    "data.input_size=[32, 32]",
    "data.heatmap_size=[8, 8]",
    "crf.radius=3",
]
