"""The EM path: pure kernels over NamedTuple state and the driver that compiles them.

`source` (step 1: the factor model of the labeled source), `loadings` (step 2: target loadings
shrunk toward the source's), `cluster` (step 3: domains under the Potts prior), `loop` (the
compiled `lax.while_loop` over a step), `driver` (`fit_em`: the only place they are jitted).
"""
