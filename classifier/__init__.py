"""Emotion classification: the mini-Xception model, its training and the batched classifier stage.

Importing this package loads no TensorFlow; only the modules that need it do.
"""
