//! Property tests of the engine: input chunking does not matter, and arbitrary input with
//! arbitrary answers never breaks its invariants.

use bytes::Bytes;
use ferrohub_amqp::connection::{AttachReply, ConnectionConfig, Event};
use ferrohub_amqp::frame::AMQP_HEADER;
use ferrohub_amqp::performative::{DeliveryState, Performative, Role, Transfer};
use proptest::collection::vec;
use proptest::prelude::*;

use super::harness::{Harness, attach, begin, credit, frame, frame_with, open, opened, transfer};

/// A client's whole conversation up to deliveries, as one byte string: header, OPEN, BEGIN,
/// a sending and a receiving link, credit, and a single- and a multi-frame transfer.
fn conversation() -> Vec<u8> {
    let mut bytes = AMQP_HEADER.to_vec();
    bytes.extend(frame(0, open("client")));
    bytes.extend(frame(0, begin()));
    bytes.extend(frame(
        0,
        attach("tx", 0, Role::Sender, "c", "/devices/d1/messages/events"),
    ));
    bytes.extend(frame(
        0,
        attach(
            "rx",
            1,
            Role::Receiver,
            "/devices/d1/messages/devicebound",
            "c",
        ),
    ));
    bytes.extend(frame(0, credit(1, 0, 10)));
    bytes
}

fn deliveries() -> Vec<u8> {
    let mut bytes = frame_with(0, transfer(0, 0, false), b"one");
    let Performative::Transfer(mut first) = transfer(0, 1, false) else {
        unreachable!()
    };
    first.more = true;
    bytes.extend(frame_with(0, Performative::Transfer(first), b"tw"));
    bytes.extend(frame_with(
        0,
        Performative::Transfer(Transfer {
            handle: 0,
            ..Transfer::default()
        }),
        b"o",
    ));
    bytes
}

/// Feeds `bytes` split at `cuts`, answering attaches as they come; appends the output bytes
/// and the events.
fn feed(
    h: &mut Harness,
    bytes: &[u8],
    cuts: &[usize],
    output: &mut Vec<u8>,
    events: &mut Vec<Event>,
) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let mut start = 0;
    for cut in cuts {
        h.input(0, &bytes[start..cut]);
        start = cut;
        loop {
            let mut answered = false;
            for event in h.events() {
                if let Event::Attach { link, .. } = &event {
                    h.conn.accept_attach(*link, AttachReply::default());
                    answered = true;
                }
                events.push(event);
            }
            output.extend(h.raw_output());
            if !answered {
                break;
            }
            h.resume(0);
        }
    }
}

/// Runs the conversation, then the deliveries (a client sends them once it has credit), each
/// split at its cuts.
fn run(cuts: &[usize], delivery_cuts: &[usize]) -> (Vec<u8>, Vec<Event>) {
    let mut h = Harness::new(ConnectionConfig::default());
    let (mut output, mut events) = (Vec::new(), Vec::new());
    feed(&mut h, &conversation(), cuts, &mut output, &mut events);
    feed(
        &mut h,
        &deliveries(),
        delivery_cuts,
        &mut output,
        &mut events,
    );
    (output, events)
}

proptest! {
    #[test]
    fn chunking_does_not_matter(
        cuts in vec(any::<usize>(), 0..12),
        delivery_cuts in vec(any::<usize>(), 0..8),
    ) {
        let (output, events) = run(&cuts, &delivery_cuts);
        let (whole_output, whole_events) = run(&[], &[]);
        prop_assert_eq!(output, whole_output);
        prop_assert_eq!(events.len(), 6);
        prop_assert_eq!(events, whole_events);
    }

    #[test]
    fn arbitrary_input_and_answers_keep_the_invariants(
        steps in vec((vec(any::<u8>(), 0..48), any::<u8>()), 0..24),
    ) {
        let mut h = opened(ConnectionConfig {
            max_unsettled_incoming: 4,
            max_pending_attaches: 2,
            ..ConnectionConfig::default()
        });
        let mut links = Vec::new();
        let mut deliveries = Vec::new();
        let mut closed = false;
        for (i, (bytes, answer)) in steps.into_iter().enumerate() {
            // Mostly valid frames, sometimes the raw bytes.
            let input = match answer % 4 {
                0 => bytes,
                1 => frame(0, attach(&format!("l{i}"), u32::from(answer % 3), Role::Sender, "c", "t")),
                2 => frame_with(0, transfer(u32::from(answer % 3), i as u32, answer & 8 != 0), &bytes),
                _ => frame(0, credit(u32::from(answer % 3), 0, u32::from(answer))),
            };
            h.input(i as u64, &input);
            match answer % 5 {
                0 => if let Some(link) = links.first() {
                    let _ = h.conn.send(*link, Bytes::new(), answer & 1 == 0, 0, Bytes::from(bytes_of(answer)));
                },
                1 => if let Some((link, id)) = deliveries.pop() {
                    h.conn.settle(link, id, DeliveryState::Accepted);
                },
                2 => h.timeout(i as u64 * 1000),
                _ => {}
            }
            // Every byte written decodes (the harness panics otherwise).
            let _ = h.output();
            for event in h.events() {
                prop_assert!(!closed, "event after Closed: {:?}", event);
                match event {
                    Event::Attach { link, .. } if answer & 16 == 0 => {
                        h.conn.accept_attach(link, AttachReply::default());
                        links.push(link);
                    }
                    Event::Delivery { link, delivery_id, .. } => deliveries.push((link, delivery_id)),
                    Event::Closed { .. } => closed = true,
                    _ => {}
                }
            }
            let _ = h.output();
            prop_assert_eq!(closed, h.conn.is_closed());
            if closed {
                prop_assert!(!h.conn.wants_read());
                prop_assert_eq!(h.conn.poll_timeout(), None);
            }
        }
    }
}

fn bytes_of(n: u8) -> Vec<u8> {
    vec![n; usize::from(n) * 20]
}
