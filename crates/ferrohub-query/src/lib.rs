//! The IoT Hub query language.
