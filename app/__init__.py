"""Speech emotion recognition service: the audio front-end and the ONNX inference server.

Nothing in this package imports torch or the training package.
"""

__version__ = "0.1.0"
