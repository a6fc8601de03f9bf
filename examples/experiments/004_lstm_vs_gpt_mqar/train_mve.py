# LSTM baseline for MQAR (read only): same budget as the GPT it is compared with.
MODEL = dict(family="rnn", d_model=128, n_layers=2)
DATA = dict(benchmark="mqar", seq_len=128, params=dict(num_kv_pairs=32))
