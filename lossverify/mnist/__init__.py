"""The study notes' MNIST experiments, reproducible from the command line.

* :mod:`lossverify.mnist.data`: the data (a Keras ``mnist.npz``, the Keras cache, or
  scikit-learn's digits as an offline default). NumPy only.
* :mod:`lossverify.mnist.models`: the notes' subclassed ``MyModel`` and functional
  ``MyKerasModel``, with a softmax or a logits output.
* :mod:`lossverify.mnist.step`: the training step (eager, ``tf.function`` or XLA, on one
  device or under a ``tf.distribute.MirroredStrategy``).
* :mod:`lossverify.mnist.train`: Experiment 3 (custom loop) and Experiment 4
  (``compile``/``fit``), with checkpoints, resume, history and curves.
* :mod:`lossverify.mnist.plots`: the digit grid and the training curves.
* :mod:`lossverify.mnist.bench`: the benchmark report and roofline estimate.
* :mod:`lossverify.mnist.cli`: ``lossverify train | digits | bench``.

Importing this package loads nothing heavier than NumPy; TensorFlow is imported by the
submodules that need it.
"""
