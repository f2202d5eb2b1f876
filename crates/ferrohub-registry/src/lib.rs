//! ferrohub-registry
