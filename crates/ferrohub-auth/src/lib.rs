//! ferrohub-auth
