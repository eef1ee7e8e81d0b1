"""The CRF engine's constants, in one place, each with how it was chosen or measured.

Two kinds: the error analysis rests on the first group (changing one changes what is guaranteed);
the others only move work between exact paths (changing one changes speed or memory, never a
result). Timings: CPU, COCO17 64x48 batch 32 and LSP14 32x32 batch 8 potentials; the speed constants
were measured before issue 23 (2 threads) and not re-measured since, except where a line says so.
"""

from __future__ import annotations

import math

# Error analysis (crfpose.crf.correlate, crfpose.crf.tree, crfpose.crf.maxproduct)
# linear-domain values below this are set to 0 (underflow): a product of two is then 0 or a normal number
# (subnormal arithmetic is about 100x slower on CPUs)
TINY = 2.0**-511
# constant of the FFT rounding-error bound eps log2(n) min(|x|_2 |k|_1, |x|_1 |k|_2): covers the butterflies'
# and the product's roundings (tests/test_correlate.py checks the bound against brute force)
FFT_SAFETY = 16.0
DIRECT_MARGIN = math.log(1e10)  # direct sums this far above the underflow loss are exact to 2e-10 of their value
# a table is quadratic when the fit's largest residual is within this many ulps of its largest entry
# (float32 GaussianPairwise tables, R = 4 to 63, come within 8: tests/test_maxproduct.py)
QUADRATIC_ULPS = 64.0

# Speed and memory only
# direct sums (no FFT) when a loop over taps or output cells has at most this many steps (7 x 7: chosen so that
# small windows skip the FFT's set-up; their result is also exact, so no cell needs recomputing)
DIRECT_MAX_STEPS = 49
CONV_MAX_WINDOW = 1 << 22  # output cells x kernel taps of one map above which a grouped convolution (im2col) gets slower than the loop
CONV_PER_STEP = 40_000  # multiply-adds a grouped convolution does in the time of one Python loop step (measured about 40,000)
LOG_DOMAIN_TAP_COST = 24.0  # a kernel tap summed in the log domain costs this many direct multiply-adds (measured 16-37)
GATHER_BLOCK = 1 << 22  # elements per chunk when windows are gathered cell by cell (bounds the memory of the exact recomputation)
MAX_PLUS_BLOCK = 1 << 24  # elements (maps x H x W x P) of one block of the plain max-plus correlation (bounds its memory at 128 MiB)
