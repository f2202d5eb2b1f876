//! ferrohub-client
