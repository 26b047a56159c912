//! TransAct V2 block (placeholder: being written).
/// The V2 encoder.
pub struct V2Encoder;
/// One request's V2 input.
pub struct V2Request;
