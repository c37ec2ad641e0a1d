//! Generated code (placeholder until the proto helper lands).
