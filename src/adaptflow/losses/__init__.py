"""The math the seed defines, written out: reconstruction now; KL sparsity, ELBO, MMD, CORAL later."""
