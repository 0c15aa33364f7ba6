"""Provider SDK seams: the only modules that call stripe and gocardless_pro."""
