from adaptflow.registry import Registry

AE_METHODS: Registry = Registry("ae method")
