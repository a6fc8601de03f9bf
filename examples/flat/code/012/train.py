print("012 MVE")
