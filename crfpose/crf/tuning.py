"""The CRF core's tuning constants, in one place: speed and memory trade-offs measured on CPUs.

None of them changes a result (every path they choose between is exact to the same bound);
changing one only moves work between paths. The constants that the error bounds rest on (the
flushing floor, the FFT error constant, the separable residual of the sum-product) stay with the
analysis they belong to, in :mod:`crfpose.crf.correlate`.
"""

from __future__ import annotations

# crfpose.crf.correlate: log-sum-exp correlation
DIRECT_MAX_STEPS = 49  # correlate by direct sums (no FFT) when the loop has at most this many steps
CONV_MAX_WINDOW = 1 << 22  # output cells x kernel taps of one map above which a grouped convolution (im2col) gets slow
CONV_PER_STEP = 40_000  # multiply-adds a grouped convolution does in the time of one Python loop step
GATHER_BLOCK = 1 << 22  # elements per chunk when cells are gathered one by one (exact fallbacks)

# crfpose.crf.tree: making flagged cells exact
LOG_DOMAIN_TAP_COST = 24.0  # one tap of a cell summed in the log domain costs about this many multiply-adds of direct sums (measured 16-37)

# crfpose.crf.maxplus: pruned max-plus correlation
PRUNE_BLOCK = 1 << 21  # elements per gathered block
PRUNED_TAP_COST = 4.0  # one pruned (gathered) tap-cell costs about this many brute-force tap-cells
PRUNE_BUDGET = 1.0  # share of a map's brute-force cost that pruning may spend before giving up
PRUNE_MIN_TAPS = 25  # kernels this small go straight to the brute force

# crfpose.crf.separable_max: max-plus correlation with separable kernels
# largest |k - f - g| / (1 + max |k|) for which a kernel takes the separable MAP path (float32 tables round to ~1e-7)
SEPARABLE_MAX_RESIDUAL = 1e-4
SEPARABLE_MAX_BLOCK = 1 << 22  # cells (maps x rows x cols) of one block of 1-D passes

# crfpose.crf.maxproduct
QUADRATIC_ULPS = 64.0  # a table is quadratic when the fit's largest residual is within this many ulps of its largest entry
MAX_PLUS_BLOCK = 1 << 24  # elements (maps x H x W x P) of one block of the plain max-plus correlation
