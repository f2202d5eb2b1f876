//! Integration tests of the codec and the Azure topic grammar, compiled as one binary.

mod mqtt {
    mod azure;
    mod golden;
    mod limits;
    mod oracle;
    mod oracle_rmqtt;
    mod roundtrip;
    mod strategies;
}
