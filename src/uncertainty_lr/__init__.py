"""uncertainty-lr: learning-rate schedules that react to the model's own uncertainty.

The library depends only on PyTorch (``tests/test_library.py`` checks that importing
any of its modules loads nothing a bare ``import torch`` does not):

>>> from uncertainty_lr import UncertaintyLR, gradient_norm, predictive_variance

Its integrations are optional extras: :mod:`uncertainty_lr.integrations.hf`
(``pip install "uncertainty-lr[hf]"``) and :mod:`uncertainty_lr.integrations.lightning`
(``[lightning]``). The study that tests it (data, models, the training engine, the
registry of schedules it compares, the analysis) is the package
``uncertainty_lr_study`` of the repository, not part of this library.
"""

from uncertainty_lr.scheduler import UncertaintyLR, uncertainty_part
from uncertainty_lr.signals import gradient_norm, predictive_variance

__all__ = [
    "UncertaintyLR",
    "gradient_norm",
    "predictive_variance",
    "uncertainty_part",
]

__version__ = "0.1.0"
