//! ferrohub-api
