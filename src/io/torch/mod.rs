//! PyTorch `torch.save` files (zip archive + pickle), read safely without Python.
