"""Methods, one file each, grouped by family; each family has its own registry."""
