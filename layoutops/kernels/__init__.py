"""Computation on strided views: windowing, plans and the strategies (never imports ops)."""
