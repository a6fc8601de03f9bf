print('train 058')
