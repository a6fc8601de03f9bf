print('moe')
