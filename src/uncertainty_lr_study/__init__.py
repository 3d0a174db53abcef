"""The study of ``uncertainty_lr``: does reacting to the model's uncertainty beat the
fixed schedules practitioners use?

Data loaders (MNIST, IMDB, SQuAD v1.1 from the vendored files), models (LeNet-5,
LSTM, MiniLM), the registry of compared schedules with their peers and controls, the
two training backends (a plain loop and Hugging Face ``Trainer``), config loading and
validation, the time budget, and the analysis (aggregate, statistics, figures, LaTeX
tables). Run from this repository (the Snakefile, ``make`` and the notebooks); it
needs the ``pipeline`` extra and is not part of the library's wheel.
"""
