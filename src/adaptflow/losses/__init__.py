"""The math the seed defines, written out: reconstruction, KL sparsity, ELBO, and the domain-
alignment losses (MMD, CORAL, gradient reversal, CDAN conditioning, MCC)."""
