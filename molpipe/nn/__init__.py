"""Stages of the network (parameters + forward/backward over kernels), losses, optimizers."""
