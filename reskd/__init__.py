"""reskd: the package behind the ResKD book (Residual-Guided Knowledge Distillation, Li et al., IEEE TIP 2021).

Modules, one concept each: ``data`` (a package: data set specs, sources, layouts, decoding, integrity checks, the
decoded-image cache, splits, augmentation, the batch loader), ``models`` (architectures by name),
``flops`` (MACs with fvcore), ``registry`` (named definitions), ``metrics`` (top-1, agreement, residual energy),
``distill`` (one class per training objective), ``cache`` (frozen models' outputs), ``runstore`` (run folders, keys
and locks), ``train`` (the training loop), ``reskd`` (the method), ``adaptive`` (early exits), ``profiles`` (every
data set's settings), ``experiment`` (runs by spec), ``studies`` (ablation, growth, baselines), ``cli`` (the job
CLI), ``results`` (the results files), ``report`` (records and verdicts).
"""
__version__ = "0.1.0"
