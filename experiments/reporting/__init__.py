"""Reports: JSON + markdown (+ PNG charts) in ``reports/``, and the docs generated from them."""
