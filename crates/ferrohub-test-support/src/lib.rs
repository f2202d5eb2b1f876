//! ferrohub-test-support
