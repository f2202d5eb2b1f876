//! Integration tests of the codec, the Azure topic grammar and the session state machine,
//! compiled as one binary.

mod mqtt {
    mod azure;
    mod golden;
    mod limits;
    mod oracle;
    mod oracle_rmqtt;
    mod roundtrip;
    mod session;
    mod strategies;
}
