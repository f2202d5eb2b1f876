//! ferrohub-mqtt
