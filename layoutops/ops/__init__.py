"""The public ops: argument normalization, layout resolution, dispatch to the kernels."""
