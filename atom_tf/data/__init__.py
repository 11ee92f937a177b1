"""Data: in-distribution datasets, auxiliary outlier pools, augmentation, training pipelines."""

from atom_tf.data.augment import random_crop_flip, seed_for
from atom_tf.data.in_distribution import (
    InDistributionData,
    in_distribution_names,
    load_in_distribution,
    register_in_distribution,
)
from atom_tf.data.outlier_pools import OutlierPool, load_pool, pool_names, register_pool

__all__ = [
    "InDistributionData",
    "OutlierPool",
    "in_distribution_names",
    "load_in_distribution",
    "load_pool",
    "pool_names",
    "random_crop_flip",
    "register_in_distribution",
    "register_pool",
    "seed_for",
]
