//! Arbitrary bytes as mesher peer traffic: a length-prefixed frame read under each direction's
//! limit, then decoded as a request, a response, a record and an HTTP upload. Nothing may
//! panic, and whatever decodes must survive an encode/decode round trip unchanged.

#![no_main]

use clan_mesher::record::Record;
use clan_mesher::wire::{read_frame, Request, Response, MAX_CONTROL_FRAME, MAX_RESPONSE_FRAME};
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for limit in [MAX_CONTROL_FRAME, MAX_RESPONSE_FRAME] {
        let mut input = data;
        if let Ok(payload) = block_on(read_frame(&mut input, limit)) {
            assert!(payload.len() <= limit);
            assert_eq!(payload.len() + 4, data.len() - input.len());
        }
    }
    if let Ok(request) = Request::decode(data) {
        assert_eq!(Request::decode(&request.encode()), Ok(request));
    }
    if let Ok(response) = Response::decode(data) {
        assert_eq!(response.wire_len(), 4 + response.encode().len());
        assert_eq!(Response::decode(&response.encode()), Ok(response));
    }
    if let Ok(record) = Record::from_bytes(data) {
        assert_eq!(Record::from_bytes(&record.to_bytes()), Ok(record));
    }
    if let Ok((record, content)) = clan_mesher::http::decode_upload(data) {
        let again = clan_mesher::http::encode_upload(&record, &content);
        assert_eq!(clan_mesher::http::decode_upload(&again), Ok((record, content)));
    }
});
