//! Every layer of the model, forward and backward side by side.
