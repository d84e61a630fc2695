"""The SVI path: `runner` (`fit_svi`: NumPyro SVI from an EM warm start, rounds, posterior
draws, WAIC/LOO) and `guides` (autoguide set-up from one model trace). The map between
parameters and the models' sites is `transst_bayes.models.sites`."""
