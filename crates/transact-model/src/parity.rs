//! Parity with the reference module (placeholder: being written).
