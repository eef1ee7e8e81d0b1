"""The CRF engine's constants, in one place, each with how it was chosen or measured.

Two kinds: the error analysis rests on the first group (changing one changes what is guaranteed);
the others only move work between exact paths (changing one changes speed or memory, never a
result). The speed constants were re-measured for issue 23 with ``benchmarks/crf_constants.py``
(1 thread, this project's shared CPU); rerun it to re-tune them on another machine.
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

# Speed and memory only (measured by benchmarks/crf_constants.py)
# a kernel tap summed in the log domain (gathered cells) costs this many multiply-adds of direct sums (measured 99-137;
# the training loss moves by less than its noise from 64 to 150)
LOG_DOMAIN_TAP_COST = 100.0
GATHER_BLOCK = 1 << 22  # elements per chunk of gathered windows or of the direct sums' banded operands (memory only: 32 MiB)
