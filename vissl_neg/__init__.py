"""vissl_neg: contrastive pretraining where the negatives are the product."""

__version__ = "0.1.0"
