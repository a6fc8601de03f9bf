# QK-norm MVE (read only).
MODEL = dict(family="gpt", d_model=96, n_layers=2, n_heads=4, qk_norm=True)
OPTIM = dict(lr=1e-2)
