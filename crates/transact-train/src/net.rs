//! The whole trainable ranking network: forward, backward and losses over a [`crate::Batch`].
