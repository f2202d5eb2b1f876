//! ferrohub-server
