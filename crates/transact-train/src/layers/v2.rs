//! The TransAct V2 encoder block (one head, no biases, no output projection,
//! LayerNorm without affine, causal and padding masks). Not implemented yet.
