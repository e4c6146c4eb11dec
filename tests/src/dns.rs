//! A plain DNS client for the tests (hickory-proto messages over UDP): what a resolver,
//! or Pebble's DNS-01 check, asks the registry's zone.

use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// What the server answered: its response code (e.g. "NoError", "NXDomain"), whether it
/// is authoritative, and each answer record's data as text (addresses; TXT strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: String,
    pub authoritative: bool,
    pub records: Vec<String>,
}

/// Asks `server` (`host:port`) for `name`'s records of `kind` ("A", "AAAA", "TXT", "NS",
/// "SOA").
pub fn lookup(server: &str, name: &str, kind: &str) -> Answer {
    let record_type: RecordType = kind.parse().expect("record type");
    let mut query = Message::query();
    query.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        record_type,
    ));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    socket
        .send_to(&query.to_vec().expect("encode"), server)
        .expect("send");
    let mut buffer = [0u8; 4096];
    let (length, _) = socket.recv_from(&mut buffer).expect("a DNS answer");
    let answer = Message::from_vec(&buffer[..length]).expect("decode");
    Answer {
        code: format!("{:?}", answer.metadata.response_code),
        authoritative: answer.metadata.authoritative,
        records: answer
            .answers
            .iter()
            .filter(|record| record.record_type() == record_type)
            .map(|record| match &record.data {
                RData::A(address) => address.0.to_string(),
                RData::AAAA(address) => address.0.to_string(),
                RData::TXT(text) => text
                    .txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect(),
                other => other.to_string(),
            })
            .collect(),
    }
}
