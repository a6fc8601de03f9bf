# Muon MVE (read only): Newton-Schulz orthogonalised momentum on matrices.
OPTIM = dict(name="muon", lr=0.02, momentum=0.95, adamw_lr=3e-3)
