//! Twin documents.
