//! The TransAct ranking API (work in progress).
