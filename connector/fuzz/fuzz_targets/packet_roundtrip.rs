//! Fuzz target: whatever parses as an ILPv4 packet must survive a rebuild unchanged.
//!
//! For input bytes that parse, the builders fed with the parsed fields must produce the
//! very same bytes (the codec is strict and canonical), the rebuilt packet must parse to
//! the same fields, and in-place rewrites of `amount` and `expiresAt` with their current
//! values must leave the bytes untouched.
#![no_main]

use bytes::BytesMut;
use connector::packet::{
    Fulfill, FulfillBuilder, Packet, Prepare, PrepareBuilder, Reject, RejectBuilder,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(packet) = Packet::try_from(BytesMut::from(input)) else {
        return;
    };
    assert_eq!(packet.as_bytes(), input, "a parsed packet keeps its bytes");

    let rebuilt = rebuild(&packet);
    assert_eq!(rebuilt.as_bytes(), input, "builders reproduce the parsed bytes");

    let reparsed = Packet::try_from(rebuilt.into_bytes()).expect("rebuilt packet parses");
    assert_same_fields(&packet, &reparsed);
    assert_eq!(reparsed.as_bytes(), input);

    if let Packet::Prepare(mut prepare) = packet {
        prepare.set_amount(prepare.amount());
        prepare.set_expires_at(prepare.expires_at());
        assert_eq!(prepare.as_bytes(), input, "rewriting fields with their values is a no-op");
    }
});

/// Serializes the packet again from its parsed fields, through the builders.
fn rebuild(packet: &Packet) -> Packet {
    match packet {
        Packet::Prepare(prepare) => PrepareBuilder {
            amount: prepare.amount(),
            expires_at: prepare.expires_at(),
            execution_condition: prepare.execution_condition(),
            destination: prepare.destination(),
            data: prepare.data(),
        }
        .build()
        .map(Packet::from),
        Packet::Fulfill(fulfill) => FulfillBuilder {
            fulfillment: fulfill.fulfillment(),
            data: fulfill.data(),
        }
        .build()
        .map(Packet::from),
        Packet::Reject(reject) => RejectBuilder {
            code: reject.code(),
            triggered_by: reject.triggered_by(),
            message: reject.message(),
            data: reject.data(),
        }
        .build()
        .map(Packet::from),
    }
    .expect("fields of a parsed packet are within the builders' limits")
}

/// Asserts that two parses agree on every field.
fn assert_same_fields(first: &Packet, second: &Packet) {
    match (first, second) {
        (Packet::Prepare(a), Packet::Prepare(b)) => same_prepare(a, b),
        (Packet::Fulfill(a), Packet::Fulfill(b)) => same_fulfill(a, b),
        (Packet::Reject(a), Packet::Reject(b)) => same_reject(a, b),
        _ => panic!("packet type changed on rebuild"),
    }
}

fn same_prepare(a: &Prepare, b: &Prepare) {
    assert_eq!(a.amount(), b.amount());
    assert_eq!(a.expires_at(), b.expires_at());
    assert_eq!(a.expires_at_digits(), b.expires_at_digits());
    assert_eq!(a.execution_condition(), b.execution_condition());
    assert_eq!(a.destination(), b.destination());
    assert_eq!(a.data(), b.data());
}

fn same_fulfill(a: &Fulfill, b: &Fulfill) {
    assert_eq!(a.fulfillment(), b.fulfillment());
    assert_eq!(a.data(), b.data());
}

fn same_reject(a: &Reject, b: &Reject) {
    assert_eq!(a.code(), b.code());
    assert_eq!(a.triggered_by(), b.triggered_by());
    assert_eq!(a.message(), b.message());
    assert_eq!(a.data(), b.data());
}
