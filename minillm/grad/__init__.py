"""Gradients: a hand-written backward pass (`backward`), one backward per op (`ops_backward`)."""
