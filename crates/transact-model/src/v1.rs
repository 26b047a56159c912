//! TransAct V1 (placeholder: being written).
/// The V1 model.
pub struct TransActV1;
/// One request's V1 input.
pub struct V1Request;
