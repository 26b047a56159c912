//! Named, flat model parameters (and gradients of the same layout).
