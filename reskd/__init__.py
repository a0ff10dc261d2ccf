"""reskd: the package behind the ResKD book (Residual-Guided Knowledge Distillation, Li et al., IEEE TIP 2021).

Modules, one concept each: ``data`` (data sets, cache, augmentation, splits), ``models`` (architectures by name),
``flops`` (MACs with fvcore), ``distill`` (one class per training objective), ``cache`` (frozen models' outputs),
``train`` (the training loop).
"""
__version__ = "0.1.0"
