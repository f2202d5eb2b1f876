//! ferrohub-log
