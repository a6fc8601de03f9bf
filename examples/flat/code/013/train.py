print("013 MVE")
