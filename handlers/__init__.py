"""TorchServe handlers: thin adapters from TorchServe's request list to `digitlab`'s functions."""
