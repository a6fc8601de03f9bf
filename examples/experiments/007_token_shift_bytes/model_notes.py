# x_t <- mix * x_t + (1 - mix) * x_{t-1}, one learned mix per channel.
TOKEN_SHIFT = True
