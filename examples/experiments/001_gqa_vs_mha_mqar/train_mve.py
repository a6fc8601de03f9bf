# MVE recipe (read by the planner, not run): the tiny GPT with GQA on MQAR.
MODEL = dict(family="gpt", d_model=96, n_layers=2, n_heads=4, n_kv_heads=2)
DATA = dict(benchmark="mqar", seq_len=256, params=dict(vocab_size=8192, num_kv_pairs=64))
OPTIM = dict(lr=3e-3, batch_size=64, warmup_steps=100)
BUDGET = dict(max_steps=3000)
