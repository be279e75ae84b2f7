"""The math the seed defines, written out: reconstruction, KL sparsity, ELBO, MMD, CORAL."""
